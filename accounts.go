package whatsappmedia

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Account is what an account source knows about the owner of an API
// token: enough to apply the access rules (auth.go) and to call Meta on
// the account's behalf.
type Account struct {
	// ID names the account in logs and placeholders (never a secret).
	ID string
	// Plan is the name of the account's primary plan, e.g. "premium".
	Plan string
	// PlanExpires is when the primary plan ends; zero means never.
	PlanExpires time.Time
	// MetaToken is the access token of the linked WhatsApp Business
	// account; empty means no linked account.
	MetaToken string
	// PhoneNumberIDs are the Meta phone number ids that belong to the
	// account.
	PhoneNumberIDs []string
}

// OwnsPhoneNumber reports whether id is one of the account's phone numbers.
func (a *Account) OwnsPhoneNumber(id string) bool {
	return slices.Contains(a.PhoneNumberIDs, id)
}

// AccountSource looks up the account of an API token. Account sources are
// guest modules in the namespace http.handlers.whatsapp_media.accounts.
type AccountSource interface {
	// Lookup returns the account that token belongs to. It returns
	// ErrUnknownToken when the token is unknown or revoked; any other
	// error means the source could not answer, and the gateway fails
	// closed (503 AUTH_UNAVAILABLE). The token must never be logged.
	Lookup(ctx context.Context, token string) (*Account, error)
}

// ErrUnknownToken is returned by an AccountSource for a token it does not
// know.
var ErrUnknownToken = errors.New("unknown api token")
