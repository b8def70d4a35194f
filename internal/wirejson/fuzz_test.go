package wirejson_test

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	v1 "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/wirejson"
)

var update = flag.Bool("update", false, "rewrite the seed files under testdata/fuzz")

// fuzzTargets are the message types FuzzUnmarshal decodes into, chosen by the input's first byte.
var fuzzTargets = []struct {
	new func() proto.Message
	// protojson reads the same JSON as wirejson: no well-known types with a special JSON form at
	// the top, so a body both accept must decode to the same message.
	protojson bool
}{
	{func() proto.Message { return new(v1.OpenIMSetGroupInfoExRequest) }, true},
	{func() proto.Message { return new(v1.OpenIMSetGroupInfoRequest) }, true},
	{func() proto.Message { return new(v1.OpenIMKickGroupRequest) }, true},
	{func() proto.Message { return new(v1.TencentGroupInfoChangedRequest) }, true},
	{func() proto.Message { return new(v1.TencentMemberExitRequest) }, true},
	{func() proto.Message { return new(v1.Event) }, true},
	{func() proto.Message { return new(v1.Subscription) }, true},
	{func() proto.Message { return new(structpb.Struct) }, false},
	{newKitchen, true},
}

// fuzzSeeds are the seed corpus: each body is decoded into fuzzTargets[target]. They are also kept
// as files under testdata/fuzz/FuzzUnmarshal (go test -run TestFuzzSeedFiles -update rewrites them).
var fuzzSeeds = []struct {
	name   string
	target byte
	body   string
}{
	{"openim_real", 0, openIMRealBody},
	{"openim_seed_wrapped", 0, openIMSeedBody},
	{"openim_case_dup", 0, `{"GROUPID":"a","groupID":"b","groupName":{"value":null,"value":"\ud83d\ude00"},"ex":{"x":1},"needVerification":"1e1"}`},
	{"openim_set_group_info", 1, `{"callbackCommand":"callbackAfterSetGroupInfoCommand","operationID":"op","groupID":"g","groupName":"","notification":"n","introduction":"","faceURL":"","ex":null,"needVerification":0,"lookMemberInfo":null,"applyMemberFriend":null}` + "\n"},
	{"openim_kick", 2, `{"callbackCommand":"callbackAfterKickGroupCommand","groupID":"g","kickedUserIDs":["u1",null,"u2"],"reason":"spam \u0026 abuse"}`},
	{"tencent_info", 3, tencentInfoBody},
	{"tencent_info_string_time", 3, `{"CallbackCommand":"Group.CallbackAfterGroupInfoChanged","GroupId":"@TGS#1","ShutUpAllMember":"On","Extra":{"a":[1,{"b":null}]},"Notification":"","UserDefinedDataList":[{"Key":"k","Value":"v"}],"EventTime":"1670574414123"}`},
	{"tencent_exit", 4, tencentExitBody},
	{"event", 5, `{"id":"e1","sequence":"18446744073709551615","source":"SOURCE_TENCENT","phase":2,"rawBody":"eyJhIjoxfQ","receivedTime":{"seconds":1700000000,"nanos":5},"metadata":{"operationId":"op"},"memberQuit":{"groupId":"g","userIds":["a"],"reason":"QUIT_REASON_KICKED"}}`},
	{"subscription", 6, `{"group":"g","decide":"true","maxInFlight":4294967295,"ackWait":{"seconds":30},"filter":{"kinds":["EVENT_KIND_RAW",3],"sources":[null,1]}}`},
	{"struct", 7, `{"fields":{"a":{"numberValue":1.5},"b":{"listValue":{"values":[{"boolValue":true},{"nullValue":0}]}},"c":{"structValue":{"fields":{}}}}}`},
	{"kitchen", 8, `{"i32":-1,"i64":"9223372036854775807","u64":1e19,"s32":-2,"s64":3,"fx32":4,"fx64":5,"sfx32":-6,"sfx64":-7,"fl":1.5,"db":-2.5e-300,"ok":true,"data":"AQI=","color":"RED","byInt":{"-1":"a"},"byBool":{"true":1},"children":{"x":{"next":{}}},"nums":[1,null],"colors":[2,7],"blobs":["-_"],"choiceS":"s","byU64":{"1":"GREEN"},"floats":[0.1],"optData":"","optFl":null}`},
	{"bad_truncated", 0, `{"groupID":"g`},
	{"bad_trailing", 3, `{"GroupId":"g"}}`},
	{"bad_escape", 0, `{"groupID":"\q"}`},
	{"bad_control_in_unknown", 0, "{\"\":\"\x01\"}"},
	{"odd_strings", 0, "{\"groupID\":\"\\ud800\\u0041\xff\xe4\xb8\",\"ex\":\"\\u2028<>&\"}"},
	{"bad_deep", 4, `{"x":` + strings.Repeat("[", wirejson.MaxDepth) + strings.Repeat("]", wirejson.MaxDepth) + `}`},
	{"bad_array", 0, `[{"groupID":"g"}]`},
	{"bad_empty", 1, " \n"},
	{"bad_type", 0, `{"groupID":[1]}`},
	{"bad_range", 8, `{"i32":2147483648,"u64":"18446744073709551616"}`},
	{"bad_number", 3, `{"EventTime":01}`},
}

func FuzzUnmarshal(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(append([]byte{s.target}, s.body...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		target := fuzzTargets[int(data[0])%len(fuzzTargets)]
		b := data[1:]

		// The input doubles as a string for the encoder, which must escape exactly as
		// encoding/json does.
		s, _ := json.Marshal(string(b))
		want := `{"ActionStatus":` + string(s) + `,"ErrorInfo":"","ErrorCode":0}`
		if got, err := wirejson.Marshal(&v1.TencentCallbackResponse{ActionStatus: string(b)}); err != nil || string(got) != want {
			t.Fatalf("Marshal(%q): got %s, %v; want %s", b, got, err, want)
		}

		m := target.new()
		err := wirejson.Unmarshal(b, m)
		valid := json.Valid(b)
		if err != nil {
			var se *wirejson.SyntaxError
			if errors.As(err, &se) && valid {
				t.Fatalf("Unmarshal(%q): got %v; want no syntax error: json.Valid is true", b, err)
			}
			if !proto.Equal(m, target.new()) {
				t.Fatalf("Unmarshal(%q) failed but left %v; want an empty message", b, m)
			}
			return
		}
		if !valid {
			t.Fatalf("Unmarshal(%q): got nil error; want one: json.Valid is false", b)
		}
		if _, err := proto.Marshal(m); err != nil {
			t.Fatalf("proto.Marshal after Unmarshal(%q): %v", b, err)
		}
		out, err := wirejson.Marshal(m)
		if err != nil {
			t.Fatalf("Marshal after Unmarshal(%q): %v", b, err)
		}
		if !json.Valid(out) {
			t.Fatalf("Marshal after Unmarshal(%q): got invalid JSON %s", b, out)
		}
		again := target.new()
		if err := wirejson.Unmarshal(out, again); err != nil {
			t.Fatalf("Unmarshal(Marshal(m)) of %s: %v", out, err)
		}
		if !proto.Equal(again, m) {
			t.Fatalf("Unmarshal(Marshal(m)): got %v; want %v (from %q via %s)", again, m, b, out)
		}
		// protojson is stricter (no wrappers, case folding, duplicates, numbers as strings), but
		// where it accepts a body the two must agree.
		if target.protojson {
			strict := target.new()
			if protojson.Unmarshal(b, strict) == nil && !proto.Equal(strict, m) {
				t.Fatalf("Unmarshal(%q): got %v; protojson got %v", b, m, strict)
			}
		}
	})
}

// TestFuzzSeedFiles keeps testdata/fuzz/FuzzUnmarshal in step with fuzzSeeds; -update rewrites the
// files. Files the fuzzer added (crashers kept as regression inputs) are left alone.
func TestFuzzSeedFiles(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzUnmarshal")
	if *update {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range fuzzSeeds {
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", append([]byte{s.target}, s.body...))
		path := filepath.Join(dir, "seed_"+s.name)
		if *update {
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s: out of date with fuzzSeeds (err %v); run go test -run TestFuzzSeedFiles -update", path, err)
		}
	}
}
