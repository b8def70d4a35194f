package main

import (
	"runtime/debug"
)

// version is set at build time (make build: -ldflags "-X main.version=..."); without it the
// module version and VCS revision Go recorded in the binary are used.
var version string

// buildVersion is what `imbridge --version`, /healthz and the startup line report.
func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v := bi.Main.Version
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev != "" {
		v += "+" + rev[:min(12, len(rev))] + dirty
	}
	return v
}
