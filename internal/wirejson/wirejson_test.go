package wirejson_test

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	v1 "github.com/imbridge/imbridge/gen/imbridge/v1"
	"github.com/imbridge/imbridge/internal/wirejson"
)

// Bodies as the servers send them.
const (
	// open-im-server's encoding/json output: bare values, null for unchanged fields, <>& escaped, a
	// trailing newline.
	openIMRealBody = `{"callbackCommand":"callbackAfterSetGroupInfoExCommand","operationID":"","groupID":"g1","groupName":"new \u003cname\u003e","notification":null,"introduction":null,"faceURL":null,"ex":"","needVerification":1,"lookMemberInfo":null,"applyMemberFriend":null}` + "\n"

	// The seed document's form: every changed field wrapped in {"value": x}.
	openIMSeedBody = `{
"callbackCommand": "callbackAfterSetGroupInfoExCommand",
"operationID": "1646445464564",
"groupID": "G002",
"groupName": {
"value": "NewGroupName"
},
"notification": {
"value": "Updated group notification"
},
"introduction": {
"value": "Updated group introduction"
},
"faceURL": {
"value": "http://example.com/new/path/to/face/image.png"
},
"ex": {
"value": "Updated extra data"
},
"needVerification": {
"value": 0
},
"lookMemberInfo": {
"value": 1
},
"applyMemberFriend": {
"value": 0
}
}`

	tencentInfoBody = `{"CallbackCommand":"Group.CallbackAfterGroupInfoChanged","GroupId":"@TGS#2J4SZEAEL","Type":"Public","Operator_Account":"leckie","Name":"NewGroupName","Introduction":"NewIntroduction","Notification":"NewNotification","FaceUrl":"NewFaceUrl","UserDefinedDataList":[{"Key":"UserDefinedKey1","Value":"UserDefinedValue1"},{"Key":"UserDefinedKey2","Value":"UserDefinedValue2"}],"EventTime":1670574414123}`

	tencentExitBody = `{"CallbackCommand":"Group.CallbackAfterMemberExit","GroupId":"@TGS#2J4SZEAEL","Type":"Public","ExitType":"Kicked","Operator_Account":"leckie","ExitMemberList":[{"Member_Account":"jared"},{"Member_Account":"tommy"}],"EventTime":1670574414123}`
)

func TestUnmarshalOpenIMRealServerBody(t *testing.T) {
	t.Parallel()
	var got v1.OpenIMSetGroupInfoExRequest
	if err := wirejson.Unmarshal([]byte(openIMRealBody), &got); err != nil {
		t.Fatalf("Unmarshal: got error %v; want nil", err)
	}
	if got.GroupName == nil || *got.GroupName != "new <name>" {
		t.Errorf("groupName: got %v; want %q", got.GroupName, "new <name>")
	}
	if got.Notification != nil {
		t.Errorf("notification: got %q; want unset", *got.Notification)
	}
	if got.Ex == nil || *got.Ex != "" {
		t.Errorf("ex: got %v; want set to \"\"", got.Ex)
	}
	if got.NeedVerification == nil || *got.NeedVerification != 1 {
		t.Errorf("needVerification: got %v; want 1", got.NeedVerification)
	}
	if got.LookMemberInfo != nil {
		t.Errorf("lookMemberInfo: got %d; want unset", *got.LookMemberInfo)
	}
}

func TestUnmarshal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want proto.Message // its type is the one decoded into
	}{
		{
			name: "openim real server body",
			body: openIMRealBody,
			want: &v1.OpenIMSetGroupInfoExRequest{
				CallbackCommand:  "callbackAfterSetGroupInfoExCommand",
				GroupId:          "g1",
				GroupName:        proto.String("new <name>"),
				Ex:               proto.String(""),
				NeedVerification: proto.Int32(1),
			},
		},
		{
			name: "openim seed document wrapped form",
			body: openIMSeedBody,
			want: &v1.OpenIMSetGroupInfoExRequest{
				CallbackCommand:   "callbackAfterSetGroupInfoExCommand",
				OperationId:       "1646445464564",
				GroupId:           "G002",
				GroupName:         proto.String("NewGroupName"),
				Notification:      proto.String("Updated group notification"),
				Introduction:      proto.String("Updated group introduction"),
				FaceUrl:           proto.String("http://example.com/new/path/to/face/image.png"),
				Ex:                proto.String("Updated extra data"),
				NeedVerification:  proto.Int32(0),
				LookMemberInfo:    proto.Int32(1),
				ApplyMemberFriend: proto.Int32(0),
			},
		},
		{
			name: "wrapper with null value, empty (encoding/json omits a wrapper's zero value), with other keys",
			body: `{"groupName":{"value":null},"ex":{},"lookMemberInfo":{},"faceURL":{"other":[1,{"a":2}],"Value":"f","more":true},"needVerification":{"value":"7"}}`,
			want: &v1.OpenIMSetGroupInfoExRequest{Ex: proto.String(""), LookMemberInfo: proto.Int32(0), FaceUrl: proto.String("f"), NeedVerification: proto.Int32(7)},
		},
		{
			name: "wrapper last value wins",
			body: `{"groupName":{"value":"a","value":"b"}}`,
			want: &v1.OpenIMSetGroupInfoExRequest{GroupName: proto.String("b")},
		},
		{
			name: "openim old set group info: plain values",
			body: `{"callbackCommand":"callbackAfterSetGroupInfoCommand","groupID":"g","groupName":"","notification":"n","introduction":"","faceURL":"","ex":null,"needVerification":0}`,
			want: &v1.OpenIMSetGroupInfoRequest{CallbackCommand: "callbackAfterSetGroupInfoCommand", GroupId: "g", Notification: "n", NeedVerification: proto.Int32(0)},
		},
		{
			name: "openim kick: list with null element",
			body: `{"callbackCommand":"callbackAfterKickGroupCommand","groupID":"g","kickedUserIDs":["u1",null,"u2",{"value":"u3"}],"reason":"spam"}`,
			want: &v1.OpenIMKickGroupRequest{CallbackCommand: "callbackAfterKickGroupCommand", GroupId: "g", KickedUserIds: []string{"u1", "u2", "u3"}, Reason: "spam"},
		},
		{
			name: "openim quit group",
			body: " \t\r\n{\"callbackCommand\":\"callbackAfterQuitGroupCommand\",\"groupID\":\"g\",\"userID\":\"u\"} \n",
			want: &v1.OpenIMQuitGroupRequest{CallbackCommand: "callbackAfterQuitGroupCommand", GroupId: "g", UserId: "u"},
		},
		{
			name: "tencent group info changed, EventTime number",
			body: tencentInfoBody,
			want: &v1.TencentGroupInfoChangedRequest{
				CallbackCommand: "Group.CallbackAfterGroupInfoChanged",
				GroupId:         "@TGS#2J4SZEAEL",
				Type:            "Public",
				OperatorAccount: "leckie",
				Name:            proto.String("NewGroupName"),
				Introduction:    proto.String("NewIntroduction"),
				Notification:    proto.String("NewNotification"),
				FaceUrl:         proto.String("NewFaceUrl"),
				UserDefinedDataList: []*v1.TencentKeyValue{
					{Key: "UserDefinedKey1", Value: "UserDefinedValue1"},
					{Key: "UserDefinedKey2", Value: "UserDefinedValue2"},
				},
				EventTime: 1670574414123,
			},
		},
		{
			name: "tencent group info changed, EventTime string, unknown fields",
			body: `{"CallbackCommand":"Group.CallbackAfterGroupInfoChanged","GroupId":"@TGS#1","Type":"Public","Operator_Account":"leckie",
				"ShutUpAllMember":"On","Extra":{"a":[1,2,{"b":null}],"c":"\u00e9"},"Numbers":[1.5e3,-0,true,false,null],"Big":123456789012345678901234567890,
				"Notification":"","UserDefinedDataList":[{"Key":"k","Value":"v","Other":1}],"EventTime":"1670574414123"}`,
			want: &v1.TencentGroupInfoChangedRequest{
				CallbackCommand:     "Group.CallbackAfterGroupInfoChanged",
				GroupId:             "@TGS#1",
				Type:                "Public",
				OperatorAccount:     "leckie",
				Notification:        proto.String(""),
				UserDefinedDataList: []*v1.TencentKeyValue{{Key: "k", Value: "v"}},
				EventTime:           1670574414123,
			},
		},
		{
			name: "tencent member exit",
			body: tencentExitBody,
			want: &v1.TencentMemberExitRequest{
				CallbackCommand: "Group.CallbackAfterMemberExit",
				GroupId:         "@TGS#2J4SZEAEL",
				Type:            "Public",
				ExitType:        "Kicked",
				OperatorAccount: "leckie",
				ExitMemberList:  []*v1.TencentMember{{MemberAccount: "jared"}, {MemberAccount: "tommy"}},
				EventTime:       1670574414123,
			},
		},
		{
			name: "case-insensitive key fallback",
			body: `{"GROUPID":"g","GroupName":"n","NEEDVERIFICATION":2}`,
			want: &v1.OpenIMSetGroupInfoExRequest{GroupId: "g", GroupName: proto.String("n"), NeedVerification: proto.Int32(2)},
		},
		{
			name: "case-insensitive fallback with Unicode folding (Kelvin sign)",
			body: `{"Key":"x","\u212Aey":"y","Valu\u017F":"ignored","Value":"v"}`,
			want: &v1.TencentKeyValue{Key: "y", Value: "v"},
		},
		{
			name: "exact key preferred over folded, in any order",
			body: `{"groupid":"folded","groupID":"exact"}`,
			want: &v1.OpenIMSetGroupInfoExRequest{GroupId: "exact"},
		},
		{
			name: "proto field name",
			body: `{"group_id":"g","face_url":"f"}`,
			want: &v1.OpenIMSetGroupInfoExRequest{GroupId: "g", FaceUrl: proto.String("f")},
		},
		{
			name: "escaped key",
			body: `{"group\u0049D":"g"}`,
			want: &v1.OpenIMSetGroupInfoExRequest{GroupId: "g"},
		},
		{
			name: "duplicate keys: last wins, null unsets",
			body: `{"groupID":"a","groupID":"b","groupName":"x","groupName":null}`,
			want: &v1.OpenIMSetGroupInfoExRequest{GroupId: "b"},
		},
		{
			name: "duplicate list and message keys: last wins",
			body: `{"ExitMemberList":[{"Member_Account":"a"}],"ExitMemberList":[{"Member_Account":"b"}]}`,
			want: &v1.TencentMemberExitRequest{ExitMemberList: []*v1.TencentMember{{MemberAccount: "b"}}},
		},
		{
			name: "numbers as strings' text",
			body: `{"groupID":12,"operationID":-1.5e3}`,
			want: &v1.OpenIMSetGroupInfoExRequest{GroupId: "12", OperationId: "-1.5e3"},
		},
		{
			name: "integer notations",
			body: `{"needVerification":1e3,"lookMemberInfo":"2.0","applyMemberFriend":-2147483648}`,
			want: &v1.OpenIMSetGroupInfoExRequest{NeedVerification: proto.Int32(1000), LookMemberInfo: proto.Int32(2), ApplyMemberFriend: proto.Int32(math.MinInt32)},
		},
		{
			name: "int64 extremes",
			body: `{"EventTime":-9223372036854775808}`,
			want: &v1.TencentMemberExitRequest{EventTime: math.MinInt64},
		},
		{
			name: "long values: multi-byte lengths in nested messages",
			body: `{"UserDefinedDataList":[{"Key":"` + strings.Repeat("k", 200) + `","Value":"` + strings.Repeat("値", 7000) + `"},{"Key":"a","Key":"b","Value":"` +
				strings.Repeat("x", 150) + `","Value":"y"}],"Name":"` + strings.Repeat("n", 20000) + `"}`,
			want: &v1.TencentGroupInfoChangedRequest{
				UserDefinedDataList: []*v1.TencentKeyValue{
					{Key: strings.Repeat("k", 200), Value: strings.Repeat("値", 7000)},
					{Key: "b", Value: "y"},
				},
				Name: proto.String(strings.Repeat("n", 20000)),
			},
		},
		{
			name: "empty object",
			body: `{}`,
			want: &v1.OpenIMSetGroupInfoExRequest{},
		},
		{
			name: "event: enums by name and number, oneof, bytes, timestamp, nested",
			body: `{"id":"e1","sequence":"18446744073709551615","source":"SOURCE_TENCENT","phase":2,"rawBody":"eyJhIjoxfQ","receivedTime":{"seconds":1700000000,"nanos":5},
				"metadata":{"operationId":"op","client_ip":"1.2.3.4"},"groupInfoChanged":{"groupId":"g","name":"n","userDefinedData":[{"key":"k"}]}}`,
			want: &v1.Event{
				Id:           "e1",
				Sequence:     math.MaxUint64,
				Source:       v1.Source_SOURCE_TENCENT,
				Phase:        v1.Phase_PHASE_AFTER,
				RawBody:      []byte(`{"a":1}`),
				ReceivedTime: &timestamppb.Timestamp{Seconds: 1700000000, Nanos: 5},
				Metadata:     &v1.RequestMetadata{OperationId: "op", ClientIp: "1.2.3.4"},
				Payload: &v1.Event_GroupInfoChanged{GroupInfoChanged: &v1.GroupInfoChanged{
					GroupId: "g", Name: proto.String("n"), UserDefinedData: []*v1.KeyValue{{Key: "k"}},
				}},
			},
		},
		{
			name: "event: later oneof member replaces earlier",
			body: `{"groupInfoChanged":{"groupId":"g"},"memberQuit":{"groupId":"q","userIds":["a"],"reason":"QUIT_REASON_KICKED"}}`,
			want: &v1.Event{Payload: &v1.Event_MemberQuit{MemberQuit: &v1.MemberQuit{GroupId: "q", UserIds: []string{"a"}, Reason: v1.QuitReason_QUIT_REASON_KICKED}}},
		},
		{
			name: "subscription: bool as string, uint32, repeated enums, duration",
			body: `{"group":"g","decide":"true","maxInFlight":4294967295,"ackWait":{"seconds":30},"filter":{"kinds":["EVENT_KIND_RAW",3],"sources":[null,1]}}`,
			want: &v1.Subscription{
				Group:       "g",
				Decide:      true,
				MaxInFlight: math.MaxUint32,
				AckWait:     &durationpb.Duration{Seconds: 30},
				Filter: &v1.EventFilter{
					Kinds:   []v1.EventKind{v1.EventKind_EVENT_KIND_RAW, v1.EventKind_EVENT_KIND_MEMBER_QUIT},
					Sources: []v1.Source{v1.Source_SOURCE_OPENIM},
				},
			},
		},
		{
			name: "struct: map of messages, doubles",
			body: `{"fields":{"a":{"numberValue":1.5},"b":{"stringValue":"x"},"c":null,"d":{"listValue":{"values":[{"boolValue":true}]}}}}`,
			want: &structpb.Struct{Fields: map[string]*structpb.Value{
				"a": structpb.NewNumberValue(1.5),
				"b": structpb.NewStringValue("x"),
				"d": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{structpb.NewBoolValue(true)}}),
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := tt.want.ProtoReflect().New().Interface()
			if err := wirejson.Unmarshal([]byte(tt.body), got); err != nil {
				t.Fatalf("Unmarshal: got error %v; want nil", err)
			}
			if !proto.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

// kitchen is a message type with every kind of field, built at run time because the project's
// protos have no maps, floats or odd integer kinds.
var kitchen = func() protoreflect.MessageDescriptor {
	type fieldSpec struct {
		name  string
		typ   descriptorpb.FieldDescriptorProto_Type
		label descriptorpb.FieldDescriptorProto_Label
		ref   string // message or enum type name
		oneof *int32
		opt   bool
	}
	const (
		opt = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL
		rep = descriptorpb.FieldDescriptorProto_LABEL_REPEATED
		T   = descriptorpb.FieldDescriptorProto_TYPE_INT32
	)
	specs := []fieldSpec{
		{name: "i32", typ: T, label: opt},
		{name: "i64", typ: descriptorpb.FieldDescriptorProto_TYPE_INT64, label: opt},
		{name: "u32", typ: descriptorpb.FieldDescriptorProto_TYPE_UINT32, label: opt},
		{name: "u64", typ: descriptorpb.FieldDescriptorProto_TYPE_UINT64, label: opt},
		{name: "s32", typ: descriptorpb.FieldDescriptorProto_TYPE_SINT32, label: opt},
		{name: "s64", typ: descriptorpb.FieldDescriptorProto_TYPE_SINT64, label: opt},
		{name: "fx32", typ: descriptorpb.FieldDescriptorProto_TYPE_FIXED32, label: opt},
		{name: "fx64", typ: descriptorpb.FieldDescriptorProto_TYPE_FIXED64, label: opt},
		{name: "sfx32", typ: descriptorpb.FieldDescriptorProto_TYPE_SFIXED32, label: opt},
		{name: "sfx64", typ: descriptorpb.FieldDescriptorProto_TYPE_SFIXED64, label: opt},
		{name: "fl", typ: descriptorpb.FieldDescriptorProto_TYPE_FLOAT, label: opt},
		{name: "db", typ: descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, label: opt},
		{name: "ok", typ: descriptorpb.FieldDescriptorProto_TYPE_BOOL, label: opt},
		{name: "data", typ: descriptorpb.FieldDescriptorProto_TYPE_BYTES, label: opt},
		{name: "color", typ: descriptorpb.FieldDescriptorProto_TYPE_ENUM, label: opt, ref: ".wirejsontest.Color"},
		{name: "by_int", typ: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, label: rep, ref: ".wirejsontest.Kitchen.ByIntEntry"},
		{name: "by_bool", typ: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, label: rep, ref: ".wirejsontest.Kitchen.ByBoolEntry"},
		{name: "children", typ: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, label: rep, ref: ".wirejsontest.Kitchen.ChildrenEntry"},
		{name: "next", typ: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, label: opt, ref: ".wirejsontest.Kitchen"},
		{name: "nums", typ: descriptorpb.FieldDescriptorProto_TYPE_UINT64, label: rep},
		{name: "colors", typ: descriptorpb.FieldDescriptorProto_TYPE_ENUM, label: rep, ref: ".wirejsontest.Color"},
		{name: "blobs", typ: descriptorpb.FieldDescriptorProto_TYPE_BYTES, label: rep},
		{name: "choice_s", typ: descriptorpb.FieldDescriptorProto_TYPE_STRING, label: opt, oneof: proto.Int32(0)},
		{name: "choice_k", typ: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, label: opt, ref: ".wirejsontest.Kitchen", oneof: proto.Int32(0)},
		{name: "by_u64", typ: descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, label: rep, ref: ".wirejsontest.Kitchen.ByU64Entry"},
		{name: "floats", typ: descriptorpb.FieldDescriptorProto_TYPE_DOUBLE, label: rep},
		{name: "opt_data", typ: descriptorpb.FieldDescriptorProto_TYPE_BYTES, label: opt, oneof: proto.Int32(1), opt: true},
		{name: "opt_fl", typ: descriptorpb.FieldDescriptorProto_TYPE_FLOAT, label: opt, oneof: proto.Int32(2), opt: true},
	}
	msg := &descriptorpb.DescriptorProto{
		Name:      proto.String("Kitchen"),
		OneofDecl: []*descriptorpb.OneofDescriptorProto{{Name: proto.String("choice")}, {Name: proto.String("_opt_data")}, {Name: proto.String("_opt_fl")}},
	}
	for i, s := range specs {
		f := &descriptorpb.FieldDescriptorProto{
			Name:       proto.String(s.name),
			Number:     proto.Int32(int32(i + 1)),
			Type:       s.typ.Enum(),
			Label:      s.label.Enum(),
			OneofIndex: s.oneof,
		}
		if s.ref != "" {
			f.TypeName = proto.String(s.ref)
		}
		if s.opt {
			f.Proto3Optional = proto.Bool(true)
		}
		msg.Field = append(msg.Field, f)
	}
	entry := func(name string, key, val descriptorpb.FieldDescriptorProto_Type, valRef string) *descriptorpb.DescriptorProto {
		v := &descriptorpb.FieldDescriptorProto{Name: proto.String("value"), Number: proto.Int32(2), Type: val.Enum(), Label: opt.Enum()}
		if valRef != "" {
			v.TypeName = proto.String(valRef)
		}
		return &descriptorpb.DescriptorProto{
			Name:    proto.String(name),
			Options: &descriptorpb.MessageOptions{MapEntry: proto.Bool(true)},
			Field: []*descriptorpb.FieldDescriptorProto{
				{Name: proto.String("key"), Number: proto.Int32(1), Type: key.Enum(), Label: opt.Enum()},
				v,
			},
		}
	}
	msg.NestedType = []*descriptorpb.DescriptorProto{
		entry("ByIntEntry", T, descriptorpb.FieldDescriptorProto_TYPE_STRING, ""),
		entry("ByBoolEntry", descriptorpb.FieldDescriptorProto_TYPE_BOOL, descriptorpb.FieldDescriptorProto_TYPE_INT64, ""),
		entry("ChildrenEntry", descriptorpb.FieldDescriptorProto_TYPE_STRING, descriptorpb.FieldDescriptorProto_TYPE_MESSAGE, ".wirejsontest.Kitchen"),
		entry("ByU64Entry", descriptorpb.FieldDescriptorProto_TYPE_UINT64, descriptorpb.FieldDescriptorProto_TYPE_ENUM, ".wirejsontest.Color"),
	}
	file := &descriptorpb.FileDescriptorProto{
		Name:    proto.String("wirejsontest/kitchen.proto"),
		Package: proto.String("wirejsontest"),
		Syntax:  proto.String("proto3"),
		EnumType: []*descriptorpb.EnumDescriptorProto{{
			Name: proto.String("Color"),
			Value: []*descriptorpb.EnumValueDescriptorProto{
				{Name: proto.String("COLOR_UNSPECIFIED"), Number: proto.Int32(0)},
				{Name: proto.String("RED"), Number: proto.Int32(1)},
				{Name: proto.String("GREEN"), Number: proto.Int32(2)},
			},
		}},
		MessageType: []*descriptorpb.DescriptorProto{msg},
	}
	fd, err := protodesc.NewFile(file, nil)
	if err != nil {
		panic(err)
	}
	return fd.Messages().ByName("Kitchen")
}()

func newKitchen() proto.Message { return dynamicpb.NewMessage(kitchen) }

// TestUnmarshalKitchen checks every field kind against protojson's reading of the same values.
func TestUnmarshalKitchen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want string // protojson for the expected message
	}{
		{
			name: "integers at their limits",
			body: `{"i32":2147483647,"i64":"9223372036854775807","u32":"4294967295","u64":18446744073709551615,"s32":-2147483648,"s64":-9223372036854775808,
				"fx32":4294967295,"fx64":"18446744073709551615","sfx32":-1,"sfx64":-1}`,
			want: `{"i32":2147483647,"i64":"9223372036854775807","u32":4294967295,"u64":"18446744073709551615","s32":-2147483648,"s64":"-9223372036854775808",
				"fx32":4294967295,"fx64":"18446744073709551615","sfx32":-1,"sfx64":"-1"}`,
		},
		{
			name: "integer notations",
			body: `{"i32":-0,"i64":1.0e18,"u32":100e-2,"u64":"0.00e9999999999","s32":-1E+2,"s64":12345.6789e4}`,
			want: `{"i64":"1000000000000000000","u32":1,"s32":-100,"s64":"123456789"}`,
		},
		{
			name: "floats",
			body: `{"fl":3.4e38,"db":"-1.5e-300","floats":[0,-0,1e-320,"2.5",{"value":1}]}`,
			want: `{"fl":3.4e38,"db":-1.5e-300,"floats":[0,-0,1e-320,2.5,1]}`,
		},
		{
			name: "bool, bytes in all alphabets, enums",
			body: `{"ok":"true","data":"-_-_","blobs":["+/+/","+/8","-_8=",""],"color":"GREEN","colors":[1,"RED",null,"2",7]}`,
			want: `{"ok":true,"data":"+/+/","blobs":["+/+/","+/8=","+/8=",""],"color":"GREEN","colors":["RED","RED","GREEN",7]}`,
		},
		{
			name: "maps with converted keys",
			body: `{"byInt":{"-5":"a","7":"b","7":"c","8":null,"9":{"value":"d"}},"byBool":{"true":"1","false":2},"byU64":{"18446744073709551615":"RED"},
				"children":{"x":{"i32":1},"y":{"children":{"z":{}}}}}`,
			want: `{"byInt":{"-5":"a","7":"c","9":"d"},"byBool":{"true":"1","false":"2"},"byU64":{"18446744073709551615":"RED"},
				"children":{"x":{"i32":1},"y":{"children":{"z":{}}}}}`,
		},
		{
			name: "oneof and proto3 optional",
			body: `{"choiceS":"s","choiceK":{"next":{"ok":true}},"optData":"","optFl":null}`,
			want: `{"choiceK":{"next":{"ok":true}},"optData":""}`,
		},
		{
			name: "null map values are skipped like null list elements",
			body: `{"byInt":{"1":"a","1":null,"2":null,"3":{}},"children":{"c":null}}`,
			want: `{"byInt":{"1":"a","3":""}}`,
		},
		{
			name: "each key's last occurrence decides its field, oneof members too",
			body: `{"choiceS":"s","choiceK":{"i32":1},"choiceK":null,"next":{"i32":1},"next":{"i64":2},"nums":[1],"nums":[2,3],"optData":"AA==","optData":null}`,
			want: `{"choiceS":"s","next":{"i64":"2"},"nums":["2","3"]}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			want := newKitchen()
			if err := protojson.Unmarshal([]byte(tt.want), want); err != nil {
				t.Fatalf("test's protojson: %v", err)
			}
			got := newKitchen()
			if err := wirejson.Unmarshal([]byte(tt.body), got); err != nil {
				t.Fatalf("Unmarshal: got error %v; want nil", err)
			}
			if !proto.Equal(got, want) {
				t.Errorf("got %v; want %v", got, want)
			}
		})
	}
}

// TestUnmarshalStrings checks string decoding against encoding/json, which the vendors' own servers
// use: escapes, surrogate pairs, lone surrogates and invalid UTF-8.
func TestUnmarshalStrings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		lit  string // a JSON string literal
	}{
		{name: "plain", lit: `"abc"`},
		{name: "empty", lit: `""`},
		{name: "simple escapes", lit: `"\"\\\/\b\f\n\r\t"`},
		{name: "html escapes", lit: `"\u003cb\u003e \u0026"`},
		{name: "chinese, raw", lit: `"群名称"`},
		{name: "chinese, escaped", lit: `"\u7fa4\u540D"`},
		{name: "surrogate pair", lit: `"\ud83d\ude00"`},
		{name: "lone high surrogate", lit: `"a\ud83db"`},
		{name: "lone low surrogate", lit: `"\ude00"`},
		{name: "high then non-surrogate escape", lit: `"\ud83d\u0041"`},
		{name: "two high surrogates then low", lit: `"\ud83d\ud83d\ude00"`},
		{name: "surrogate at end", lit: `"\ud83d"`},
		{name: "NUL escape", lit: `"\u0000"`},
		{name: "invalid UTF-8 bytes", lit: "\"a\xffb\xc3\x28\xed\xa0\x80\""},
		{name: "invalid UTF-8 and escapes", lit: "\"\xff\\n\xe4\xb8\""},
		{name: "truncated multibyte at end", lit: "\"\xe4\xb8\""},
		{name: "DEL and U+2028", lit: "\"\x7f\u2028\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var want string
			if err := json.Unmarshal([]byte(tt.lit), &want); err != nil {
				t.Fatalf("encoding/json: %v", err)
			}
			for _, body := range []string{`{"groupID":` + tt.lit + `}`, `{` + tt.lit + `:1,"groupID":` + tt.lit + `}`} {
				var got v1.OpenIMQuitGroupRequest
				if err := wirejson.Unmarshal([]byte(body), &got); err != nil {
					t.Fatalf("Unmarshal(%s): got error %v; want nil", body, err)
				}
				if got.GroupId != want {
					t.Errorf("Unmarshal(%s): got %q; want %q", body, got.GroupId, want)
				}
			}
			// Keys are decoded the same way: a map key keeps the decoded text.
			var st structpb.Struct
			if err := wirejson.Unmarshal([]byte(`{"fields":{`+tt.lit+`:{}}}`), &st); err != nil {
				t.Fatalf("Unmarshal: got error %v; want nil", err)
			}
			if _, ok := st.Fields[want]; !ok || len(st.Fields) != 1 {
				t.Errorf("map key: got %q; want %q", keys(st.Fields), want)
			}
		})
	}
}

func keys[V any](m map[string]V) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestUnmarshalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		is     error  // a sentinel the error must match, if set
		syntax bool   // the error must be a *SyntaxError
		path   string // with msg: the error must be a *ValueError with this path and message
		msg    string
		into   proto.Message // default: an OpenIMSetGroupInfoExRequest with a field set
	}{
		{name: "empty", body: "", is: wirejson.ErrEmpty},
		{name: "only whitespace", body: " \n\t\r ", is: wirejson.ErrEmpty},
		{name: "array", body: `[{"groupID":"g"}]`, msg: "want object, got array"},
		{name: "string", body: ` "x" `, msg: "want object, got string"},
		{name: "number", body: `1`, msg: "want object, got number"},
		{name: "null", body: `null`, msg: "want object, got null"},
		{name: "malformed non-object", body: `[1,]`, syntax: true},
		{name: "truncated", body: `{"groupID":"g`, syntax: true},
		{name: "truncated after colon", body: `{"groupID":`, syntax: true},
		{name: "truncated after comma", body: `{"groupID":"g",`, syntax: true},
		{name: "trailing garbage", body: `{"groupID":"g"}x`, syntax: true},
		{name: "two objects", body: `{}{}`, syntax: true},
		{name: "trailing comma", body: `{"groupID":"g",}`, syntax: true},
		{name: "single quotes", body: `{'groupID':"g"}`, syntax: true},
		{name: "unquoted key", body: `{groupID:"g"}`, syntax: true},
		{name: "missing colon", body: `{"groupID" "g"}`, syntax: true},
		{name: "bad escape", body: `{"groupID":"\x"}`, syntax: true},
		{name: "bad unicode escape", body: `{"groupID":"\u12G4"}`, syntax: true},
		{name: "raw control character", body: "{\"groupID\":\"a\tb\"}", syntax: true},
		{name: "leading zero", body: `{"needVerification":01}`, syntax: true},
		{name: "plus sign", body: `{"needVerification":+1}`, syntax: true},
		{name: "bare dot", body: `{"needVerification":1.}`, syntax: true},
		{name: "NaN", body: `{"needVerification":NaN}`, syntax: true},
		{name: "bad literal", body: `{"groupName":nul}`, syntax: true},
		{name: "bad literal in unknown key", body: `{"zzz":[tru]}`, syntax: true},
		{name: "unclosed array in unknown key", body: `{"zzz":[1,2}`, syntax: true},
		{name: "byte order mark", body: "\ufeff{}", syntax: true},
		{name: "wrong type: array for string", body: `{"groupID":[1]}`, path: "groupID", msg: "want string, got array"},
		{name: "wrong type: object for list", body: `{"kickedUserIDs":{"a":1}}`, path: "kickedUserIDs", msg: "want array, got object", into: &v1.OpenIMKickGroupRequest{}},
		{name: "wrong type: string for list", body: `{"kickedUserIDs":"u"}`, path: "kickedUserIDs", msg: "want array, got string", into: &v1.OpenIMKickGroupRequest{}},
		{name: "wrong type: in list element", body: `{"kickedUserIDs":["a",[]]}`, path: "kickedUserIDs[1]", msg: "want string, got array", into: &v1.OpenIMKickGroupRequest{}},
		{name: "wrong type: nested", body: `{"ExitMemberList":[{"Member_Account":"a"},{"Member_Account":{"value":[]}}]}`, path: "ExitMemberList[1].Member_Account.value", msg: "want string, got array", into: &v1.TencentMemberExitRequest{}},
		{name: "wrong type: string for message list element", body: `{"ExitMemberList":["a"]}`, path: "ExitMemberList[0]", msg: "want object, got string", into: &v1.TencentMemberExitRequest{}},
		{name: "wrong type: bool for int", body: `{"needVerification":true}`, path: "needVerification", msg: "want integer, got bool"},
		{name: "wrong type: bool for string", body: `{"groupID":true}`, path: "groupID", msg: "want string, got bool"},
		{name: "wrong type: bool for string, Tencent", body: `{"GroupId":false}`, path: "GroupId", msg: "want string, got bool", into: &v1.TencentMemberExitRequest{}},
		{name: "wrong type: object for string", body: `{"groupID":{"a":1}}`, path: "groupID", msg: `want string, got an object without "value"`},
		{name: "wrong type: non-numeric string for int", body: `{"EventTime":"soon"}`, path: "EventTime", msg: `want integer, got string "soon"`, into: &v1.TencentMemberExitRequest{}},
		{name: "wrong type: string for message", body: `{"metadata":"m"}`, path: "metadata", msg: "want object, got string", into: &v1.Event{}},
		{name: "int32 out of range", body: `{"needVerification":2147483648}`, path: "needVerification", msg: `"2147483648" out of range for int32`},
		{name: "int32 out of range, negative", body: `{"needVerification":{"value":-2147483649}}`, path: "needVerification.value", msg: `"-2147483649" out of range for int32`},
		{name: "int64 out of range", body: `{"EventTime":"9223372036854775808"}`, path: "EventTime", msg: `"9223372036854775808" out of range for int64`, into: &v1.TencentMemberExitRequest{}},
		{name: "int out of range, huge exponent", body: `{"EventTime":1e999999999999}`, path: "EventTime", msg: `"1e999999999999" out of range for int64`, into: &v1.TencentMemberExitRequest{}},
		{name: "uint negative", body: `{"sequence":-1}`, path: "sequence", msg: `"-1" out of range for uint64`, into: &v1.Event{}},
		{name: "not an integer", body: `{"needVerification":1.5}`, path: "needVerification", msg: `"1.5" is not an integer`},
		{name: "unknown enum name", body: `{"source":"SOURCE_MARS"}`, path: "source", msg: `unknown imbridge.v1.Source value "SOURCE_MARS"`, into: &v1.Event{}},
		{name: "bad base64", body: `{"rawBody":"!!"}`, path: "rawBody", msg: `want base64 string, got "!!"`, into: &v1.Event{}},
		{name: "bool string", body: `{"decide":"yes"}`, path: "decide", msg: `want bool, got string "yes"`, into: &v1.Subscription{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := tt.into
			if m == nil {
				m = &v1.OpenIMSetGroupInfoExRequest{GroupId: "stale"}
			}
			err := wirejson.Unmarshal([]byte(tt.body), m)
			if err == nil {
				t.Fatalf("Unmarshal(%q): got nil error; want one", tt.body)
			}
			if tt.is == nil && json.Valid([]byte(tt.body)) == tt.syntax {
				t.Errorf("test case: json.Valid(%q) = %v; want %v", tt.body, !tt.syntax, tt.syntax)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("got error %v; want %v", err, tt.is)
			}
			var se *wirejson.SyntaxError
			if errors.As(err, &se) != tt.syntax {
				t.Errorf("got error %v (%T); want *SyntaxError: %v", err, err, tt.syntax)
			}
			if tt.msg != "" {
				var ve *wirejson.ValueError
				if !errors.As(err, &ve) {
					t.Fatalf("got error %v (%T); want *ValueError", err, err)
				}
				if ve.Path != tt.path || ve.Msg != tt.msg {
					t.Errorf("got path %q msg %q; want path %q msg %q", ve.Path, ve.Msg, tt.path, tt.msg)
				}
			}
			if !proto.Equal(m, m.ProtoReflect().New().Interface()) {
				t.Errorf("after error: got %v; want an empty message", m)
			}
		})
	}
}

func TestUnmarshalErrorText(t *testing.T) {
	t.Parallel()
	var m v1.OpenIMSetGroupInfoExRequest
	err := wirejson.Unmarshal([]byte(`{"groupID": [1]}`), &m)
	if got, want := err.Error(), "wirejson: groupID: want string, got array"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	err = wirejson.Unmarshal([]byte(`{"groupID": "x"`), &m)
	if got, want := err.Error(), "wirejson: syntax error at offset 15: unexpected end of JSON input"; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
}

func TestUnmarshalDepth(t *testing.T) {
	t.Parallel()
	// The top-level object is the first level.
	arrays := func(levels int) string {
		return `{"x":` + strings.Repeat("[", levels-1) + strings.Repeat("]", levels-1) + `}`
	}
	objects := func(levels int) string {
		return `{"x":` + strings.Repeat(`{"a":`, levels-2) + `{}` + strings.Repeat("}", levels-2) + `}`
	}
	tests := []struct {
		name string
		body string
		ok   bool
	}{
		{name: "arrays at the limit", body: arrays(wirejson.MaxDepth), ok: true},
		{name: "arrays past the limit", body: arrays(wirejson.MaxDepth + 1)},
		{name: "objects at the limit", body: objects(wirejson.MaxDepth), ok: true},
		{name: "objects past the limit", body: objects(wirejson.MaxDepth + 1)},
		{name: "wrappers past the limit", body: `{"groupID":` + strings.Repeat(`{"value":`, wirejson.MaxDepth) + `"g"` + strings.Repeat("}", wirejson.MaxDepth) + `}`},
		{name: "far past the limit, unclosed", body: strings.Repeat("[", 100000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := wirejson.Unmarshal([]byte(tt.body), &v1.OpenIMSetGroupInfoExRequest{})
			if tt.ok {
				if err != nil {
					t.Errorf("got error %v; want nil", err)
				}
				return
			}
			if !errors.Is(err, wirejson.ErrTooDeep) {
				t.Errorf("got error %v; want %v", err, wirejson.ErrTooDeep)
			}
		})
	}
}

// TestUnmarshalTruncated cuts valid bodies at every byte: whatever encoding/json finds invalid must
// fail, and nothing may panic.
func TestUnmarshalTruncated(t *testing.T) {
	t.Parallel()
	for _, body := range []string{openIMRealBody, openIMSeedBody, tencentInfoBody, tencentExitBody, `{"a":"\ud83d\ude00","b":-1.5e+10,"c":[true,false,null]}`} {
		for i := range len(body) {
			b := []byte(body[:i])
			err := wirejson.Unmarshal(b, &v1.TencentGroupInfoChangedRequest{})
			if !json.Valid(b) && err == nil {
				t.Errorf("Unmarshal(%q): got nil error; want one (json.Valid is false)", b)
			}
		}
	}
}

func TestNilMessage(t *testing.T) {
	t.Parallel()
	if err := wirejson.Unmarshal([]byte(`{}`), nil); err == nil {
		t.Error("Unmarshal(nil): got nil error; want one")
	}
	if err := wirejson.Unmarshal([]byte(`{}`), (*v1.Event)(nil)); err == nil {
		t.Error("Unmarshal(typed nil): got nil error; want one")
	}
	if _, err := wirejson.Marshal(nil); err == nil {
		t.Error("Marshal(nil): got nil error; want one")
	}
}

func TestMarshal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  proto.Message
		want string
	}{
		{
			name: "openim answer",
			msg:  &v1.OpenIMCallbackResponse{},
			want: `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0}`,
		},
		{
			name: "openim refusal",
			msg:  &v1.OpenIMCallbackResponse{NextCode: 1, ErrCode: 10001, ErrMsg: "no", ErrDlt: "because"},
			want: `{"actionCode":0,"errCode":10001,"errMsg":"no","errDlt":"because","nextCode":1}`,
		},
		{
			name: "tencent answer",
			msg:  &v1.TencentCallbackResponse{ActionStatus: "OK"},
			want: `{"ActionStatus":"OK","ErrorInfo":"","ErrorCode":0}`,
		},
		{
			name: "set group info ex answer: unset optionals are null",
			msg: &v1.OpenIMSetGroupInfoExResponse{
				GroupId:          "g1",
				GroupName:        proto.String("new <name>"),
				Ex:               proto.String(""),
				NeedVerification: proto.Int32(0),
			},
			want: `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0,"groupID":"g1","groupName":"new \u003cname\u003e",` +
				`"notification":null,"introduction":null,"faceURL":null,"ex":"","needVerification":0,"lookMemberInfo":null,"applyMemberFriend":null}`,
		},
		{
			name: "set group info answer",
			msg:  &v1.OpenIMSetGroupInfoResponse{GroupId: "g", LookMemberInfo: proto.Int32(-3)},
			want: `{"actionCode":0,"errCode":0,"errMsg":"","errDlt":"","nextCode":0,"groupID":"g","groupName":"","notification":"",` +
				`"introduction":"","faceURL":"","ex":null,"needVerification":null,"lookMemberInfo":-3,"applyMemberFriend":null}`,
		},
		{
			name: "lists, int64 as number, enums by name, oneof member",
			msg: &v1.Event{
				Id:       "e",
				Sequence: math.MaxUint64,
				Source:   v1.Source_SOURCE_OPENIM,
				Kind:     v1.EventKind(42),
				RawBody:  []byte{0xff, 0xfe, '>'},
				Payload:  &v1.Event_MemberQuit{MemberQuit: &v1.MemberQuit{UserIds: []string{"a", "b"}}},
			},
			want: `{"id":"e","sequence":18446744073709551615,"receivedTime":null,"source":"SOURCE_OPENIM","command":"","phase":"PHASE_UNSPECIFIED",` +
				`"kind":42,"metadata":null,"rawBody":"//4+","decideBy":null,"traceContext":{},"memberQuit":{"groupId":"","groupType":"","userIds":["a","b"],` +
				`"reason":"QUIT_REASON_UNSPECIFIED","operatorUserId":null,"kickReason":""}}`,
		},
		{
			name: "no oneof member set, empty list",
			msg:  &v1.Event{ReceivedTime: &timestamppb.Timestamp{Seconds: -1}},
			want: `{"id":"","sequence":0,"receivedTime":{"seconds":-1,"nanos":0},"source":"SOURCE_UNSPECIFIED","command":"","phase":"PHASE_UNSPECIFIED",` +
				`"kind":"EVENT_KIND_UNSPECIFIED","metadata":null,"rawBody":"","decideBy":null,"traceContext":{}}`,
		},
		{
			name: "tencent request with list of messages",
			msg:  &v1.TencentMemberExitRequest{ExitMemberList: []*v1.TencentMember{{MemberAccount: "a"}, {}}, EventTime: -9223372036854775808},
			want: `{"CallbackCommand":"","GroupId":"","Type":"","ExitType":"","Operator_Account":"","ExitMemberList":[{"Member_Account":"a"},{"Member_Account":""}],"EventTime":-9223372036854775808}`,
		},
		{
			name: "struct: map keys sorted",
			msg:  &structpb.Struct{Fields: map[string]*structpb.Value{"b": structpb.NewNullValue(), "a": structpb.NewNumberValue(0.5)}},
			want: `{"fields":{"a":{"numberValue":0.5},"b":{"nullValue":"NULL_VALUE"}}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := wirejson.Marshal(tt.msg)
			if err != nil {
				t.Fatalf("Marshal: got error %v; want nil", err)
			}
			if string(got) != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("got invalid JSON %s", got)
			}
			// AppendMarshal appends.
			got, err = wirejson.AppendMarshal([]byte("x"), tt.msg)
			if err != nil || string(got) != "x"+tt.want {
				t.Errorf("AppendMarshal: got %s, %v; want x%s, nil", got, err, tt.want)
			}
		})
	}
}

func TestMarshalKitchen(t *testing.T) {
	t.Parallel()
	m := newKitchen()
	in := `{"i64":-1,"u64":"18446744073709551615","fl":1e-7,"db":1e21,"data":"AQI=","color":2,
		"byInt":{"10":"b","-2":"a","9":"c"},"byBool":{"true":1,"false":0},"byU64":{"3":7,"1":"RED"},
		"children":{"β":{"ok":true},"a":{}},"nums":[1,2],"colors":["RED",9],"blobs":[""],"choiceK":{},"floats":[0.1,-2.5e-7,100],"optFl":0}`
	if err := wirejson.Unmarshal([]byte(in), m); err != nil {
		t.Fatal(err)
	}
	got, err := wirejson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	zero := `"i32":0,"i64":0,"u32":0,"u64":0,"s32":0,"s64":0,"fx32":0,"fx64":0,"sfx32":0,"sfx64":0,"fl":0,"db":0,"ok":false,"data":"","color":"COLOR_UNSPECIFIED",` +
		`"byInt":{},"byBool":{},"children":{},"next":null,"nums":[],"colors":[],"blobs":[],"byU64":{},"floats":[],"optData":null,"optFl":null`
	want := `{"i32":0,"i64":-1,"u32":0,"u64":18446744073709551615,"s32":0,"s64":0,"fx32":0,"fx64":0,"sfx32":0,"sfx64":0,"fl":1e-7,"db":1e+21,` +
		`"ok":false,"data":"AQI=","color":"GREEN","byInt":{"-2":"a","9":"c","10":"b"},"byBool":{"false":0,"true":1},` +
		`"children":{"a":{` + zero + `},"β":{` + strings.Replace(zero, `"ok":false`, `"ok":true`, 1) + `}},"next":null,"nums":[1,2],"colors":["RED",9],"blobs":[""],` +
		`"choiceK":{` + zero + `},"byU64":{"1":"RED","3":7},"floats":[0.1,-2.5e-7,100],"optData":null,"optFl":0}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

// TestMarshalStrings checks string escaping against encoding/json byte for byte.
func TestMarshalStrings(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		s    string
	}{
		{name: "html", s: "<b>Tom & Jerry</b>"},
		{name: "newline and tabs", s: "line1\nline2\r\n\tend"},
		{name: "quotes and backslashes", s: `say "hi" \ bye /`},
		{name: "control characters", s: "\x00\x01\b\f\x1f\x7f"},
		{name: "line separators", s: "a\u2028b\u2029c"},
		{name: "non-ASCII", s: "群名称 😀 é"},
		{name: "invalid UTF-8", s: "a\xffb\xe4\xb8 \xed\xa0\x80"},
		{name: "empty", s: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, _ := json.Marshal(tt.s)
			want := `{"actionCode":0,"errCode":0,"errMsg":` + string(s) + `,"errDlt":"","nextCode":0}`
			got, err := wirejson.Marshal(&v1.OpenIMCallbackResponse{ErrMsg: tt.s})
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != want {
				t.Errorf("got %s; want %s", got, want)
			}
		})
	}
}

// TestMarshalFloats checks float formatting against encoding/json.
func TestMarshalFloats(t *testing.T) {
	t.Parallel()
	for _, f := range []float64{0, math.Copysign(0, -1), 1, -1.5, 0.1, 1e-6, 9.99e-7, 1e20, 1e21, 123456789.125, math.MaxFloat64, math.SmallestNonzeroFloat64, 1e-7, 3.4e38, 1.0000001} {
		t.Run(strconv.FormatFloat(f, 'g', -1, 64), func(t *testing.T) {
			t.Parallel()
			got := must(wirejson.Marshal(wrapperspb.Double(f)))
			if want := `{"value":` + string(must(json.Marshal(f))) + `}`; string(got) != want {
				t.Errorf("double: got %s; want %s", got, want)
			}
			f32 := float32(f)
			if math.IsInf(float64(f32), 0) {
				return
			}
			got = must(wirejson.Marshal(wrapperspb.Float(f32)))
			if want := `{"value":` + string(must(json.Marshal(f32))) + `}`; string(got) != want {
				t.Errorf("float: got %s; want %s", got, want)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestMarshalErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{name: "NaN", msg: wrapperspb.Double(math.NaN())},
		{name: "+Inf", msg: wrapperspb.Double(math.Inf(1))},
		{name: "-Inf float", msg: wrapperspb.Float(float32(math.Inf(-1)))},
		{name: "NaN deep in a struct", msg: &structpb.Struct{Fields: map[string]*structpb.Value{"x": structpb.NewNumberValue(math.NaN())}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got, err := wirejson.Marshal(tt.msg); err == nil {
				t.Errorf("got %s, nil; want an error", got)
			}
			dst := []byte("keep")
			if got, err := wirejson.AppendMarshal(dst, tt.msg); err == nil || string(got) != "keep" {
				t.Errorf("AppendMarshal: got %q, %v; want %q and an error", got, err, "keep")
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		msg  proto.Message
	}{
		{name: "openim request", msg: &v1.OpenIMSetGroupInfoExRequest{GroupId: "g", GroupName: proto.String("a<b>&\u2028\x00"), Ex: proto.String(""), ApplyMemberFriend: proto.Int32(math.MinInt32)}},
		{name: "tencent request", msg: &v1.TencentGroupInfoChangedRequest{EventTime: math.MaxInt64, UserDefinedDataList: []*v1.TencentKeyValue{{Key: "k"}, {}}}},
		{name: "event", msg: &v1.Event{Id: "x", RawBody: []byte{0, 1, 2}, Kind: 99, Payload: &v1.Event_GroupInfoChanged{GroupInfoChanged: &v1.GroupInfoChanged{}}}},
		{name: "subscribe request oneof", msg: &v1.SubscribeRequest{Request: &v1.SubscribeRequest_Verdict{Verdict: &v1.VerdictReply{EventId: "e", Verdict: &v1.Verdict{Decision: v1.Decision_DECISION_REFUSE, GroupInfo: &v1.GroupInfoChanged{Name: proto.String("")}}}}}},
		{name: "struct", msg: must(structpb.NewStruct(map[string]any{"a": 1.5, "b": []any{"x", nil, true, map[string]any{}}}))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			b, err := wirejson.Marshal(tt.msg)
			if err != nil {
				t.Fatal(err)
			}
			got := tt.msg.ProtoReflect().New().Interface()
			if err := wirejson.Unmarshal(b, got); err != nil {
				t.Fatalf("Unmarshal(%s): %v", b, err)
			}
			if !proto.Equal(got, tt.msg) {
				t.Errorf("got %v; want %v", got, tt.msg)
			}
		})
	}
}

// Plain structs as an encoding/json user would write them, for the comparison benchmark.
type openIMSetGroupInfoEx struct {
	CallbackCommand   string  `json:"callbackCommand"`
	OperationID       string  `json:"operationID"`
	GroupID           string  `json:"groupID"`
	GroupName         *string `json:"groupName"`
	Notification      *string `json:"notification"`
	Introduction      *string `json:"introduction"`
	FaceURL           *string `json:"faceURL"`
	Ex                *string `json:"ex"`
	NeedVerification  *int32  `json:"needVerification"`
	LookMemberInfo    *int32  `json:"lookMemberInfo"`
	ApplyMemberFriend *int32  `json:"applyMemberFriend"`
}

type tencentGroupInfoChanged struct {
	CallbackCommand     string  `json:"CallbackCommand"`
	GroupID             string  `json:"GroupId"`
	Type                string  `json:"Type"`
	OperatorAccount     string  `json:"Operator_Account"`
	Name                *string `json:"Name"`
	Introduction        *string `json:"Introduction"`
	Notification        *string `json:"Notification"`
	FaceURL             *string `json:"FaceUrl"`
	UserDefinedDataList []struct {
		Key   string `json:"Key"`
		Value string `json:"Value"`
	} `json:"UserDefinedDataList"`
	EventTime int64 `json:"EventTime"`
}

var benchBodies = []struct {
	name  string
	body  []byte
	msg   func() proto.Message
	plain func() any
}{
	{
		name:  "openim",
		body:  []byte(openIMRealBody),
		msg:   func() proto.Message { return new(v1.OpenIMSetGroupInfoExRequest) },
		plain: func() any { return new(openIMSetGroupInfoEx) },
	},
	{
		name:  "tencent",
		body:  []byte(tencentInfoBody),
		msg:   func() proto.Message { return new(v1.TencentGroupInfoChangedRequest) },
		plain: func() any { return new(tencentGroupInfoChanged) },
	},
}

func BenchmarkUnmarshal(b *testing.B) {
	for _, bb := range benchBodies {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				if err := wirejson.Unmarshal(bb.body, bb.msg()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncodingJSON(b *testing.B) {
	for _, bb := range benchBodies {
		b.Run(bb.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bb.body)))
			for b.Loop() {
				if err := json.Unmarshal(bb.body, bb.plain()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkMarshal(b *testing.B) {
	msg := &v1.OpenIMSetGroupInfoExResponse{GroupId: "g1", GroupName: proto.String("new <name>"), Ex: proto.String(""), NeedVerification: proto.Int32(1)}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := wirejson.Marshal(msg); err != nil {
			b.Fatal(err)
		}
	}
}
