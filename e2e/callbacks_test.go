package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"

	"github.com/imbridge/imbridge/examples"
	pb "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

const (
	openimOK  = `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`
	tencentOK = `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`
	tencentQS = "?SdkAppid=1400000000&CallbackCommand=%s&contenttype=json&ClientIP=10.0.0.7&OptPlatform=iOS&RequestID=6d4f1b8e-1c1a-4a55-9b1e-3c2a9f0e1d2c"
)

func ptr[T any](v T) *T { return &v }

// postExample posts an example the way its IM server would.
func postExample(t *testing.T, b *bridgetest.Bridge, ex examples.Example) (int, []byte) {
	t.Helper()
	h := http.Header{"Content-Type": {"application/json; charset=utf-8"}}
	if ex.Vendor == examples.OpenIM {
		h.Set("operationID", "op-"+ex.Name)
		return b.Post(t, http.MethodPost, "/openim/"+ex.Command, h, ex.Body)
	}
	return b.Post(t, http.MethodPost, "/tencent"+fmt.Sprintf(tencentQS, ex.Command), h, ex.Body)
}

// TestSeedCallbacks: each seed's example and the real servers' forms, posted over HTTP, reach a gRPC
// subscriber as the right typed event, and the IM server gets its vendor's answer.
func TestSeedCallbacks(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		example string
		answer  string
		want    *pb.Event // the fields checked: source, command, phase, kind, payload
	}{
		{
			name: "seed 000 documented form", example: "openim-after-set-group-info-ex-documented", answer: openimOK,
			want: &pb.Event{Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterSetGroupInfoExCommand", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED,
				Payload: &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{
					GroupId: "G002", Name: ptr("NewGroupName"), Notification: ptr("Updated group notification"),
					Introduction: ptr("Updated group introduction"), FaceUrl: ptr("http://example.com/new/path/to/face/image.png"),
					Ex: ptr("Updated extra data"), NeedVerification: ptr(int32(0)), LookMemberInfo: ptr(int32(1)), ApplyMemberFriend: ptr(int32(0)),
				}}},
		},
		{
			name: "seed 000 real server form", example: "openim-after-set-group-info-ex", answer: openimOK,
			want: &pb.Event{Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterSetGroupInfoExCommand", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED,
				Payload: &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{
					GroupId: "G002", Name: ptr("New <Group> & Co"), Notification: ptr("Updated group notification"),
					Ex: ptr(""), NeedVerification: ptr(int32(0)),
				}}},
		},
		{
			name: "seed 002 quit", example: "openim-after-quit-group", answer: openimOK,
			want: &pb.Event{Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterQuitGroupCommand", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT,
				Payload: &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{
					GroupId: "G001", UserIds: []string{"user123"}, Reason: pb.QuitReason_QUIT_REASON_QUIT,
				}}},
		},
		{
			name: "openim kick", example: "openim-after-kick-group", answer: openimOK,
			want: &pb.Event{Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterKickGroupCommand", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT,
				Payload: &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{
					GroupId: "G001", UserIds: []string{"user123", "user456"}, Reason: pb.QuitReason_QUIT_REASON_KICKED, KickReason: "spam",
				}}},
		},
		{
			name: "openim set group info, empty means unchanged", example: "openim-after-set-group-info", answer: openimOK,
			want: &pb.Event{Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterSetGroupInfoCommand", Phase: pb.Phase_PHASE_AFTER,
				Kind:    pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED,
				Payload: &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{GroupId: "G003", Name: ptr("Renamed")}}},
		},
		{
			name: "seed 001 tencent group info changed", example: "tencent-after-group-info-changed", answer: tencentOK,
			want: &pb.Event{Source: pb.Source_SOURCE_TENCENT, Command: "Group.CallbackAfterGroupInfoChanged", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_GROUP_INFO_CHANGED,
				Payload: &pb.Event_GroupInfoChanged{GroupInfoChanged: &pb.GroupInfoChanged{
					GroupId: "@TGS#2J4SZEAEL", GroupType: "Public", OperatorUserId: ptr("leckie"),
					Name: ptr("NewGroupName"), Introduction: ptr("NewIntroduction"), Notification: ptr("NewNotification"), FaceUrl: ptr("NewFaceUrl"),
					UserDefinedData: []*pb.KeyValue{
						{Key: "UserDefinedKey1", Value: "UserDefinedValue1"},
						{Key: "UserDefinedKey2", Value: "UserDefinedValue2"},
						{Key: "UserDefinedKey3", Value: "UserDefinedValue3"},
					},
				}}},
		},
		{
			name: "tencent member kicked", example: "tencent-after-member-exit", answer: tencentOK,
			want: &pb.Event{Source: pb.Source_SOURCE_TENCENT, Command: "Group.CallbackAfterMemberExit", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_MEMBER_QUIT,
				Payload: &pb.Event_MemberQuit{MemberQuit: &pb.MemberQuit{
					GroupId: "@TGS#2J4SZEAEL", GroupType: "Public", UserIds: []string{"jared", "tommy"},
					Reason: pb.QuitReason_QUIT_REASON_KICKED, OperatorUserId: ptr("leckie"),
				}}},
		},
		{
			name: "openim command without a typed payload", example: "openim-after-transfer-group-owner", answer: openimOK,
			want: &pb.Event{Source: pb.Source_SOURCE_OPENIM, Command: "callbackAfterTransferGroupOwnerCommand", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_RAW},
		},
		{
			name: "tencent command without a typed payload", example: "tencent-after-new-member-join", answer: tencentOK,
			want: &pb.Event{Source: pb.Source_SOURCE_TENCENT, Command: "Group.CallbackAfterNewMemberJoin", Phase: pb.Phase_PHASE_AFTER,
				Kind: pb.EventKind_EVENT_KIND_RAW},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b := bridgetest.Start(t, bridgetest.Options{})
			sub := b.Subscribe(t, &pb.Subscription{Group: "svc"})
			ex := examples.Must(tt.example)
			status, answer := postExample(t, b, ex)
			if status != http.StatusOK || string(answer) != tt.answer {
				t.Fatalf("answer %d %s; want 200 %s", status, answer, tt.answer)
			}
			got := sub.Next()
			sub.Ack(got.Id)
			if got.Id == "" || got.Sequence != 1 || got.ReceivedTime == nil {
				t.Errorf("id %q, sequence %d, received %v; want all set", got.Id, got.Sequence, got.ReceivedTime)
			}
			if string(got.RawBody) != string(ex.Body) {
				t.Errorf("raw body %q; want %q", got.RawBody, ex.Body)
			}
			trimmed := proto.Clone(got).(*pb.Event)
			trimmed.Id, trimmed.Sequence, trimmed.ReceivedTime, trimmed.RawBody, trimmed.Metadata = "", 0, nil, nil, nil
			if diff := cmp.Diff(tt.want, trimmed, protocmp.Transform()); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
			md := got.GetMetadata()
			if ex.Vendor == examples.OpenIM && md.GetOperationId() != "op-"+ex.Name {
				t.Errorf("operation id %q; want %q", md.GetOperationId(), "op-"+ex.Name)
			}
			if ex.Vendor == examples.Tencent {
				want := &pb.RequestMetadata{SdkAppId: "1400000000", ClientIp: "10.0.0.7", Platform: "iOS",
					RequestId: "6d4f1b8e-1c1a-4a55-9b1e-3c2a9f0e1d2c", RemoteAddr: md.GetRemoteAddr()}
				if !proto.Equal(md, want) || md.GetRemoteAddr() == "" {
					t.Errorf("metadata %v; want %v", md, want)
				}
			}
		})
	}
}

// TestOpenIMFormsAgree: the documented wrapped form and the real server's bare form of the same change
// decode to the same event.
func TestOpenIMFormsAgree(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{Group: "svc"})
	real := []byte(`{"callbackCommand":"callbackAfterSetGroupInfoExCommand","operationID":"","groupID":"G002","groupName":"NewGroupName","notification":"Updated group notification","introduction":"Updated group introduction","faceURL":"http://example.com/new/path/to/face/image.png","ex":"Updated extra data","needVerification":0,"lookMemberInfo":1,"applyMemberFriend":0}` + "\n")
	for _, body := range [][]byte{examples.Must("openim-after-set-group-info-ex-documented").Body, real} {
		if status, answer := b.Post(t, http.MethodPost, "/openim/callbackAfterSetGroupInfoExCommand", nil, body); status != http.StatusOK {
			t.Fatalf("answer %d %s", status, answer)
		}
	}
	a, c := sub.Next(), sub.Next()
	if !proto.Equal(a.GetGroupInfoChanged(), c.GetGroupInfoChanged()) {
		t.Errorf("documented form %v; real form %v; want equal", a.GetGroupInfoChanged(), c.GetGroupInfoChanged())
	}
}

// TestOpenIMWireQuirks: what the real server does to the URL and headers.
func TestOpenIMWireQuirks(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{})
	body := examples.Must("openim-after-quit-group").Body
	for i, path := range []string{
		"/openim//callbackAfterQuitGroupCommand",                       // url configured with a trailing slash
		"/openim/callbackAfterQuitGroupCommand?contenttype=json",       // the documented query
		"/openim/callbackAfterQuitGroupCommand?key=eyJhIjoxfQ%3D%3D&x", // other query parameters
	} {
		// Each a callback of its own (the same operationID and body again would be a retry).
		op := "abc" + strconv.Itoa(i)
		h := http.Header{"Operationid": {op}}
		status, answer := b.Post(t, http.MethodPost, path, h, body)
		if status != http.StatusOK || string(answer) != openimOK {
			t.Fatalf("%s: %d %s; want 200 %s", path, status, answer, openimOK)
		}
		ev := sub.Next()
		if ev.GetMemberQuit().GetGroupId() != "G001" || ev.GetMetadata().GetOperationId() != op {
			t.Errorf("%s: event %v; want member quit of G001 with operation id %s", path, ev, op)
		}
	}
}

// TestTencentDispatch: the command comes from the query string; EventTime may be a string; unknown
// fields and parameters are accepted; the body's Content-Type does not matter.
func TestTencentDispatch(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	sub := b.Subscribe(t, &pb.Subscription{})
	body := []byte(`{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"g","Type":"Private","ExitType":"Quit","Operator_Account":"amy","ExitMemberList":[{"Member_Account":"amy","Extra":1}],"EventTime":"1670574414123","NewField":{"a":[1,2]}}`)
	status, answer := b.Post(t, http.MethodPost, "/tencent"+fmt.Sprintf(tencentQS, "Group.CallbackAfterMemberExit")+"&Unknown=1", http.Header{"Content-Type": {"text/plain"}}, body)
	if status != http.StatusOK || string(answer) != tencentOK {
		t.Fatalf("answer %d %s; want 200 %s", status, answer, tencentOK)
	}
	mq := sub.Next().GetMemberQuit()
	want := &pb.MemberQuit{GroupId: "g", GroupType: "Private", UserIds: []string{"amy"}, Reason: pb.QuitReason_QUIT_REASON_QUIT, OperatorUserId: ptr("amy")}
	if !proto.Equal(mq, want) {
		t.Errorf("member quit %v; want %v", mq, want)
	}

	status, answer = b.Post(t, http.MethodPost, "/tencent?SdkAppid=1", nil, body)
	assertTencentError(t, status, answer, http.StatusBadRequest)
}

// assertOpenIMError checks an error answer is OpenIM's five fields, with numbers as numbers.
func assertOpenIMError(t *testing.T, status int, body []byte, wantStatus int) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status %d; want %d (body %s)", status, wantStatus, body)
	}
	var got struct {
		ActionCode *int    `json:"actionCode"`
		ErrCode    *int    `json:"errCode"`
		ErrMsg     *string `json:"errMsg"`
		ErrDlt     *string `json:"errDlt"`
		NextCode   *int    `json:"nextCode"`
	}
	if err := json.Unmarshal(body, &got); err != nil || got.ActionCode == nil || got.ErrCode == nil || got.ErrMsg == nil || got.ErrDlt == nil || got.NextCode == nil {
		t.Fatalf("body %s: not OpenIM's answer (%v)", body, err)
	}
	// actionCode != 0 tells OpenIM the callback failed, and it goes ahead: an error never refuses.
	if *got.ActionCode == 0 || *got.NextCode != 0 || *got.ErrCode != wantStatus || *got.ErrMsg == "" {
		t.Errorf("body %s: want actionCode 1, nextCode 0, errCode %d and a message", body, wantStatus)
	}
}

func assertTencentError(t *testing.T, status int, body []byte, wantStatus int) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("status %d; want %d (body %s)", status, wantStatus, body)
	}
	var got struct {
		ActionStatus *string `json:"ActionStatus"`
		ErrorInfo    *string `json:"ErrorInfo"`
		ErrorCode    *int    `json:"ErrorCode"`
	}
	if err := json.Unmarshal(body, &got); err != nil || got.ActionStatus == nil || got.ErrorInfo == nil || got.ErrorCode == nil {
		t.Fatalf("body %s: not Tencent's answer (%v)", body, err)
	}
	if *got.ActionStatus != "FAIL" || *got.ErrorCode != wantStatus || *got.ErrorInfo == "" {
		t.Errorf("body %s: want FAIL, ErrorCode %d and a message", body, wantStatus)
	}
}

// TestBadRequests: malformed JSON, wrong method, unknown path and oversized body get vendor-format
// errors, and the bridge keeps working.
func TestBadRequests(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	quit := examples.Must("openim-after-quit-group").Body
	big := make([]byte, 2<<20)
	for i := range big {
		big[i] = ' '
	}
	big[0] = '{'
	big[len(big)-1] = '}'
	openim := []struct {
		name   string
		method string
		path   string
		body   []byte
		status int
	}{
		{"malformed json", http.MethodPost, "/openim/callbackAfterQuitGroupCommand", []byte(`{"groupID":"G001",`), http.StatusBadRequest},
		{"not an object", http.MethodPost, "/openim/callbackAfterQuitGroupCommand", []byte(`["G001"]`), http.StatusBadRequest},
		{"wrong type", http.MethodPost, "/openim/callbackAfterQuitGroupCommand", []byte(`{"groupID":["G001"]}`), http.StatusBadRequest},
		{"empty body", http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, http.StatusBadRequest},
		{"missing group", http.MethodPost, "/openim/callbackAfterQuitGroupCommand", []byte(`{"userID":"u"}`), http.StatusBadRequest},
		{"malformed untyped", http.MethodPost, "/openim/callbackAfterCreateGroupCommand", []byte(`{oops}`), http.StatusBadRequest},
		{"wrong method", http.MethodGet, "/openim/callbackAfterQuitGroupCommand", nil, http.StatusMethodNotAllowed},
		{"no command", http.MethodPost, "/openim", quit, http.StatusNotFound},
		{"extra segment", http.MethodPost, "/openim/a/b", quit, http.StatusNotFound},
		{"oversized", http.MethodPost, "/openim/callbackAfterQuitGroupCommand", big, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range openim {
		t.Run("openim "+tt.name, func(t *testing.T) {
			status, body := b.Post(t, tt.method, tt.path, nil, tt.body)
			assertOpenIMError(t, status, body, tt.status)
		})
	}
	tencent := []struct {
		name   string
		method string
		query  string
		body   []byte
		status int
	}{
		{"malformed json", http.MethodPost, fmt.Sprintf(tencentQS, "Group.CallbackAfterMemberExit"), []byte(`{"GroupId":`), http.StatusBadRequest},
		{"malformed untyped", http.MethodPost, fmt.Sprintf(tencentQS, "Group.CallbackAfterNewMemberJoin"), []byte(`nope`), http.StatusBadRequest},
		{"wrong method", http.MethodPut, fmt.Sprintf(tencentQS, "Group.CallbackAfterMemberExit"), nil, http.StatusMethodNotAllowed},
		{"oversized", http.MethodPost, fmt.Sprintf(tencentQS, "Group.CallbackAfterMemberExit"), big, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tencent {
		t.Run("tencent "+tt.name, func(t *testing.T) {
			status, body := b.Post(t, tt.method, "/tencent"+tt.query, nil, tt.body)
			assertTencentError(t, status, body, tt.status)
		})
	}
	t.Run("unknown path", func(t *testing.T) {
		status, body := b.Post(t, http.MethodPost, "/callback", nil, quit)
		var got map[string]string
		if status != http.StatusNotFound || json.Unmarshal(body, &got) != nil || got["error"] == "" {
			t.Errorf("%d %s; want 404 with a JSON error", status, body)
		}
	})
	// Nothing above was stored, and the bridge still takes callbacks.
	sub := b.Subscribe(t, &pb.Subscription{Group: "after"})
	if status, answer := b.Post(t, http.MethodPost, "/openim/callbackAfterQuitGroupCommand", nil, quit); status != http.StatusOK {
		t.Fatalf("after errors: %d %s", status, answer)
	}
	if ev := sub.Next(); ev.Sequence != 1 {
		t.Errorf("first stored event has sequence %d; want 1: a bad request was stored", ev.Sequence)
	}
}

// TestHealth: /healthz and /readyz.
func TestHealth(t *testing.T) {
	t.Parallel()
	b := bridgetest.Start(t, bridgetest.Options{})
	for _, path := range []string{"/healthz", "/readyz"} {
		status, body := b.Post(t, http.MethodGet, path, nil, nil)
		if status != http.StatusOK || !json.Valid(body) {
			t.Errorf("GET %s: %d %s; want 200 JSON", path, status, body)
		}
	}
}
