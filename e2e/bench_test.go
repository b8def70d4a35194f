package e2e

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/imbridge/imbridge/examples"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// BenchmarkAfterCallback is one after-callback through the gateway, without a connection: decoding,
// the canonical event, the log's acknowledged write and the answer. Parallel callers share log
// records as they would under load (group commit); -cpu sets how many. make bench measures the
// whole bridge over HTTP; this is for comparing changes to the in-process path.
func BenchmarkAfterCallback(b *testing.B) {
	br := bridgetest.Start(b, bridgetest.Options{})
	ex := examples.Must("openim-after-set-group-info-ex")
	header := http.Header{"Content-Type": {"application/json; charset=utf-8"}, "Operationid": {"bench"}}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req, err := http.NewRequest(http.MethodPost, "/openim/"+ex.Command, bytes.NewReader(ex.Body))
			if err != nil {
				b.Fatal(err)
			}
			req.Header = header // read only, shared by the callers
			w := httptest.NewRecorder()
			br.Handler.ServeHTTP(w, req)
			if w.Code != http.StatusOK || w.Body.String() != openimOK {
				b.Fatalf("answer %d %s", w.Code, w.Body)
			}
		}
	})
}
