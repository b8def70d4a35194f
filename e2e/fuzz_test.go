package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/imbridge/imbridge/examples"
	"github.com/imbridge/imbridge/internal/bridgetest"
)

// FuzzCallback posts arbitrary bodies to every route of a real in-process bridge: whatever arrives,
// the answer is the vendor's JSON shape with an expected status, and the process keeps serving.
func FuzzCallback(f *testing.F) {
	for i, name := range examples.Names() {
		f.Add(uint8(i), examples.Must(name).Body)
	}
	f.Add(uint8(0), []byte(`{"groupID":{"value":{"value":1}}}`))
	f.Add(uint8(1), []byte("{\"GroupId\":\"\xff\xfe\",\"EventTime\":\"9e99\"}"))
	f.Add(uint8(2), []byte(`[`))
	paths := []string{
		"/openim/callbackAfterSetGroupInfoExCommand",
		"/openim/callbackAfterSetGroupInfoCommand",
		"/openim/callbackAfterQuitGroupCommand",
		"/openim/callbackAfterKickGroupCommand",
		"/openim/callbackAfterCreateGroupCommand",
		"/tencent?CallbackCommand=Group.CallbackAfterGroupInfoChanged",
		"/tencent?CallbackCommand=Group.CallbackAfterMemberExit",
		"/tencent?CallbackCommand=Group.CallbackAfterGroupDestroyed",
	}
	b := bridgetest.Start(f, bridgetest.Options{})
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := paths[int(route)%len(paths)]
		status, out := b.Post(t, http.MethodPost, path, nil, body)
		if status != http.StatusOK && status != http.StatusBadRequest {
			t.Fatalf("%s %q: status %d %s; want 200 or 400", path, body, status, out)
		}
		var fields map[string]any
		if err := json.Unmarshal(out, &fields); err != nil {
			t.Fatalf("%s: answer %q is not JSON: %v", path, out, err)
		}
		want := []string{"actionCode", "errCode", "errMsg", "errDlt", "nextCode"}
		if strings.HasPrefix(path, "/tencent") {
			want = []string{"ActionStatus", "ErrorInfo", "ErrorCode"}
		}
		for _, k := range want {
			if _, ok := fields[k]; !ok {
				t.Fatalf("%s: answer %s lacks %s", path, out, k)
			}
		}
	})
}
