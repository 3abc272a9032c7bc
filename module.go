// Package whatsappmedia is a Caddy HTTP handler that serves AvenPing's
// media API at the edge: POST {prefix}/upload and GET
// {prefix}/{mediaId}/download. It authenticates the caller's API token,
// applies the plan rules, and streams the bytes between the client and
// Meta's WhatsApp Graph API without holding a file in memory. Every other
// request goes on to the next handler.
package whatsappmedia

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
	"github.com/avenping/caddy-whatsapp-media/internal/netguard"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/maypok86/otter/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Defaults of the handler's options.
const (
	DefaultPathPrefix   = "/v2/media"
	DefaultGraphURL     = "https://graph.facebook.com"
	DefaultGraphVersion = "v23.0"
	DefaultMaxSize      = 100 << 20
	DefaultSpoolBudget  = 2 << 30
	DefaultSpoolMinRate = 4 << 10
	maxMaxSize          = 1 << 40

	DefaultDialTimeout     = 5 * time.Second
	DefaultResponseTimeout = 60 * time.Second
	DefaultStallTimeout    = 30 * time.Second
)

// DefaultAllowedPlans are the plans that may use the media routes.
var DefaultAllowedPlans = []string{"premium", "enterprise"}

// Handler serves AvenPing's media API. It answers only its own routes,
// {path_prefix}/upload and {path_prefix}/{mediaId}/download, and passes
// every other request to the next handler untouched.
type Handler struct {
	// PathPrefix is the path under which the media routes are served.
	// Default: /v2/media.
	PathPrefix string `json:"path_prefix,omitempty"`

	// GraphURL is the base URL of Meta's Graph API, without the version.
	// Tests and the local demo point it at an emulator. Placeholders such
	// as {env.*} are expanded at provision time.
	// Default: https://graph.facebook.com.
	GraphURL string `json:"graph_url,omitempty"`

	// GraphVersion is the Graph API version used in request paths, such as
	// v23.0. Default: v23.0.
	GraphVersion string `json:"graph_version,omitempty"`

	// MaxSize is the largest file accepted by the upload route, in bytes.
	// It counts the file's bytes, not the multipart framing around them.
	// Default: 100 MiB (104857600).
	MaxSize int64 `json:"max_size,omitempty"`

	// AllowedPlans are the plans, compared case-insensitively, whose
	// accounts may use the media routes. Default: premium, enterprise.
	AllowedPlans []string `json:"allowed_plans,omitempty"`

	// DisableTypeCeilings turns off Meta's per-type size ceilings (5 MiB
	// for images, 16 MiB for audio and video, 100 MiB for documents,
	// 500 KiB for stickers), which the gateway otherwise enforces itself:
	// a file over its type's ceiling is answered 413 before its body is
	// read when the length and type are known from the headers, and the
	// moment it crosses the ceiling otherwise. Turn them off when Meta
	// raises its ceilings; max_size applies either way. Default: false.
	DisableTypeCeilings bool `json:"disable_type_ceilings,omitempty"`

	// FormatChecks turns on the check of an upload's bytes, as they stream
	// to Meta, against what WhatsApp can deliver (the README's "Delivery
	// rules"): images 8-bit, RGB or RGBA; stickers 512×512, static at most
	// 100 KiB and animated at most 500 KiB; audio/ogg Opus in one channel;
	// video H.264 with at most one audio stream, AAC. A file that breaks
	// one is answered 422 MEDIA_NOT_DELIVERABLE and never completed at
	// Meta, which would accept it and fail its delivery later; one the
	// check cannot read goes to Meta as before. Default: true.
	FormatChecks *bool `json:"format_checks,omitempty"`

	// URLUploads turns on uploads from a URL: POST {prefix}/upload with a
	// JSON body {"phoneNumberId", "url", "type", "filename"}, whose URL
	// (http or https, without user info) the gateway fetches and streams
	// to Meta as a raw upload's body, with the same limits and checks.
	// Every address it dials is checked at dial time, after DNS and after
	// each of at most 3 redirects: loopback, private, link-local, shared,
	// unique-local, multicast, unspecified and reserved addresses (and
	// their IPv4-mapped, NAT64 and 6to4 forms) are refused with 403
	// URL_FORBIDDEN before any connection. Off, a JSON body is a raw
	// upload of a JSON file (415). Default: true.
	URLUploads *bool `json:"url_uploads,omitempty"`

	// URLFetchAllow are address ranges (CIDR, or single addresses) that
	// uploads from a URL may reach although the guard refuses them
	// otherwise: an origin on the private network, say. Default: none.
	URLFetchAllow []string `json:"url_fetch_allow,omitempty"`

	// SpoolDir is the directory for the temporary file that holds a
	// multipart upload's file part while the rest of the form is read:
	// when it comes before phoneNumberId, or when neither its headers nor
	// its bytes tell its type and a type field may still follow it.
	// Such files are removed as soon as the upload ends. Default: the
	// system's temporary directory.
	SpoolDir string `json:"spool_dir,omitempty"`

	// SpoolBudget bounds, in bytes, what the uploads being spooled to
	// spool_dir may hold at once: each reserves its bytes as they arrive,
	// 1 MiB at a time (its first MiB before its file is read). An upload
	// that cannot reserve its first MiB is refused at once with 503
	// SPOOL_FULL and Retry-After; one that crosses the budget later is cut
	// off with the same answer. Handlers sharing a spool_dir share
	// its budget. It must be at least max_size. Default: 2 GiB.
	SpoolBudget int64 `json:"spool_budget,omitempty"`

	// SpoolShare bounds, in bytes, what one account's spooling uploads may
	// hold of spool_budget at once, so that no account can take the whole
	// budget from the others. It must be at least max_size and at most
	// spool_budget. Default: a quarter of spool_budget, and at least
	// max_size.
	SpoolShare int64 `json:"spool_share,omitempty"`

	// SpoolMinRate is the slowest, in bytes a second, that a spooling
	// upload may arrive once stall_timeout has passed: a slower one is cut
	// off with 408 REQUEST_TIMEOUT, so that trickling clients do not hold
	// the disk and their connections. Default: 4 KiB/s.
	SpoolMinRate int64 `json:"spool_min_rate,omitempty"`

	// DialTimeout is how long connecting to Meta may take, TLS handshake
	// included. Default: 5s.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// ResponseTimeout is how long Meta may take to start its answer once a
	// request has been sent in full (for an upload, after the file's last
	// byte). Meta not answering in time is answered 504 UPSTREAM_TIMEOUT.
	// Default: 60s.
	ResponseTimeout caddy.Duration `json:"response_timeout,omitempty"`

	// StallTimeout aborts a transfer, both ways, when no byte moved in
	// either direction for that long: a client that stops sending or
	// reading (an upload's client also before its transfer begins, in the
	// form's part headers or the first bytes that tell the type), Meta
	// that stops taking an upload's bytes, a CDN that stops
	// sending. A stalled upload is answered 408 REQUEST_TIMEOUT (the
	// client) or 504 UPSTREAM_TIMEOUT (Meta); a stalled download is broken
	// off. A download's client is seen to move each time it has taken a
	// chunk (up to 64 KiB), so one reading slower than 64 KiB per
	// stall_timeout (about 2 KiB/s at the default) counts as stalled.
	// Default: 30s.
	StallTimeout caddy.Duration `json:"stall_timeout,omitempty"`

	// MediaCacheTTL is how long Graph's metadata about a media object (its
	// URL, type, sha256 and size) is kept, from Graph's answer, never
	// extended by use: within it a download makes one request (to the
	// CDN), and HEAD and a matching If-None-Match (304) none. It is keyed
	// by account, Meta token and media id, and the access rules run on
	// every request first. For up to this long, HEAD and 304
	// may describe media that Meta has since deleted, or whose Meta token
	// was rotated. Keep it below the media URL's life (5 minutes). 0 turns
	// the cache off. Default: 4m.
	MediaCacheTTL *caddy.Duration `json:"media_cache_ttl,omitempty"`

	// MediaCacheEntries bounds the media cache; past it, the least useful
	// entries (by frequency and recency) are evicted. Default: 10000.
	MediaCacheEntries int `json:"media_cache_entries,omitempty"`

	// MediaHosts are the hosts that media URLs, and redirects from them,
	// may point to: the Meta token is sent to no other host. A pattern is a
	// host name, or "*." and a domain for every name below it. The host of
	// graph_url is always allowed. Every host but graph_url's (when that is
	// http) must be reached over https. Default: lookaside.fbsbx.com,
	// *.fbsbx.com, *.fbcdn.net, *.whatsapp.net.
	MediaHosts []string `json:"media_hosts,omitempty"`

	// MaxTransfersPerAccount bounds the media requests one account may
	// have in progress at once, uploads and downloads together; past it,
	// a request is answered 429 TOO_MANY_TRANSFERS with Retry-After
	// before anything reaches Meta, so that no account holds every
	// connection to Meta. Default: 64, or max_transfers when that is less.
	MaxTransfersPerAccount int `json:"max_transfers_per_account,omitempty"`

	// MaxTransfers bounds the media requests of all accounts in progress
	// at once (429 TOO_MANY_TRANSFERS past it), and so the connections
	// open to each of Meta's hosts. Handlers of every loaded config count
	// together. Default: 4096.
	MaxTransfers int `json:"max_transfers,omitempty"`

	// MaxDraining bounds the refused request bodies drained at once (the
	// lingering close, linger.go), by all configs together. Past it, a
	// refusal is answered with Connection: close and its body is not
	// read: a client that writes its whole body before reading may then
	// see a reset instead of the answer, but a crowd of refused uploads
	// cannot hold the gateway. Default: 1024.
	MaxDraining int `json:"max_draining,omitempty"`

	// AccountsRaw is the account source that maps API tokens to accounts:
	// a module in the namespace http.handlers.whatsapp_media.accounts,
	// chosen by its "source" key (static or introspect). Required.
	AccountsRaw json.RawMessage `json:"accounts,omitempty" caddy:"namespace=http.handlers.whatsapp_media.accounts inline_key=source"`

	accounts   AccountSource
	graph      *graphClient
	origins    *originFetcher // nil when url_uploads is off
	mediaCache *mediaCache    // nil when media_cache_ttl is 0
	spoolUsage *spoolUsage
	transfers  *transferCounts
	nearPrefix string // path_prefix normalised, and "/": where near misses start
	logger     *zap.Logger
	// now and cacheClock are the handler's time: tests set a clock they
	// move. cacheClock nil is the real clock.
	now        func() time.Time
	cacheClock otter.Clock
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.whatsapp_media",
		New: func() caddy.Module { return new(Handler) },
	}
}

var graphVersionRe = regexp.MustCompile(`^v[0-9]{1,3}\.[0-9]{1,3}$`)

// Provision sets defaults, loads the account source and builds the client
// for Meta.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.now == nil {
		h.now = time.Now
	}
	repl := caddy.NewReplacer()
	if h.PathPrefix == "" {
		h.PathPrefix = DefaultPathPrefix
	}
	h.PathPrefix = strings.TrimRight(h.PathPrefix, "/")
	h.nearPrefix = strings.TrimSuffix(media.NormalizePath(h.PathPrefix), "/") + "/"
	if given := h.GraphURL; given != "" {
		if h.GraphURL = repl.ReplaceKnown(given, ""); h.GraphURL == "" {
			h.logger.Warn("graph_url expands to nothing; using the default, " + DefaultGraphURL)
		}
	}
	if h.GraphURL == "" {
		h.GraphURL = DefaultGraphURL
	}
	if h.GraphVersion == "" {
		h.GraphVersion = DefaultGraphVersion
	}
	if h.MaxSize == 0 {
		h.MaxSize = DefaultMaxSize
	}
	if h.FormatChecks == nil {
		on := true
		h.FormatChecks = &on
	}
	if h.URLUploads == nil {
		on := true
		h.URLUploads = &on
	}
	if len(h.AllowedPlans) == 0 {
		h.AllowedPlans = DefaultAllowedPlans
	}
	if h.DialTimeout == 0 {
		h.DialTimeout = caddy.Duration(DefaultDialTimeout)
	}
	if h.ResponseTimeout == 0 {
		h.ResponseTimeout = caddy.Duration(DefaultResponseTimeout)
	}
	if h.StallTimeout == 0 {
		h.StallTimeout = caddy.Duration(DefaultStallTimeout)
	}
	if h.SpoolDir == "" {
		h.SpoolDir = os.TempDir()
	}
	if h.SpoolBudget == 0 {
		h.SpoolBudget = DefaultSpoolBudget
	}
	if h.SpoolShare == 0 {
		h.SpoolShare = min(max(h.SpoolBudget/4, h.MaxSize), h.SpoolBudget)
	}
	if h.SpoolMinRate == 0 {
		h.SpoolMinRate = DefaultSpoolMinRate
	}
	h.spoolUsage = loadSpoolUsage(h.SpoolDir)
	if h.MaxTransfers == 0 {
		h.MaxTransfers = DefaultMaxTransfers
	}
	if h.MaxTransfersPerAccount == 0 {
		h.MaxTransfersPerAccount = min(DefaultMaxTransfersPerAccount, h.MaxTransfers)
	}
	h.transfers = loadTransferCounts()
	if h.MaxDraining == 0 {
		h.MaxDraining = DefaultMaxDraining
	}
	if len(h.MediaHosts) == 0 {
		h.MediaHosts = DefaultMediaHosts
	}
	graph, err := url.Parse(h.GraphURL)
	if err != nil {
		return fmt.Errorf("graph_url: %v", err)
	}
	hosts, err := newHostList(h.MediaHosts, graph)
	if err != nil {
		return err
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return fmt.Errorf("registering metrics: %v", err)
	}

	if h.AccountsRaw == nil {
		return fmt.Errorf("accounts: an account source is required")
	}
	mod, err := ctx.LoadModule(h, "AccountsRaw")
	if err != nil {
		return fmt.Errorf("loading account source: %v", err)
	}
	src, ok := mod.(AccountSource)
	if !ok {
		return fmt.Errorf("accounts: module %T is not an account source", mod)
	}
	h.accounts = src
	if err := h.provisionMediaCache(); err != nil {
		return err
	}
	h.graph = newGraphClient(strings.TrimRight(h.GraphURL, "/")+"/"+h.GraphVersion, hosts,
		time.Duration(h.DialTimeout), time.Duration(h.ResponseTimeout), h.MaxTransfers)
	if *h.URLUploads {
		allow, err := parseAllowList(h.URLFetchAllow)
		if err != nil {
			return err
		}
		h.origins = newOriginFetcher(netguard.New(allow), time.Duration(h.DialTimeout), time.Duration(h.ResponseTimeout))
	}
	return nil
}

// parseAllowList parses url_fetch_allow: CIDR ranges, or single addresses.
func parseAllowList(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range list {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil {
				return nil, fmt.Errorf("url_fetch_allow: %q is neither a CIDR range nor an address", v)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8: addresses are checked unmapped
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// Validate checks the provisioned configuration.
func (h *Handler) Validate() error {
	if err := checkPathPrefix(h.PathPrefix); err != nil {
		return err
	}
	if err := checkGraphVersion(h.GraphVersion); err != nil {
		return err
	}
	u, err := url.Parse(h.GraphURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		return fmt.Errorf("graph_url must be an absolute http(s) URL: %q", h.GraphURL)
	}
	if h.MaxSize < 0 || h.MaxSize > maxMaxSize {
		return fmt.Errorf("max_size must be between 1 byte and 1 TiB: %d", h.MaxSize)
	}
	if h.DialTimeout < 0 || h.ResponseTimeout < 0 || h.StallTimeout < 0 {
		return fmt.Errorf("timeouts must be positive")
	}
	if fi, err := os.Stat(h.SpoolDir); err != nil || !fi.IsDir() {
		return fmt.Errorf("spool_dir %q is not a directory", h.SpoolDir)
	}
	if err := h.validateTransfers(); err != nil {
		return err
	}
	if h.MaxDraining < 0 {
		return fmt.Errorf("max_draining must be positive: %d", h.MaxDraining)
	}
	if h.SpoolBudget < h.MaxSize {
		return fmt.Errorf("spool_budget (%d) must be at least max_size (%d): an upload spooled at max_size could never fit", h.SpoolBudget, h.MaxSize)
	}
	if h.SpoolShare < h.MaxSize || h.SpoolShare > h.SpoolBudget {
		return fmt.Errorf("spool_share (%d) must be between max_size (%d) and spool_budget (%d)", h.SpoolShare, h.MaxSize, h.SpoolBudget)
	}
	if h.SpoolMinRate < 0 {
		return fmt.Errorf("spool_min_rate must be positive")
	}
	return nil
}

// Cleanup closes idle connections to Meta and lets go of the spool
// directory's budget.
func (h *Handler) Cleanup() error {
	if h.graph != nil {
		h.graph.closeIdle()
	}
	if h.origins != nil {
		h.origins.closeIdle()
	}
	if h.spoolUsage != nil {
		_, _ = spoolPool.Delete(h.spoolUsage.dir)
	}
	if h.transfers != nil {
		_, _ = transferPool.Delete(transferPoolKey)
	}
	if h.mediaCache != nil {
		h.mediaCache.stop()
	}
	return nil
}

// provisionMediaCache fills the media cache's defaults and makes it.
func (h *Handler) provisionMediaCache() error {
	if h.MediaCacheTTL == nil {
		ttl := caddy.Duration(DefaultMediaCacheTTL)
		h.MediaCacheTTL = &ttl
	}
	if h.MediaCacheEntries == 0 {
		h.MediaCacheEntries = DefaultMediaCacheEntries
	}
	if *h.MediaCacheTTL < 0 || h.MediaCacheEntries < 0 {
		return fmt.Errorf("media_cache_ttl and media_cache_entries must not be negative")
	}
	if *h.MediaCacheTTL == 0 {
		return nil
	}
	mc, err := newMediaCache(time.Duration(*h.MediaCacheTTL), h.MediaCacheEntries, h.cacheClock)
	if err != nil {
		return fmt.Errorf("media cache: %v", err)
	}
	h.mediaCache = mc
	return nil
}

// ServeHTTP serves the media routes and passes every other request on.
// A media request goes through the method check, the access rules and
// its route's handler; a refusal or failure at any step is answered in
// the error envelope by refuse. Broken-off downloads, and refused bodies
// that could not be drained, panic with http.ErrAbortHandler, which the
// tally counts and passes on.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	route, mediaID := h.route(r)
	if route == routeNone {
		return next.ServeHTTP(w, r)
	}
	tally := countRequest(route, w)
	defer tally.done()
	body := watchBody(r)
	if ae := h.serveRoute(tally.w, r, route, mediaID); ae != nil {
		if r.Context().Err() != nil && ae.Code != codeMetaAPIError && ae.Code != codeRequestTimeout && ae.Code != codeUpstreamTimeout {
			// The client went away: a failure after it (Meta's request
			// cancelled with it, a body cut short) is neither Meta's nor
			// the gateway's. Net/http also cancels the context when the
			// gateway itself moved a read deadline: Meta's own refusal,
			// and a stall guard's verdict, keep their answer.
			ae = errClientClosed.withCause(ae)
		}
		tally.code = ae.Code
		tally.settle() // what follows, the answer and a drain, is no transfer
		h.refuse(tally.w, r, body, ae)
	}
	return nil
}

// serveRoute checks the method and the caller's access, then hands the
// request to its route.
func (h *Handler) serveRoute(w http.ResponseWriter, r *http.Request, route routeKind, mediaID string) *apiError {
	if route == routeNearUpload || route == routeNearDownload {
		return h.nearMiss(route)
	}
	if ae := route.allows(r.Method); ae != nil {
		return ae
	}
	acct, ae := h.authenticate(r)
	if acct != nil {
		setAccountVars(r, acct) // a plan refusal is logged with its account
	}
	if ae != nil {
		return ae
	}
	release, ae := h.takeTransfer(acct)
	if ae != nil {
		return ae
	}
	defer release() // before a refusal's drain: a drain is not a transfer
	if route == routeUpload {
		return h.serveUpload(w, r, acct)
	}
	return h.serveDownload(w, r, acct, mediaID)
}

// refuse logs ae, writes it in the error envelope, and lingers on what is
// left of the request's body, so that every client hears the answer
// (linger.go).
func (h *Handler) refuse(w http.ResponseWriter, r *http.Request, body *watchedBody, ae *apiError) {
	h.logAnswer(r, ae)
	if ae.counter != nil {
		ae.counter.Inc()
	}
	setErrorVar(r, ae.Code)
	h.answerAndLinger(w, r, body, ae)
}

// logAnswer logs a refused or failed request once: failures of the
// gateway or of Meta at error level, Meta's refusals at warn level, the
// caller's mistakes at debug level.
func (h *Handler) logAnswer(r *http.Request, ae *apiError) {
	level := zapcore.DebugLevel
	switch {
	case ae.Code == codeMetaAPIError && ae.Status < 500:
		level = zapcore.WarnLevel
	case ae.Status >= 500:
		level = zapcore.ErrorLevel
	}
	ce := h.logger.Check(level, "media request refused")
	if ce == nil {
		return
	}
	fields := []zap.Field{
		zap.String("path", r.URL.Path),
		zap.Int("status", ae.Status),
		zap.String("error", ae.Code),
	}
	if acct, ok := placeholder(r, varAccount); ok {
		fields = append(fields, zap.String("account", acct))
	}
	var me *metaRefusal
	if errors.As(ae.cause, &me) {
		fields = append(fields, zap.Int("meta_status", me.status), zap.Int("meta_code", me.meta.Code),
			zap.Int("meta_subcode", me.meta.Subcode), zap.String("fbtrace_id", me.meta.FBTraceID))
	} else if ae.cause != nil {
		fields = append(fields, zap.String("cause", ae.cause.Error()))
	}
	ce.Write(fields...)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
