package whatsappmedia

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`whatsapp_media {
		path_prefix      /api/media
		graph_url        http://127.0.0.1:9999
		graph_version    v22.0
		max_size         16MiB
		allowed_plans    premium enterprise business
		spool_dir        /var/tmp
		spool_budget     512MiB
		disable_type_ceilings
		format_checks    off
		url_uploads      off
		url_fetch_allow  10.8.0.0/16 192.168.7.7 fd00::/8
		dial_timeout     2s
		response_timeout 90s
		stall_timeout    45s
		media_hosts      cdn.example.com *.cdn.example.net
		media_cache_ttl  90s
		media_cache_entries 500
		max_transfers_per_account 8
		max_transfers    100
		max_draining     50
		spool_share      256MiB
		spool_min_rate   8KiB
		accounts static {
			account acme {
				token_sha256  ` + fixtures.SHA256Hex([]byte("t")) + `
				plan          premium
				plan_expires  2027-01-01T00:00:00Z
				meta_token    {env.ACME_META_TOKEN}
				phone_numbers 106540352242922 106540352242923
			}
			account beta {
				token {file./run/secrets/beta}
				plan  developer
			}
		}
	}`)
	var h Handler
	require.NoError(t, h.UnmarshalCaddyfile(d))
	assert.Equal(t, "/api/media", h.PathPrefix)
	assert.Equal(t, "http://127.0.0.1:9999", h.GraphURL)
	assert.Equal(t, "v22.0", h.GraphVersion)
	assert.Equal(t, int64(16<<20), h.MaxSize)
	assert.Equal(t, []string{"premium", "enterprise", "business"}, h.AllowedPlans)
	assert.Equal(t, "/var/tmp", h.SpoolDir)
	assert.Equal(t, int64(512<<20), h.SpoolBudget)
	assert.True(t, h.DisableTypeCeilings)
	require.NotNil(t, h.FormatChecks)
	assert.False(t, *h.FormatChecks)
	require.NotNil(t, h.URLUploads)
	assert.False(t, *h.URLUploads)
	assert.Equal(t, []string{"10.8.0.0/16", "192.168.7.7", "fd00::/8"}, h.URLFetchAllow)
	assert.Equal(t, caddy.Duration(2*time.Second), h.DialTimeout)
	assert.Equal(t, caddy.Duration(90*time.Second), h.ResponseTimeout)
	assert.Equal(t, caddy.Duration(45*time.Second), h.StallTimeout)
	assert.Equal(t, []string{"cdn.example.com", "*.cdn.example.net"}, h.MediaHosts)
	require.NotNil(t, h.MediaCacheTTL)
	assert.Equal(t, caddy.Duration(90*time.Second), *h.MediaCacheTTL)
	assert.Equal(t, 500, h.MediaCacheEntries)
	assert.Equal(t, 8, h.MaxTransfersPerAccount)
	assert.Equal(t, 100, h.MaxTransfers)
	assert.Equal(t, 50, h.MaxDraining)
	assert.Equal(t, int64(256<<20), h.SpoolShare)
	assert.Equal(t, int64(8<<10), h.SpoolMinRate)

	off := caddyfile.NewTestDispenser(`whatsapp_media {
		media_cache_ttl 0
	}`)
	var h2 Handler
	require.NoError(t, h2.UnmarshalCaddyfile(off))
	require.NotNil(t, h2.MediaCacheTTL, "0 is kept: it turns the cache off")
	assert.Zero(t, *h2.MediaCacheTTL)

	var src struct {
		Source   string                    `json:"source"`
		Accounts map[string]*StaticAccount `json:"accounts"`
	}
	require.NoError(t, json.Unmarshal(h.AccountsRaw, &src))
	assert.Equal(t, "static", src.Source)
	require.Len(t, src.Accounts, 2)
	acme := src.Accounts["acme"]
	assert.Equal(t, fixtures.SHA256Hex([]byte("t")), acme.TokenSHA256)
	assert.Equal(t, "premium", acme.Plan)
	assert.Equal(t, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), acme.PlanExpires)
	assert.Equal(t, "{env.ACME_META_TOKEN}", acme.MetaToken, "secrets stay placeholders in the config")
	assert.Equal(t, []string{"106540352242922", "106540352242923"}, acme.PhoneNumbers)
	assert.Equal(t, "{file./run/secrets/beta}", src.Accounts["beta"].Token)
	assert.True(t, src.Accounts["beta"].PlanExpires.IsZero())
}

func TestUnmarshalCaddyfileErrors(t *testing.T) {
	const acct = `accounts static { account a { token t } }`
	cases := map[string]struct{ input, wantErr string }{
		"unknown option":            {`whatsapp_media { colour blue }`, "unrecognized whatsapp_media option 'colour'"},
		"argument on directive":     {`whatsapp_media extra { ` + acct + ` }`, "wrong argument count"},
		"bad max_size":              {`whatsapp_media { max_size lots }`, "max_size must be a size"},
		"zero max_size":             {`whatsapp_media { max_size 0 }`, "max_size must be a size"},
		"max_size two args":         {`whatsapp_media { max_size 1MiB 2MiB }`, "wrong argument count"},
		"bad graph_version":         {`whatsapp_media { graph_version 23 }`, "graph_version must look like v23.0"},
		"bad spool_budget":          {`whatsapp_media { spool_budget plenty }`, "spool_budget must be a size"},
		"negative media_cache_ttl":  {`whatsapp_media { media_cache_ttl -1m }`, "media_cache_ttl must be a duration"},
		"bad media_cache_entries":   {`whatsapp_media { media_cache_entries lots }`, "media_cache_entries must be a positive number"},
		"bad max_transfers":         {`whatsapp_media { max_transfers 0 }`, "max_transfers must be a positive number"},
		"bad max_draining":          {`whatsapp_media { max_draining -1 }`, "max_draining must be a positive number"},
		"bad spool_share":           {`whatsapp_media { spool_share half }`, "spool_share must be a size"},
		"bad spool_min_rate":        {`whatsapp_media { spool_min_rate slow }`, "spool_min_rate must be a size"},
		"ceilings with an argument": {`whatsapp_media { disable_type_ceilings yes }`, "wrong argument count"},
		"format_checks yes":         {`whatsapp_media { format_checks yes }`, "format_checks must be on or off, not 'yes'"},
		"format_checks bare":        {`whatsapp_media { format_checks }`, "wrong argument count"},
		"format_checks two args":    {`whatsapp_media { format_checks on off }`, "wrong argument count"},
		"url_uploads maybe":         {`whatsapp_media { url_uploads maybe }`, "url_uploads must be on or off, not 'maybe'"},
		"bad url_fetch_allow":       {`whatsapp_media { url_fetch_allow 10.0.0.0/33 }`, `url_fetch_allow: "10.0.0.0/33" is neither a CIDR range nor an address`},
		"empty url_fetch_allow":     {`whatsapp_media { url_fetch_allow }`, "wrong argument count"},
		"bad path_prefix":           {`whatsapp_media { path_prefix v2/media }`, "path_prefix must start with '/'"},
		"bad dial_timeout":          {`whatsapp_media { dial_timeout soon }`, "dial_timeout must be a positive duration"},
		"bad response_timeout":      {`whatsapp_media { response_timeout -1s }`, "response_timeout must be a positive duration"},
		"bad stall_timeout":         {`whatsapp_media { stall_timeout 0s }`, "stall_timeout must be a positive duration"},
		"bad media_hosts":           {`whatsapp_media { media_hosts *.com }`, "media_hosts: bad pattern"},
		"empty media_hosts":         {`whatsapp_media { media_hosts }`, "wrong argument count"},
		"empty allowed_plans":       {`whatsapp_media { allowed_plans }`, "wrong argument count"},
		"unknown source":            {`whatsapp_media { accounts ldap }`, "http.handlers.whatsapp_media.accounts.ldap"},
		"accounts twice":            {"whatsapp_media {\n" + acct + "\n" + acct + "\n}", "accounts is given twice"},
		"unknown account option": {`whatsapp_media { accounts static { account a { token t
			colour blue } } }`, "unrecognized account option 'colour'"},
		"unknown static option": {`whatsapp_media { accounts static { user a } }`, "unrecognized accounts static option 'user'"},
		"both tokens": {`whatsapp_media { accounts static { account a { token t
			token_sha256 ` + fixtures.SHA256Hex([]byte("t")) + ` } } }`, "exactly one of token and token_sha256"},
		"no token":          {`whatsapp_media { accounts static { account a { plan premium } } }`, "exactly one of token and token_sha256"},
		"bad token_sha256":  {`whatsapp_media { accounts static { account a { token_sha256 abc } } }`, "token_sha256 must be 64 hex digits"},
		"bad plan_expires":  {`whatsapp_media { accounts static { account a { plan_expires 2027-01-01 } } }`, "plan_expires must be an RFC 3339 time"},
		"bad phone number":  {`whatsapp_media { accounts static { account a { phone_numbers 12x } } }`, "phone_numbers: '12x' is not all digits"},
		"duplicate account": {"whatsapp_media { accounts static { account a { token t }\naccount a { token u } } }", "account 'a' is defined twice"},
		"account no name":   {`whatsapp_media { accounts static { account { token t } } }`, "wrong argument count"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			// One directive a line, as a Caddyfile needs.
			input := strings.NewReplacer("{ ", "{\n", " }", "\n}").Replace(c.input)
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
			require.Error(t, err)
			assert.Contains(t, err.Error(), c.wantErr)
		})
	}
}

// TestAdaptCaddyfile checks the directive's place (before reverse_proxy,
// with no order option) and the JSON it adapts to.
func TestAdaptCaddyfile(t *testing.T) {
	input := "{\n\tadmin localhost:2999\n}\n\napi.example.com {\n" +
		"\treverse_proxy 127.0.0.1:3000\n" +
		"\twhatsapp_media {\n" +
		"\t\tmax_size 10MiB\n" +
		"\t\taccounts static {\n" +
		"\t\t\taccount acme {\n" +
		"\t\t\t\ttoken_sha256 " + fixtures.SHA256Hex([]byte("t")) + "\n" +
		"\t\t\t\tplan premium\n" +
		"\t\t\t\tmeta_token {env.ACME_META_TOKEN}\n" +
		"\t\t\t\tphone_numbers 106540352242922\n" +
		"\t\t\t}\n\t\t}\n\t}\n}\n"
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input), nil)
	require.NoError(t, err)
	assert.Empty(t, warnings)
	var cfg struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Routes []struct {
								Handle []json.RawMessage `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	require.NoError(t, json.Unmarshal(out, &cfg))
	srv := cfg.Apps.HTTP.Servers["srv0"]
	require.Len(t, srv.Routes, 1)
	sub := srv.Routes[0].Handle[0].Routes
	require.Len(t, sub, 1, "%s", out)
	require.Len(t, sub[0].Handle, 2, "%s", out)
	assert.JSONEq(t, `{
		"handler": "whatsapp_media",
		"max_size": 10485760,
		"accounts": {
			"source": "static",
			"accounts": {
				"acme": {
					"token_sha256": "`+fixtures.SHA256Hex([]byte("t"))+`",
					"plan": "premium",
					"meta_token": "{env.ACME_META_TOKEN}",
					"phone_numbers": ["106540352242922"]
				}
			}
		}
	}`, string(sub[0].Handle[0]))
	assert.Contains(t, string(sub[0].Handle[1]), `"handler":"reverse_proxy"`)
}

// FuzzCaddyfile checks that no Caddyfile input panics the parser. A long
// run on this project's machine (2 cores, 2026-11-25), with
// go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime 10m . :
// 1,154,469 executions (338,914 + 815,555); the first run stopped at
// 338,914 on an input the lexer rejects, which made
// caddyfile.NewTestDispenser exit the process (the target now lexes first;
// the input is in the corpus).
func FuzzCaddyfile(f *testing.F) {
	f.Add("max_size 10MiB\naccounts static {\naccount a {\ntoken t\n}\n}")
	f.Add("accounts introspect http://x {\nheader A b\ntimeout 1s\n}")
	f.Add("media_hosts *.fbcdn.net\ngraph_version v23.0")
	f.Fuzz(func(t *testing.T, body string) {
		// caddyfile.NewTestDispenser exits the process on input the lexer
		// rejects (found by this target): lex first, as Caddy does.
		tokens, err := caddyfile.Tokenize([]byte("whatsapp_media {\n"+body+"\n}"), "Caddyfile")
		if err != nil {
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}

// TestCaddyfileExampleGolden keeps the JSON that Caddyfile.example adapts
// to in testdata/Caddyfile.example.json. Regenerate it after a deliberate
// change with: UPDATE_GOLDEN=1 go test -run TestCaddyfileExampleGolden .
func TestCaddyfileExampleGolden(t *testing.T) {
	src, err := os.ReadFile("Caddyfile.example")
	require.NoError(t, err)
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	require.NoError(t, err)
	assert.Empty(t, warnings)
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, out, "", "\t"))
	pretty.WriteByte('\n')
	const golden = "testdata/Caddyfile.example.json"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(golden, pretty.Bytes(), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), pretty.String())
	// Secrets stay placeholders in the adapted config.
	assert.Contains(t, pretty.String(), "{env.ACME_META_TOKEN}")
	assert.Contains(t, pretty.String(), "{env.ACME_TOKEN_SHA256}")
}
