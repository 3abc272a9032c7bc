// Package links signs and checks signed download links (issue 23): a
// download route's URL that works without an API token, bound to an
// account, a media id (in the path), a disposition, a file name, the
// token that minted it and an expiry, under an HMAC-SHA256 key.
//
// The format, which an app can produce itself: the download route's path
// and these query parameters, each given once, and no others:
//
//	acct  the account's id
//	disp  inline or attachment, or empty
//	name  the file name, or empty
//	exp   the expiry, in Unix seconds
//	mint  the first 16 hex digits of the SHA-256 of the API token that minted it
//	kid   the first 8 hex digits of the SHA-256 of the key that signed it
//	sig   base64url, without padding, of HMAC-SHA256(key, canonical)
//
// where canonical is "whatsapp-media-link-v1\n", then the path as sent
// (escaped), acct, disp, name, exp and mint, each as its length in bytes
// (decimal), ":", itself and "\n", so that no field can borrow from the
// next.
// The host is not signed: a link works on every instance of a fleet.
package links

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Link is what a signed link is bound to.
type Link struct {
	Path        string // the download route's escaped path: /v2/media/{id}/download
	Account     string
	Disposition string
	Filename    string
	Expires     time.Time
	Minter      string // the first 16 hex digits of the minting token's SHA-256
}

// The errors of Verify.
var (
	ErrInvalid = errors.New("the link is not valid: a part of it was changed, or its key is unknown")
	ErrExpired = errors.New("the link has expired")
)

// MinKeyLen is the shortest key accepted.
const MinKeyLen = 32

// params are the query parameters of a link.
var params = []string{"acct", "disp", "name", "exp", "mint", "kid", "sig"}

// KeyID is the id a link names its key by.
func KeyID(key []byte) string {
	d := sha256.Sum256(key)
	return hex.EncodeToString(d[:4])
}

// MinterID is the id a link names its minting token by.
func MinterID(token string) string {
	d := sha256.Sum256([]byte(token))
	return hex.EncodeToString(d[:8])
}

func canonical(l Link) []byte {
	var b strings.Builder
	b.WriteString("whatsapp-media-link-v1\n")
	for _, field := range []string{l.Path, l.Account, l.Disposition, l.Filename,
		strconv.FormatInt(l.Expires.Unix(), 10), l.Minter} {
		b.WriteString(strconv.Itoa(len(field)))
		b.WriteByte(':')
		b.WriteString(field)
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

func mac(key []byte, l Link) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(canonical(l))
	return m.Sum(nil)
}

// Sign returns the query of a link to l, signed with key.
func Sign(key []byte, l Link) url.Values {
	return url.Values{
		"acct": {l.Account}, "disp": {l.Disposition}, "name": {l.Filename},
		"exp": {strconv.FormatInt(l.Expires.Unix(), 10)}, "mint": {l.Minter},
		"kid": {KeyID(key)}, "sig": {base64.RawURLEncoding.EncodeToString(mac(key, l))},
	}
}

// IsLink reports whether a query is meant as a link (it has a signature).
func IsLink(q url.Values) bool { return q.Has("sig") }

// Verify checks the link made of path and q against keys (any of them
// may have signed it) at now, and returns what it is bound to. A link
// whose parts were changed, that names an unknown key, or that carries
// any other parameter is ErrInvalid; a valid one past its expiry,
// ErrExpired.
func Verify(keys [][]byte, path string, q url.Values, now time.Time) (Link, error) {
	for k, v := range q {
		if len(v) != 1 || !contains(params, k) {
			return Link{}, ErrInvalid
		}
	}
	exp, err := strconv.ParseInt(q.Get("exp"), 10, 64)
	if err != nil {
		return Link{}, ErrInvalid
	}
	sig, err := base64.RawURLEncoding.DecodeString(q.Get("sig"))
	if err != nil || len(sig) != sha256.Size {
		return Link{}, ErrInvalid
	}
	l := Link{Path: path, Account: q.Get("acct"), Disposition: q.Get("disp"), Filename: q.Get("name"),
		Expires: time.Unix(exp, 0), Minter: q.Get("mint")}
	for _, key := range keys {
		if KeyID(key) == q.Get("kid") && hmac.Equal(mac(key, l), sig) {
			if !now.Before(l.Expires) {
				return l, ErrExpired
			}
			return l, nil
		}
	}
	return Link{}, ErrInvalid
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
