// Package examples holds callbacks as IM servers send them: the seed documents' examples and the real
// servers' forms (bare values, nulls, \u003c escapes, trailing newline). `imbridge send` posts them,
// and the tests and the benchmark use the same bodies.
package examples

import (
	"embed"
	"fmt"
	"sort"
)

//go:embed callbacks/*.json
var files embed.FS

// Vendor names the IM server an example comes from.
type Vendor string

// Vendors.
const (
	OpenIM  Vendor = "openim"
	Tencent Vendor = "tencent"
)

// Example is one callback.
type Example struct {
	Name    string // file name without .json
	Vendor  Vendor
	Command string
	Body    []byte
}

var all = []struct {
	name    string
	vendor  Vendor
	command string
}{
	{"openim-after-set-group-info-ex", OpenIM, "callbackAfterSetGroupInfoExCommand"},
	{"openim-after-set-group-info-ex-documented", OpenIM, "callbackAfterSetGroupInfoExCommand"},
	{"openim-after-set-group-info", OpenIM, "callbackAfterSetGroupInfoCommand"},
	{"openim-after-quit-group", OpenIM, "callbackAfterQuitGroupCommand"},
	{"openim-after-kick-group", OpenIM, "callbackAfterKickGroupCommand"},
	{"openim-before-set-group-info-ex", OpenIM, "callbackBeforeSetGroupInfoExCommand"},
	{"openim-before-set-group-info", OpenIM, "callbackBeforeSetGroupInfoCommand"},
	{"openim-after-transfer-group-owner", OpenIM, "callbackAfterTransferGroupOwnerCommand"},
	{"tencent-after-group-info-changed", Tencent, "Group.CallbackAfterGroupInfoChanged"},
	{"tencent-after-member-exit", Tencent, "Group.CallbackAfterMemberExit"},
	{"tencent-after-new-member-join", Tencent, "Group.CallbackAfterNewMemberJoin"},
}

// Get returns the example called name.
func Get(name string) (Example, error) {
	for _, e := range all {
		if e.name == name {
			b, err := files.ReadFile("callbacks/" + name + ".json")
			if err != nil {
				return Example{}, err
			}
			return Example{Name: e.name, Vendor: e.vendor, Command: e.command, Body: b}, nil
		}
	}
	return Example{}, fmt.Errorf("no example %q (have: %v)", name, Names())
}

// Must is Get for names known to exist; it panics otherwise.
func Must(name string) Example {
	e, err := Get(name)
	if err != nil {
		panic(err)
	}
	return e
}

// Names lists the examples.
func Names() []string {
	out := make([]string, 0, len(all))
	for _, e := range all {
		out = append(out, e.name)
	}
	sort.Strings(out)
	return out
}
