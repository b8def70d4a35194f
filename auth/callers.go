package auth

import (
	"crypto/subtle"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Refusal is why an IM server's request is refused: the HTTP status (401 for missing or wrong
// credentials, 403 for a place or an app not allowed) and what was wrong, never the secret.
type Refusal struct {
	Status int
	Msg    string
}

// TencentMaxSkew is how far RequestTime may be from now: Tencent's guidance against replays.
const TencentMaxSkew = 60 * time.Second

// CheckOpenIM checks an OpenIM callback: the peer's address, the path secret and the Basic
// credentials, as configured. rest is the path after "/openim/"; the command is what follows the
// secret segment, when one is configured.
func (r *Rules) CheckOpenIM(remoteAddr string, header http.Header, rest string) (command string, ref *Refusal) {
	o := &r.openim
	if !allowedAddr(o.allowed, remoteAddr) {
		return "", &Refusal{http.StatusForbidden, "OpenIM callbacks are not taken from " + hostOf(remoteAddr)}
	}
	command = rest
	if o.pathSecret != nil {
		secret, cmd, ok := strings.Cut(rest, "/")
		if !ok || !equalSHA256(secret, o.pathSecret) {
			return "", &Refusal{http.StatusUnauthorized, "missing or wrong path secret: OpenIM's url must end in /openim/<secret>"}
		}
		command = cmd
	}
	if o.basicPass != nil {
		if ref := r.checkBasic(header.Get("Authorization")); ref != nil {
			return "", ref
		}
	}
	return command, nil
}

// checkBasic checks OpenIM's HTTP Basic credentials (Authorization header or gRPC metadata).
func (r *Rules) checkBasic(authorization string) *Refusal {
	user, pass, ok := parseBasic(authorization)
	if !ok {
		return &Refusal{http.StatusUnauthorized, "missing Basic credentials: put them in OpenIM's url (http://user:password@host/openim)"}
	}
	// Both compared in constant time, whatever the first gave.
	userOK := subtle.ConstantTimeCompare([]byte(user), []byte(r.openim.basicUser)) == 1
	passOK := equalSHA256(pass, r.openim.basicPass)
	if !userOK || !passOK {
		return &Refusal{http.StatusUnauthorized, "wrong Basic credentials"}
	}
	return nil
}

// parseBasic reads "Basic base64(user:password)", as net/http's Request.BasicAuth does.
func parseBasic(authorization string) (user, pass string, ok bool) {
	req := http.Request{Header: http.Header{"Authorization": {authorization}}}
	return req.BasicAuth()
}

// CheckTencent checks a Tencent callback: the peer's address, the app (SdkAppid), and for an app
// with a token, RequestTime within TencentMaxSkew of now and Sign = hex(SHA-256(token +
// RequestTime)).
func (r *Rules) CheckTencent(remoteAddr string, q url.Values, now time.Time) *Refusal {
	t := &r.tencent
	if !allowedAddr(t.allowed, remoteAddr) {
		return &Refusal{http.StatusForbidden, "Tencent callbacks are not taken from " + hostOf(remoteAddr)}
	}
	if t.apps == nil {
		return nil
	}
	token, ok := t.apps[q.Get("SdkAppid")]
	if !ok {
		return &Refusal{http.StatusForbidden, "SdkAppid is not an app of this bridge"}
	}
	if token == "" {
		return nil
	}
	reqTime := q.Get("RequestTime")
	secs, err := strconv.ParseInt(reqTime, 10, 64)
	if err != nil {
		return &Refusal{http.StatusUnauthorized, "missing or bad RequestTime"}
	}
	if d := now.Sub(time.Unix(secs, 0)); d > TencentMaxSkew || d < -TencentMaxSkew {
		return &Refusal{http.StatusUnauthorized, "RequestTime too far from now"}
	}
	if !validTencentSign(token, reqTime, q.Get("Sign")) {
		return &Refusal{http.StatusUnauthorized, "bad Sign"}
	}
	return nil
}

// validTencentSign checks Sign = lowercase hex(SHA-256(token + RequestTime)), in constant time.
func validTencentSign(token, reqTime, sign string) bool {
	return subtle.ConstantTimeCompare([]byte(HashSecret(token+reqTime)), []byte(sign)) == 1
}

// hostOf is the address part of "host:port", for messages.
func hostOf(remoteAddr string) string {
	if i := strings.LastIndexByte(remoteAddr, ':'); i > 0 {
		return strings.Trim(remoteAddr[:i], "[]")
	}
	return remoteAddr
}
