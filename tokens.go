package whatsappmedia

import (
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strings"
)

// API tokens: how a request carries one, and the SHA-256 that stands for
// a token everywhere the gateway keeps or passes one on (static accounts'
// token_sha256, the introspection cache's keys, the purge endpoint and
// the purge channel). No raw token is kept past the request.

// maxTokenLength bounds the API token we accept; real tokens are far
// shorter, and a bound keeps hostile headers away from the account source.
const maxTokenLength = 4096

// apiToken extracts the caller's API token: `Authorization: Bearer <token>`
// (scheme word case-insensitive) or `X-API-Token: <token>`; Authorization
// wins when both are present. It returns "" when there is no usable token,
// including when a header is repeated (an ambiguous request is refused
// rather than guessed at).
func apiToken(h http.Header) string {
	if vals := h.Values("Authorization"); len(vals) > 0 {
		if len(vals) > 1 {
			return ""
		}
		scheme, token, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return cleanToken(token)
		}
		// Another scheme (Basic, ...) is not ours: fall through to
		// X-API-Token, which some clients add next to a proxy's
		// Authorization header.
	}
	vals := h.Values("X-API-Token")
	if len(vals) != 1 {
		return ""
	}
	return cleanToken(vals[0])
}

// unauthorized is the 401 for a request that carries no usable token,
// with a hint where the headers show the likely mistake.
func unauthorized(h http.Header) *apiError {
	auth := h.Values("Authorization")
	hint := ""
	switch {
	case len(auth) > 1 || len(h.Values("X-API-Token")) > 1:
		hint = "; give the token once"
	case len(auth) == 1 && len(h.Values("X-API-Token")) == 0:
		switch scheme, _, ok := strings.Cut(strings.TrimSpace(auth[0]), " "); {
		case strings.EqualFold(scheme, "Bearer"):
		case !ok:
			hint = `; the Authorization header needs the word Bearer: "Authorization: Bearer <token>"`
		default:
			hint = `; send the token as "Authorization: Bearer <token>" or in X-API-Token`
		}
	}
	if hint == "" {
		return errUnauthorized
	}
	ae := *errUnauthorized
	ae.Message += hint
	return &ae
}

func cleanToken(t string) string {
	t = strings.TrimSpace(t)
	if len(t) > maxTokenLength || strings.ContainsAny(t, " \t") {
		return ""
	}
	return t
}

// tokenKey is the SHA-256 of a token, the key it is known by.
func tokenKey(token string) [sha256.Size]byte { return sha256.Sum256([]byte(token)) }

// hashToken returns the lowercase hex SHA-256 of token.
func hashToken(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:])
}

// parseTokenHash parses the hex SHA-256 of a token.
func parseTokenHash(s string) ([sha256.Size]byte, bool) {
	var key [sha256.Size]byte
	if len(s) != 2*sha256.Size {
		return key, false
	}
	_, err := hex.Decode(key[:], []byte(s))
	return key, err == nil
}
