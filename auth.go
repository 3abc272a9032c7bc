package whatsappmedia

import (
	"errors"
	"net/http"
	"strings"
	"time"
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

// authenticate applies rules 1 to 4 of the contract's section 3, in order,
// and returns the caller's account or the first rule's answer. It reads
// only headers: no byte of the request body.
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

// checkAccount applies rules 2 to 4 to a known account.
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

// authorizePhone applies rule 5.
func authorizePhone(acct *Account, phoneNumberID string) *apiError {
	if !acct.OwnsPhoneNumber(phoneNumberID) {
		return errPhoneForbidden
	}
	return nil
}
