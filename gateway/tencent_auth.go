package gateway

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// tencentMaxSkew is how far RequestTime may be from now: Tencent's guidance against replays.
const tencentMaxSkew = 60 * time.Second

// checkTencent applies the configured Tencent checks and returns 0 or the status to refuse with.
func (h *Handler) checkTencent(q url.Values, now time.Time) (int, string) {
	if want := h.opts.TencentSdkAppID; want != "" && q.Get("SdkAppid") != want {
		return http.StatusForbidden, "SdkAppid does not match this bridge's app"
	}
	if h.opts.TencentToken == "" {
		return 0, ""
	}
	reqTime := q.Get("RequestTime")
	secs, err := strconv.ParseInt(reqTime, 10, 64)
	if err != nil {
		return http.StatusUnauthorized, "missing or bad RequestTime"
	}
	if d := now.Sub(time.Unix(secs, 0)); d > tencentMaxSkew || d < -tencentMaxSkew {
		return http.StatusUnauthorized, "RequestTime too far from now"
	}
	if !validTencentSign(h.opts.TencentToken, reqTime, q.Get("Sign")) {
		return http.StatusUnauthorized, "bad Sign"
	}
	return 0, ""
}

// validTencentSign checks Sign = lowercase hex(SHA-256(token + RequestTime)), in constant time.
func validTencentSign(token, reqTime, sign string) bool {
	sum := sha256.Sum256([]byte(token + reqTime))
	want := make([]byte, hex.EncodedLen(len(sum)))
	hex.Encode(want, sum[:])
	return subtle.ConstantTimeCompare(want, []byte(sign)) == 1
}
