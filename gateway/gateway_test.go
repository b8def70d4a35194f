package gateway

import "testing"

func TestCleanPath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/openim/cmd":     "/openim/cmd",
		"/openim//cmd":    "/openim/cmd",
		"//openim///cmd/": "/openim/cmd/",
	} {
		if got := cleanPath(in); got != want {
			t.Errorf("cleanPath(%q) = %q; want %q", in, got, want)
		}
	}
}
