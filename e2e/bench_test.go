package e2e

import (
	"bytes"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/imbridge/imbridge/auth"
	"github.com/imbridge/imbridge/examples"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// BenchmarkAfterCallback is one after-callback through the gateway, without a connection: decoding,
// the canonical event, the log's acknowledged write and the answer. Parallel callers share log
// records as they would under load (group commit); -cpu sets how many. make bench measures the
// whole bridge over HTTP; this is for comparing changes to the in-process path. "auth" is the same
// callback from an OpenIM with Basic credentials and a path secret.
func BenchmarkAfterCallback(b *testing.B) {
	ex := examples.Must("openim-after-set-group-info-ex")
	b.Run("open", func(b *testing.B) {
		br := bridgetest.Start(b, bridgetest.Options{})
		header := http.Header{"Content-Type": {"application/json; charset=utf-8"}, "Operationid": {"bench"}}
		benchCallback(b, br, "/openim/"+ex.Command, header, ex.Body)
	})
	b.Run("auth", func(b *testing.B) {
		br := bridgetest.Start(b, bridgetest.Options{Auth: auth.Config{Callers: auth.Callers{OpenIM: auth.OpenIMCaller{
			BasicUser: "imbridge", BasicPasswordSHA256: auth.HashSecret("s3cret"), PathSecretSHA256: auth.HashSecret("p4th"),
		}}}})
		header := http.Header{
			"Content-Type":  {"application/json; charset=utf-8"},
			"Operationid":   {"bench"},
			"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("imbridge:s3cret"))},
		}
		benchCallback(b, br, "/openim/p4th/"+ex.Command, header, ex.Body)
	})
}

func benchCallback(b *testing.B, br *bridgetest.Bridge, path string, header http.Header, body []byte) {
	b.ReportAllocs()
	b.ResetTimer()
	var ops atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodPost, path, bytes.NewReader(body))
			if err != nil {
				b.Fatal(err)
			}
			req.Header = header.Clone()
			// A callback of its own: the same operationID and body again would be a retry (dedup).
			req.Header.Set("Operationid", "bench-"+strconv.FormatUint(ops.Add(1), 10))
			req.RemoteAddr = "10.0.0.1:1234"
			w := httptest.NewRecorder()
			br.Handler.ServeHTTP(w, req)
			if w.Code != http.StatusOK || w.Body.String() != openimOK {
				b.Fatalf("answer %d %s", w.Code, w.Body)
			}
		}
	})
}
