package main

import (
	"flag"
	"os"
	"strings"
	"testing"

	"github.com/imbridge/imbridge/app"
)

var update = flag.Bool("update", false, "rewrite the README's generated parts")

// The README's reference of serve's flags is generated from the flag set, so that it cannot drift.
const (
	flagsBegin = "<!-- serve flags: generated from the flag set; go test ./cmd/imbridge -run TestREADMEFlags -update -->\n"
	flagsEnd   = "<!-- end of serve flags -->"
)

func TestREADMEFlags(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	start, end := strings.Index(readme, flagsBegin), strings.Index(readme, flagsEnd)
	if start < 0 || end < start {
		t.Fatalf("README has no generated flag table (between %q and %q)", flagsBegin, flagsEnd)
	}
	fs, _ := newServeFlags(&app.Config{})
	want := flagTable(fs)
	if got := readme[start+len(flagsBegin) : end]; got != want {
		if !*update {
			t.Fatalf("README's flag table is stale: run go test ./cmd/imbridge -run TestREADMEFlags -update\nwant:\n%s", want)
		}
		readme = readme[:start+len(flagsBegin)] + want + readme[end:]
		if err := os.WriteFile(path, []byte(readme), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
