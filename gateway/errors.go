package gateway

import (
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"path"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/wirejson"
	"github.com/imbridge/imbridge/server"
)

// fail answers a request the bridge could not take, in the vendor's format (for OpenIM, see
// server.OpenIMErrorAnswer). Tencent treats a non-200 status as a failed callback.
//
// command is the callback's command once the caller passed the checks, "" before: it is logged, and
// the path it would come from may still hold OpenIM's path secret. The OpenIM answer's shape
// follows the path's last segment all the same (the answer goes back to whoever sent the path).
//
// A callback's failure is logged with its access line (server.Server.Record), from the message kept
// here; a request for no callback route at debug.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, v vendor, command string, httpStatus int, msg string) {
	if aw, ok := w.(*answerWriter); ok {
		aw.err = msg
	} else {
		h.opts.Logger.Debug("request refused", "path_vendor", v.String(), "command", command, "remote", r.RemoteAddr, "status", httpStatus, "err", msg)
	}
	var body []byte
	switch v {
	case vendorOpenIM:
		var reqBody []byte
		if ci := server.CallInfoFrom(r.Context()); ci != nil {
			reqBody = ci.Body
		}
		body, _ = wirejson.Marshal(server.OpenIMErrorAnswer(cmp.Or(command, path.Base(cleanPath(r.URL.Path))), reqBody, int32(httpStatus), msg))
	case vendorTencent:
		body, _ = wirejson.Marshal(&pb.TencentCallbackResponse{ActionStatus: "FAIL", ErrorCode: int32(httpStatus), ErrorInfo: msg})
	default:
		s, _ := marshalJSONString(msg)
		body = append(append([]byte(`{"error":`), s...), '}')
	}
	writeJSON(w, httpStatus, body)
}

// rpcError is the mux's error handler: a decode error or an error a service returned.
func (h *Handler) rpcError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	s := status.Convert(err)
	httpStatus := server.HTTPStatus(s.Code())
	h.fail(w, r, vendorOf(r.URL.Path), path.Base(r.URL.Path), httpStatus, s.Message()) // the path as rewritten: /openim/{command}
}

// routingError is the mux's handler for paths and methods it has no route for.
func (h *Handler) routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	h.fail(w, r, vendorOf(r.URL.Path), path.Base(r.URL.Path), httpStatus, http.StatusText(httpStatus))
}

func vendorOf(path string) vendor {
	switch {
	case strings.HasPrefix(path, "/openim/"):
		return vendorOpenIM
	case strings.HasPrefix(path, "/tencent/"):
		return vendorTencent
	}
	return vendorNone
}

func marshalJSONString(s string) ([]byte, error) { return json.Marshal(s) }
