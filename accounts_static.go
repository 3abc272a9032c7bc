package whatsappmedia

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

func init() {
	caddy.RegisterModule(StaticAccounts{})
}

// StaticAccounts is an account source whose accounts are written in the
// config. It suits the local demo, tests and small deployments; in front of
// the AvenPing app, use the introspect source.
type StaticAccounts struct {
	// Accounts maps an account's name (used as its id in logs) to the
	// account.
	Accounts map[string]*StaticAccount `json:"accounts,omitempty"`

	entries []staticEntry
}

// StaticAccount is one account of the static account source.
type StaticAccount struct {
	// Token is the account's API token in plain text. Prefer
	// token_sha256, which keeps the token itself out of the config.
	// Placeholders such as {env.*} and {file.*} are expanded at provision
	// time. Exactly one of token and token_sha256 is required.
	Token string `json:"token,omitempty"`

	// TokenSHA256 is the lowercase hex SHA-256 digest of the account's API
	// token. Placeholders are expanded at provision time.
	TokenSHA256 string `json:"token_sha256,omitempty"`

	// Plan is the account's primary plan, such as premium, enterprise or
	// developer. Only the handler's allowed plans may use the media
	// routes.
	Plan string `json:"plan,omitempty"`

	// PlanExpires is when the plan ends (RFC 3339). Absent means it never
	// expires.
	PlanExpires time.Time `json:"plan_expires,omitzero"`

	// MetaToken is the Meta access token of the account's linked WhatsApp
	// Business account, normally a placeholder such as
	// {env.ACME_META_TOKEN}, expanded at provision time so that it never
	// appears in the config. Absent means the account has no linked
	// WhatsApp account (404 NOT_FOUND).
	MetaToken string `json:"meta_token,omitempty"`

	// PhoneNumbers are the Meta phone number ids that belong to the
	// account.
	PhoneNumbers []string `json:"phone_numbers,omitempty"`
}

type staticEntry struct {
	digest  [sha256.Size]byte
	account *Account
}

// CaddyModule returns the Caddy module information.
func (StaticAccounts) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.whatsapp_media.accounts.static",
		New: func() caddy.Module { return new(StaticAccounts) },
	}
}

// Provision expands placeholders in the secrets and hashes the tokens.
// A secret whose placeholder expands to nothing (an unset environment
// variable) is not an error, so that `caddy validate` works without the
// production environment: an account without a token is left out with a
// warning, and one without a Meta token answers 404 NOT_FOUND, like any
// account with no linked WhatsApp account (access rule 2, auth.go).
func (s *StaticAccounts) Provision(ctx caddy.Context) error {
	logger := ctx.Logger()
	repl := caddy.NewReplacer()
	names := make([]string, 0, len(s.Accounts))
	for name := range s.Accounts {
		names = append(names, name)
	}
	sort.Strings(names)
	s.entries = nil
	seen := make(map[[sha256.Size]byte]string, len(names))
	for _, name := range names {
		a := s.Accounts[name]
		if a == nil {
			return fmt.Errorf("account %q: empty", name)
		}
		if a.Token != "" && a.TokenSHA256 != "" {
			return fmt.Errorf("account %q: token and token_sha256 are exclusive", name)
		}
		if a.Token == "" && a.TokenSHA256 == "" {
			return fmt.Errorf("account %q: token or token_sha256 is required", name)
		}
		for _, id := range a.PhoneNumbers {
			if !media.IsDigits(id, 64) {
				return fmt.Errorf("account %q: phone number id %q is not all digits", name, id)
			}
		}
		token := strings.TrimSpace(repl.ReplaceKnown(a.Token, ""))
		digestHex := strings.TrimSpace(repl.ReplaceKnown(a.TokenSHA256, ""))
		metaToken := strings.TrimSpace(repl.ReplaceKnown(a.MetaToken, ""))
		var e staticEntry
		switch {
		case token != "":
			e.digest = tokenKey(token)
		case digestHex != "":
			var ok bool
			if e.digest, ok = parseTokenHash(digestHex); !ok {
				return fmt.Errorf("account %q: token_sha256 must be %d hex digits", name, 2*sha256.Size)
			}
		default:
			logger.Warn("account has an empty token after expanding placeholders; it is disabled",
				zap.String("account", name))
			continue
		}
		if other, dup := seen[e.digest]; dup {
			return fmt.Errorf("accounts %q and %q have the same token", other, name)
		}
		seen[e.digest] = name
		if metaToken == "" && a.MetaToken != "" {
			logger.Warn("account's meta_token expands to nothing; its media requests will answer 404",
				zap.String("account", name))
		}
		e.account = &Account{
			ID:             name,
			Plan:           a.Plan,
			PlanExpires:    a.PlanExpires,
			MetaToken:      metaToken,
			PhoneNumberIDs: a.PhoneNumbers,
		}
		s.entries = append(s.entries, e)
	}
	return nil
}

// Lookup compares the token's digest with every account's in constant
// time, with no early exit, so the answer's timing says nothing about
// which bytes matched or which account it found.
func (s *StaticAccounts) Lookup(_ context.Context, token string) (*Account, error) {
	d := tokenKey(token)
	var found *Account
	for i := range s.entries {
		if subtle.ConstantTimeCompare(d[:], s.entries[i].digest[:]) == 1 {
			found = s.entries[i].account
		}
	}
	if found == nil {
		return nil, ErrUnknownToken
	}
	return found, nil
}

// UnmarshalCaddyfile sets up the static account source from Caddyfile
// tokens. Syntax:
//
//	accounts static {
//	    account <name> {
//	        token         <api token>
//	        token_sha256  <hex sha-256 of the api token>
//	        plan          <plan name>
//	        plan_expires  <RFC 3339 time>
//	        meta_token    <meta access token>
//	        phone_numbers <id...>
//	    }
//	}
//
// Secrets accept {env.*} and {file.*} placeholders, expanded at provision
// time so that they never appear in the adapted JSON.
func (s *StaticAccounts) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the source name ("static")
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		if d.Val() != "account" {
			return d.Errf("unrecognized accounts static option '%s'", d.Val())
		}
		var name string
		if !d.Args(&name) {
			return d.ArgErr()
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		if _, dup := s.Accounts[name]; dup {
			return d.Errf("account '%s' is defined twice", name)
		}
		a := new(StaticAccount)
		for d.NextBlock(1) {
			if err := a.unmarshalOption(d, name); err != nil {
				return err
			}
		}
		if (a.Token == "") == (a.TokenSHA256 == "") {
			return d.Errf("account '%s' needs exactly one of token and token_sha256", name)
		}
		if s.Accounts == nil {
			s.Accounts = make(map[string]*StaticAccount)
		}
		s.Accounts[name] = a
	}
	return nil
}

// unmarshalOption parses one option of account name's block.
func (a *StaticAccount) unmarshalOption(d *caddyfile.Dispenser, name string) error {
	switch opt := d.Val(); opt {
	case "token":
		return parseStringArg(d, &a.Token, nil)
	case "token_sha256":
		return parseStringArg(d, &a.TokenSHA256, func(v string) error {
			if _, ok := parseTokenHash(v); !ok && !strings.Contains(v, "{") {
				return fmt.Errorf("account '%s': token_sha256 must be %d hex digits", name, 2*sha256.Size)
			}
			return nil
		})
	case "plan":
		return parseStringArg(d, &a.Plan, nil)
	case "plan_expires":
		var v string
		if err := parseStringArg(d, &v, nil); err != nil {
			return err
		}
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return d.Errf("account '%s': plan_expires must be an RFC 3339 time such as 2027-01-01T00:00:00Z: %v", name, err)
		}
		a.PlanExpires = t
		return nil
	case "meta_token":
		return parseStringArg(d, &a.MetaToken, nil)
	case "phone_numbers":
		ids := d.RemainingArgs()
		if len(ids) == 0 {
			return d.ArgErr()
		}
		for _, id := range ids {
			if !media.IsDigits(id, 64) {
				return d.Errf("account '%s': phone_numbers: '%s' is not all digits", name, id)
			}
		}
		a.PhoneNumbers = append(a.PhoneNumbers, ids...)
		return nil
	default:
		return d.Errf("unrecognized account option '%s'", opt)
	}
}

// Interface guards
var (
	_ AccountSource         = (*StaticAccounts)(nil)
	_ caddy.Provisioner     = (*StaticAccounts)(nil)
	_ caddyfile.Unmarshaler = (*StaticAccounts)(nil)
)
