package whatsappmedia

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

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

func cleanToken(t string) string {
	t = strings.TrimSpace(t)
	if len(t) > maxTokenLength || strings.ContainsAny(t, " \t") {
		return ""
	}
	return t
}

// The access rules, applied in this order, the first that fails answering:
//
//  1. a known API token (401 UNAUTHORIZED);
//  2. a linked WhatsApp account, that is a Meta token (404 NOT_FOUND);
//  3. a plan that has not expired (403 PLAN_EXPIRED);
//  4. one of allowed_plans (403 DEVELOPER_PLAN_REQUIRED);
//  5. a phoneNumberId, where one is given, that belongs to the account
//     (403 FORBIDDEN), checked as soon as the request names it.

// authenticate applies access rules 1 to 4 and returns the caller's
// account or the first failing rule's answer. It reads only headers: no
// byte of the request body.
func (h *Handler) authenticate(r *http.Request) (*Account, *apiError) {
	token := apiToken(r.Header)
	if token == "" {
		return nil, errUnauthorized
	}
	acct, err := h.accounts.Lookup(r.Context(), token)
	switch {
	case errors.Is(err, ErrUnknownToken):
		return nil, errUnauthorized
	case err != nil:
		return nil, errAuthUnavailable.withCause(err)
	case acct == nil:
		return nil, errUnauthorized
	}
	if ae := h.checkAccount(acct, h.now()); ae != nil {
		return acct, ae
	}
	return acct, nil
}

// checkAccount applies access rules 2 to 4 to a known account.
func (h *Handler) checkAccount(acct *Account, now time.Time) *apiError {
	if acct.MetaToken == "" {
		return errNoWhatsAppAccount
	}
	if !acct.PlanExpires.IsZero() && !now.Before(acct.PlanExpires) {
		return errPlanExpired
	}
	for _, p := range h.AllowedPlans {
		if strings.EqualFold(p, strings.TrimSpace(acct.Plan)) {
			return nil
		}
	}
	return errPlanRequired
}

// authorizePhone checks a phone number id's format, then applies access
// rule 5 to it.
func authorizePhone(acct *Account, phoneNumberID string) *apiError {
	if !validPhoneID(phoneNumberID) {
		return errBadPhoneID
	}
	if !acct.OwnsPhoneNumber(phoneNumberID) {
		return errPhoneForbidden
	}
	return nil
}

// validPhoneID reports whether s has the shape of a Meta phone number id.
func validPhoneID(s string) bool { return media.IsDigits(s, 64) }
