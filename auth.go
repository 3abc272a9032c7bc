package whatsappmedia

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// The access rules, applied in this order, the first that fails answering:
//
//  1. a known API token (401 UNAUTHORIZED);
//  2. a linked WhatsApp account, that is a Meta token (404 NOT_FOUND);
//  3. a plan that has not expired (403 PLAN_EXPIRED);
//  4. one of allowed_plans (403 DEVELOPER_PLAN_REQUIRED);
//  5. a phoneNumberId, where one is given, that belongs to the account
//     (403 FORBIDDEN), checked as soon as the request names it.

// authenticate applies access rules 1 to 4 and returns the caller's
// account, when the token is known, and the first failing rule's answer. It reads only headers: no
// byte of the request body.
func (h *Handler) authenticate(r *http.Request) (*Account, *apiError) {
	token := apiToken(r.Header)
	if token == "" {
		return nil, unauthorized(r.Header)
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
	return acct, h.checkAccount(acct, h.now())
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
