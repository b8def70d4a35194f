package gateway

import (
	"net/http"
	"net/url"
	"testing"
	"time"
)

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

// TestTencentSign uses Tencent's published example: token xxxxyyyy, RequestTime 1669872112.
func TestTencentSign(t *testing.T) {
	t.Parallel()
	const sign = "17773bc39a671d7b9aa835458704d2a6db81360a5940292b587d6d760d484061"
	h := &Handler{opts: Options{TencentToken: "xxxxyyyy", TencentSdkAppID: "1400000000"}}
	at := time.Unix(1669872112, 0)
	tests := []struct {
		name   string
		query  string
		now    time.Time
		status int
	}{
		{"valid", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign, at.Add(30 * time.Second), 0},
		{"other app", "SdkAppid=1&RequestTime=1669872112&Sign=" + sign, at, http.StatusForbidden},
		{"bad sign", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign[:63] + "0", at, http.StatusUnauthorized},
		{"replayed", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign, at.Add(61 * time.Second), http.StatusUnauthorized},
		{"from the future", "SdkAppid=1400000000&RequestTime=1669872112&Sign=" + sign, at.Add(-61 * time.Second), http.StatusUnauthorized},
		{"no time", "SdkAppid=1400000000&Sign=" + sign, at, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		q, err := url.ParseQuery(tt.query)
		if err != nil {
			t.Fatal(err)
		}
		if got, msg := h.checkTencent(q, tt.now); got != tt.status {
			t.Errorf("%s: status %d (%s); want %d", tt.name, got, msg, tt.status)
		}
	}
}
