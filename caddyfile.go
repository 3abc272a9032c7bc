package whatsappmedia

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("whatsapp_media", parseCaddyfile)
	// Before reverse_proxy, so that a site with both serves the media
	// routes itself and proxies the rest, with no order option.
	httpcaddyfile.RegisterDirectiveOrder("whatsapp_media", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	whatsapp_media [<matcher>] {
//	    path_prefix    <path>          # default /v2/media
//	    graph_url      <url>           # default https://graph.facebook.com
//	    graph_version  <version>       # default v23.0
//	    max_size       <size>          # default 100MiB
//	    disable_type_ceilings          # default: Meta's per-type ceilings enforced
//	    allowed_plans  <plan...>       # default premium enterprise
//	    spool_dir      <directory>     # default: the system's temp directory
//	    spool_budget   <size>          # default 2GiB
//	    dial_timeout     <duration>    # default 5s
//	    response_timeout <duration>    # default 60s
//	    stall_timeout    <duration>    # default 30s
//	    media_hosts    <host...>       # default lookaside.fbsbx.com *.fbsbx.com *.fbcdn.net *.whatsapp.net
//	    media_cache_ttl     <duration> # default 4m; 0 turns the media metadata cache off
//	    media_cache_entries <n>        # default 10000
//	    accounts       <source> [<args...>] {
//	        <source options>
//	    }
//	}
//
// The account source is a module in the namespace
// http.handlers.whatsapp_media.accounts, such as static.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "path_prefix", "graph_url", "graph_version", "max_size", "spool_dir", "spool_budget":
			var v string
			var err error
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			switch opt {
			case "path_prefix":
				if !strings.HasPrefix(v, "/") {
					return d.Errf("path_prefix must start with '/': '%s'", v)
				}
				h.PathPrefix = v
			case "graph_url":
				h.GraphURL = v
			case "graph_version":
				if !graphVersionRe.MatchString(v) {
					return d.Errf("graph_version must look like v23.0: '%s'", v)
				}
				h.GraphVersion = v
			case "max_size":
				if h.MaxSize, err = parseSize(d, opt, v, "100MiB"); err != nil {
					return err
				}
			case "spool_dir":
				h.SpoolDir = v
			case "spool_budget":
				if h.SpoolBudget, err = parseSize(d, opt, v, "2GiB"); err != nil {
					return err
				}
			}
		case "disable_type_ceilings":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.DisableTypeCeilings = true
		case "dial_timeout":
			if err := parseDurationArg(d, &h.DialTimeout); err != nil {
				return err
			}
		case "response_timeout":
			if err := parseDurationArg(d, &h.ResponseTimeout); err != nil {
				return err
			}
		case "stall_timeout":
			if err := parseDurationArg(d, &h.StallTimeout); err != nil {
				return err
			}
		case "media_cache_ttl":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur < 0 {
				return d.Errf("media_cache_ttl must be a duration such as 4m, or 0 for no cache: '%s'", v)
			}
			ttl := caddy.Duration(dur)
			h.MediaCacheTTL = &ttl
		case "media_cache_entries":
			if err := parsePositiveArg(d, &h.MediaCacheEntries); err != nil {
				return err
			}
		case "media_hosts":
			hosts := d.RemainingArgs()
			if len(hosts) == 0 {
				return d.ArgErr()
			}
			if _, err := newHostList(hosts, nil); err != nil {
				return d.Err(err.Error())
			}
			h.MediaHosts = append(h.MediaHosts, hosts...)
		case "allowed_plans":
			plans := d.RemainingArgs()
			if len(plans) == 0 {
				return d.ArgErr()
			}
			h.AllowedPlans = plans
		case "accounts":
			if h.AccountsRaw != nil {
				return d.Err("accounts is given twice")
			}
			if !d.NextArg() {
				return d.ArgErr()
			}
			name := d.Val()
			unm, err := caddyfile.UnmarshalModule(d, "http.handlers.whatsapp_media.accounts."+name)
			if err != nil {
				return err
			}
			h.AccountsRaw = caddyconfig.JSONModuleObject(unm, "source", name, nil)
		default:
			return d.Errf("unrecognized whatsapp_media option '%s'", opt)
		}
	}
	return nil
}

// parseSize parses v, the argument of option opt, as a size of 1 byte to
// 1 TiB.
func parseSize(d *caddyfile.Dispenser, opt, v, example string) (int64, error) {
	size, err := humanize.ParseBytes(v)
	if err != nil || size == 0 || size > maxMaxSize {
		return 0, d.Errf("%s must be a size such as %s: '%s'", opt, example, v)
	}
	return int64(size), nil
}

// parsePositiveArg parses the one argument of the current option as a
// positive number into dst.
func parsePositiveArg(d *caddyfile.Dispenser, dst *int) error {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return d.Errf("%s must be a positive number: '%s'", opt, v)
	}
	*dst = n
	return nil
}

// parseDurationArg parses the one argument of the current option as a
// positive duration into dst.
func parseDurationArg(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return d.Errf("%s must be a positive duration such as 30s: '%s'", opt, v)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
