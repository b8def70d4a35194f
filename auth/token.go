package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
)

// tokenPrefix marks imbridge tokens, so that a leaked one is recognized by secret scanners.
const tokenPrefix = "imb_"

// NewToken returns a new random bearer token (256 bits) and its hex SHA-256, the value for a
// subscriber's token_sha256.
func NewToken() (token, sum string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (it panics if the OS cannot supply)
	token = tokenPrefix + base64.RawURLEncoding.EncodeToString(b)
	return token, HashSecret(token)
}

// HashSecret is the hex SHA-256 of a secret: the form a token, OpenIM's Basic password or its path
// secret takes in the configuration.
func HashSecret(secret string) string {
	s := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(s[:])
}
