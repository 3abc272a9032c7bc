package whatsappmedia

import (
	"fmt"
	"net/url"
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
//	    format_checks  on|off          # default on: WhatsApp's delivery rules checked
//	    url_uploads    on|off          # default on: uploads from a URL (a JSON body)
//	    url_fetch_allow <cidr...>      # default none: ranges an upload from a URL may reach besides public addresses
//	    allowed_plans  <plan...>       # default premium enterprise
//	    spool_dir      <directory>     # default: the system's temp directory
//	    spool_budget   <size>          # default 2GiB
//	    spool_share    <size>          # default: a quarter of spool_budget, at least max_size
//	    spool_min_rate <size>          # default 4KiB: a second, once stall_timeout has passed
//	    dial_timeout     <duration>    # default 5s
//	    response_timeout <duration>    # default 60s
//	    stall_timeout    <duration>    # default 30s
//	    media_hosts    <host...>       # default lookaside.fbsbx.com *.fbsbx.com *.fbcdn.net *.whatsapp.net
//	    media_cache_ttl     <duration> # default 4m; 0 turns the media metadata cache off
//	    media_cache_entries <n>        # default 10000
//	    max_transfers_per_account <n>  # default 64: uploads and downloads in progress for one account
//	    max_transfers  <n>             # default 4096: for all accounts
//	    max_draining   <n>             # default 1024: refused bodies drained at once
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
		var err error
		switch opt := d.Val(); opt {
		case "path_prefix":
			err = parseStringArg(d, &h.PathPrefix, checkPathPrefix)
		case "graph_url":
			err = parseStringArg(d, &h.GraphURL, nil)
		case "graph_version":
			err = parseStringArg(d, &h.GraphVersion, checkGraphVersion)
		case "max_size":
			err = parseSizeArg(d, &h.MaxSize)
		case "disable_type_ceilings":
			err = parseFlag(d, &h.DisableTypeCeilings)
		case "format_checks":
			err = parseOnOff(d, &h.FormatChecks)
		case "url_uploads":
			err = parseOnOff(d, &h.URLUploads)
		case "url_fetch_allow":
			if err = parseListArg(d, &h.URLFetchAllow); err == nil {
				if _, perr := parseAllowList(h.URLFetchAllow); perr != nil {
					err = d.Err(perr.Error())
				}
			}
		case "allowed_plans":
			err = parseListArg(d, &h.AllowedPlans)
		case "spool_dir":
			err = parseStringArg(d, &h.SpoolDir, nil)
		case "spool_budget":
			err = parseSizeArg(d, &h.SpoolBudget)
		case "spool_share":
			err = parseSizeArg(d, &h.SpoolShare)
		case "spool_min_rate":
			err = parseSizeArg(d, &h.SpoolMinRate)
		case "dial_timeout":
			err = parseDurationArg(d, &h.DialTimeout)
		case "response_timeout":
			err = parseDurationArg(d, &h.ResponseTimeout)
		case "stall_timeout":
			err = parseDurationArg(d, &h.StallTimeout)
		case "media_hosts":
			err = parseMediaHosts(d, &h.MediaHosts)
		case "media_cache_ttl":
			err = parseCacheTTL(d, &h.MediaCacheTTL)
		case "media_cache_entries":
			err = parsePositiveArg(d, &h.MediaCacheEntries)
		case "max_transfers_per_account":
			err = parsePositiveArg(d, &h.MaxTransfersPerAccount)
		case "max_transfers":
			err = parsePositiveArg(d, &h.MaxTransfers)
		case "max_draining":
			err = parsePositiveArg(d, &h.MaxDraining)
		case "accounts":
			err = h.unmarshalAccounts(d)
		default:
			err = d.Errf("unrecognized whatsapp_media option '%s'", opt)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// unmarshalAccounts parses accounts <source> [<args...>] { ... } with the
// source module's own Caddyfile parser.
func (h *Handler) unmarshalAccounts(d *caddyfile.Dispenser) error {
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
	return nil
}

// checkPathPrefix and checkGraphVersion are the checks of options whose
// mistakes the Caddyfile reports with their line; Validate runs them on
// JSON configs too.
func checkPathPrefix(v string) error {
	if !strings.HasPrefix(v, "/") {
		return fmt.Errorf("path_prefix must start with '/': '%s'", v)
	}
	if (&url.URL{Path: v}).EscapedPath() != v {
		return fmt.Errorf("path_prefix must need no escaping in a URL: '%s'", v)
	}
	return nil
}

func checkGraphVersion(v string) error {
	if !graphVersionRe.MatchString(v) {
		return fmt.Errorf("graph_version must look like v23.0: '%s'", v)
	}
	return nil
}

// The option parsers below read the current option's arguments into dst
// and check them, reporting a mistake with the option's name and line.

// parseStringArg parses one argument, checked by check when it is set.
func parseStringArg(d *caddyfile.Dispenser, dst *string, check func(string) error) error {
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	if check != nil {
		if err := check(v); err != nil {
			return d.Err(err.Error())
		}
	}
	*dst = v
	return nil
}

// parseFlag parses an option that takes no argument.
func parseFlag(d *caddyfile.Dispenser, dst *bool) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	*dst = true
	return nil
}

// parseOnOff parses a switch's one argument, on or off.
func parseOnOff(d *caddyfile.Dispenser, dst **bool) error {
	opt := d.Val()
	if !d.NextArg() {
		return d.ArgErr()
	}
	var on bool
	switch d.Val() {
	case "on":
		on = true
	case "off":
	default:
		return d.Errf("%s must be on or off, not '%s'", opt, d.Val())
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	*dst = &on
	return nil
}

// parseListArg parses one or more arguments.
func parseListArg(d *caddyfile.Dispenser, dst *[]string) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	*dst = args
	return nil
}

// parseMediaHosts parses host patterns, appended to those given before.
func parseMediaHosts(d *caddyfile.Dispenser, dst *[]string) error {
	hosts := d.RemainingArgs()
	if len(hosts) == 0 {
		return d.ArgErr()
	}
	if _, err := newHostList(hosts, nil); err != nil {
		return d.Err(err.Error())
	}
	*dst = append(*dst, hosts...)
	return nil
}

// parseCacheTTL parses a duration that may be 0 (off).
func parseCacheTTL(d *caddyfile.Dispenser, dst **caddy.Duration) error {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur < 0 {
		return d.Errf("%s must be a duration such as 4m, or 0 for no cache: '%s'", opt, v)
	}
	ttl := caddy.Duration(dur)
	*dst = &ttl
	return nil
}

// parseSizeArg parses one argument as a size of 1 byte to 1 TiB, such
// as 100MiB.
func parseSizeArg(d *caddyfile.Dispenser, dst *int64) error {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	size, err := humanize.ParseBytes(v)
	if err != nil || size == 0 || size > maxMaxSize {
		return d.Errf("%s must be a size such as 100MiB: '%s'", opt, v)
	}
	*dst = int64(size)
	return nil
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
