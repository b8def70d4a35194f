package gateway

import (
	"fmt"
	"io"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/protobuf/proto"

	"github.com/imbridge/imbridge/internal/wirejson"
)

// vendorMarshaler reads callbacks the way IM servers write them (wirejson's lenient rules: bare or
// {"value": x} wrapped fields, numbers as strings, unknown fields ignored) and writes answers in the
// exact vendor shape (every field present, numbers as numbers).
type vendorMarshaler struct{}

func (vendorMarshaler) ContentType(any) string { return "application/json" }

func (vendorMarshaler) Marshal(v any) ([]byte, error) {
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("marshal %T: not a proto message", v)
	}
	return wirejson.Marshal(m)
}

func (vendorMarshaler) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("unmarshal into %T: not a proto message", v)
	}
	return wirejson.Unmarshal(data, m)
}

func (m vendorMarshaler) NewDecoder(r io.Reader) runtime.Decoder {
	return runtime.DecoderFunc(func(v any) error {
		var data []byte
		if br, ok := r.(*bodyReader); ok {
			data = br.b[br.off:]
			br.off = len(br.b)
		} else {
			var err error
			if data, err = io.ReadAll(r); err != nil {
				return err
			}
		}
		return m.Unmarshal(data, v)
	})
}

func (m vendorMarshaler) NewEncoder(w io.Writer) runtime.Encoder {
	return runtime.EncoderFunc(func(v any) error {
		b, err := m.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	})
}
