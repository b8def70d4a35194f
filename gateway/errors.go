package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/status"

	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/wirejson"
	"github.com/imbridge/imbridge/server"
)

// fail answers a request the bridge could not take, in the vendor's format. OpenIM goes ahead with
// the user's action on any actionCode other than 0, and Tencent treats a non-200 status as a failed
// callback, so an error never refuses an action by accident.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, v vendor, httpStatus int, msg string) {
	if httpStatus >= 500 {
		h.opts.Logger.Warn("callback failed", "path", r.URL.Path, "status", httpStatus, "err", msg)
	} else {
		h.opts.Logger.Info("callback rejected", "path", r.URL.Path, "status", httpStatus, "err", msg)
	}
	var body []byte
	switch v {
	case vendorOpenIM:
		var reqBody []byte
		if ci := server.CallInfoFrom(r.Context()); ci != nil {
			reqBody = ci.Body
		}
		body = openimError(strings.TrimPrefix(cleanPath(r.URL.Path), "/openim/"), reqBody, httpStatus, msg)
	case vendorTencent:
		body, _ = wirejson.Marshal(&pb.TencentCallbackResponse{ActionStatus: "FAIL", ErrorCode: int32(httpStatus), ErrorInfo: msg})
	default:
		s, _ := marshalJSONString(msg)
		body = append(append([]byte(`{"error":`), s...), '}')
	}
	writeJSON(w, httpStatus, body)
}

// openimError is OpenIM's error answer: actionCode 1, so that OpenIM goes ahead rather than
// blocking the user on a bridge problem. The two before-set-group-info callbacks are the exception
// (protocol/openim.md): OpenIM copies the answer's group fields over the change even then, so the
// answer echoes the request's fields; with no group id to echo, the change would fail anyway, and
// the answer refuses it with the error instead.
func openimError(command string, reqBody []byte, httpStatus int, msg string) []byte {
	code := int32(httpStatus)
	var body []byte
	switch command {
	case "callbackBeforeSetGroupInfoExCommand":
		var req pb.OpenIMSetGroupInfoExRequest
		if wirejson.Unmarshal(reqBody, &req) != nil {
			req.Reset() // never echo a partly decoded change
		}
		resp := &pb.OpenIMSetGroupInfoExResponse{ActionCode: 1, ErrCode: code, ErrMsg: msg,
			GroupId: req.GroupId, GroupName: req.GroupName, Notification: req.Notification, Introduction: req.Introduction,
			FaceUrl: req.FaceUrl, Ex: req.Ex, NeedVerification: req.NeedVerification, LookMemberInfo: req.LookMemberInfo,
			ApplyMemberFriend: req.ApplyMemberFriend}
		if req.GroupId == "" {
			resp = &pb.OpenIMSetGroupInfoExResponse{ErrCode: code, ErrMsg: msg, NextCode: 1}
		}
		body, _ = wirejson.Marshal(resp)
	case "callbackBeforeSetGroupInfoCommand":
		var req pb.OpenIMSetGroupInfoRequest
		if wirejson.Unmarshal(reqBody, &req) != nil {
			req.Reset() // never echo a partly decoded change
		}
		resp := &pb.OpenIMSetGroupInfoResponse{ActionCode: 1, ErrCode: code, ErrMsg: msg,
			GroupId: req.GroupId, GroupName: req.GroupName, Notification: req.Notification, Introduction: req.Introduction,
			FaceUrl: req.FaceUrl, Ex: req.Ex, NeedVerification: req.NeedVerification, LookMemberInfo: req.LookMemberInfo,
			ApplyMemberFriend: req.ApplyMemberFriend}
		if req.GroupId == "" {
			resp = &pb.OpenIMSetGroupInfoResponse{ErrCode: code, ErrMsg: msg, NextCode: 1}
		}
		body, _ = wirejson.Marshal(resp)
	default:
		body, _ = wirejson.Marshal(&pb.OpenIMCallbackResponse{ActionCode: 1, ErrCode: code, ErrMsg: msg})
	}
	return body
}

// rpcError is the mux's error handler: a decode error or an error a service returned.
func (h *Handler) rpcError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, err error) {
	s := status.Convert(err)
	h.fail(w, r, vendorOf(r.URL.Path), runtime.HTTPStatusFromCode(s.Code()), s.Message())
}

// routingError is the mux's handler for paths and methods it has no route for.
func (h *Handler) routingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	h.fail(w, r, vendorOf(r.URL.Path), httpStatus, http.StatusText(httpStatus))
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
