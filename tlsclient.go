package whatsappmedia

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"os"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
)

// The links to the app's side (introspection, the purge channel's Redis)
// take Caddy's own TLS client options, as reverse_proxy's http transport
// does: reverseproxy.TLSConfig, made into a tls.Config by its
// MakeTLSClientConfig. Without them, a https:// or rediss:// link trusts
// the system's roots.

// tlsClientConfig makes t's TLS client config, with placeholders such as
// {env.*} expanded in its file paths and server name first. It returns
// nil for a nil t: Go's defaults, the system's roots.
func tlsClientConfig(ctx caddy.Context, t *reverseproxy.TLSConfig) (*tls.Config, error) {
	if t == nil {
		return nil, nil
	}
	repl := caddy.NewReplacer()
	c := *t
	c.ClientCertificateFile = repl.ReplaceKnown(c.ClientCertificateFile, "")
	c.ClientCertificateKeyFile = repl.ReplaceKnown(c.ClientCertificateKeyFile, "")
	c.ServerName = repl.ReplaceKnown(c.ServerName, "")
	if c.CARaw != nil {
		raw, err := expandJSONStrings(c.CARaw, repl)
		if err != nil {
			return nil, err
		}
		c.CARaw = raw
	}
	return c.MakeTLSClientConfig(ctx)
}

// expandJSONStrings replaces the placeholders in every string of a JSON
// value (a trust pool's file names).
func expandJSONStrings(raw json.RawMessage, repl *caddy.Replacer) (json.RawMessage, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, err
	}
	var walk func(any) any
	walk = func(v any) any {
		switch x := v.(type) {
		case string:
			return repl.ReplaceKnown(x, "")
		case []any:
			for i := range x {
				x[i] = walk(x[i])
			}
		case map[string]any:
			for k := range x {
				x[k] = walk(x[k])
			}
		}
		return v
	}
	return json.Marshal(walk(v))
}

// unmarshalTLSOption parses the current directive if it is one of
// reverse_proxy's TLS client options that the links take:
//
//	tls_trust_pool <module> [<args...>]   # a tls.ca_pool.source module: file <ca.pem>...
//	tls_client_auth <cert.pem> <key.pem>  # mutual TLS
//	tls_server_name <name>
//
// It reports whether the directive was one of them.
func unmarshalTLSOption(d *caddyfile.Dispenser, t **reverseproxy.TLSConfig) (bool, error) {
	opt := d.Val()
	switch opt {
	case "tls_trust_pool", "tls_client_auth", "tls_server_name":
	default:
		return false, nil
	}
	if *t == nil {
		*t = new(reverseproxy.TLSConfig)
	}
	switch opt {
	case "tls_trust_pool":
		if !d.NextArg() {
			return true, d.ArgErr()
		}
		if (*t).CARaw != nil {
			return true, d.Err("tls_trust_pool is given twice")
		}
		stem := d.Val()
		unm, err := caddyfile.UnmarshalModule(d, "tls.ca_pool.source."+stem)
		if err != nil {
			return true, err
		}
		ca, ok := unm.(caddytls.CA)
		if !ok {
			return true, d.Errf("module tls.ca_pool.source.%s is not a trust pool", stem)
		}
		(*t).CARaw = caddyconfig.JSONModuleObject(ca, "provider", stem, nil)
	case "tls_client_auth":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return true, d.ArgErr()
		}
		(*t).ClientCertificateFile, (*t).ClientCertificateKeyFile = args[0], args[1]
	case "tls_server_name":
		if !d.AllArgs(&(*t).ServerName) {
			return true, d.ArgErr()
		}
	}
	return true, nil
}

// tlsFingerprint is the hex SHA-256 of TLS options and of the contents of
// every file they name (placeholders expanded): it changes when a
// certificate or key is replaced in place.
func tlsFingerprint(t *reverseproxy.TLSConfig) string {
	h := sha256.New()
	b, _ := json.Marshal(t)
	h.Write(b)
	repl := caddy.NewReplacer()
	add := func(s string) {
		if data, err := os.ReadFile(repl.ReplaceKnown(s, "")); err == nil {
			h.Write(data)
		}
	}
	add(t.ClientCertificateFile)
	add(t.ClientCertificateKeyFile)
	var ca any
	if json.Unmarshal(t.CARaw, &ca) == nil {
		var walk func(any)
		walk = func(v any) {
			switch x := v.(type) {
			case string:
				add(x)
			case []any:
				for _, e := range x {
					walk(e)
				}
			case map[string]any:
				for _, e := range x {
					walk(e)
				}
			}
		}
		walk(ca)
	}
	return hex.EncodeToString(h.Sum(nil))
}
