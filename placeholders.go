package whatsappmedia

import (
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
)

// The handler's placeholders, for logs and headers. The README lists them.
const (
	varAccount = "http.whatsapp_media.account"
	varPhone   = "http.whatsapp_media.phone_number_id"
	varMediaID = "http.whatsapp_media.media_id"
	varBytes   = "http.whatsapp_media.bytes"
	varError   = "http.whatsapp_media.error"
)

func replacer(r *http.Request) *caddy.Replacer {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	return repl
}

// placeholder returns a placeholder's value set for r.
func placeholder(r *http.Request, name string) (string, bool) {
	if repl := replacer(r); repl != nil {
		return repl.GetString(name)
	}
	return "", false
}

func setVar(r *http.Request, name, value string) {
	if repl := replacer(r); repl != nil {
		repl.Set(name, value)
	}
}

// setAccountVars names the caller's account, also as Caddy's
// {http.auth.user.id}, which the access log records as user_id.
func setAccountVars(r *http.Request, acct *Account) {
	setVar(r, "http.auth.user.id", acct.ID)
	setVar(r, varAccount, acct.ID)
}

func setPhoneVar(r *http.Request, phone string) { setVar(r, varPhone, phone) }

func setMediaVars(r *http.Request, mediaID string, n int64) {
	setVar(r, varMediaID, mediaID)
	setVar(r, varBytes, strconv.FormatInt(n, 10))
}

func setErrorVar(r *http.Request, code string) { setVar(r, varError, code) }
