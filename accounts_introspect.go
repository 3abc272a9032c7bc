package whatsappmedia

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/maypok86/otter/v2"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

func init() {
	caddy.RegisterModule(IntrospectAccounts{})
}

// Defaults of the introspect account source.
const (
	DefaultIntrospectTimeout     = 2 * time.Second
	DefaultIntrospectCacheTTL    = 30 * time.Second
	DefaultIntrospectNegativeTTL = 5 * time.Second
	DefaultIntrospectMaxEntries  = 100_000
)

// maxIntrospectAnswer bounds the introspection answer read into memory.
const maxIntrospectAnswer = 64 << 10

// IntrospectAccounts is the production account source: it asks the
// AvenPing app who owns a token, with a request shaped after OAuth 2.0
// Token Introspection (RFC 7662), and caches the answers in memory under a
// hash of the token. See docs/introspection.md for the app's side.
type IntrospectAccounts struct {
	// URL is the app's introspection endpoint. It receives POST requests
	// with the form body token=<api token>. Required.
	URL string `json:"url,omitempty"`

	// Headers are added to every introspection request, such as a shared
	// secret. Values accept {env.*} and {file.*} placeholders, expanded
	// at provision time.
	Headers map[string][]string `json:"headers,omitempty"`

	// Timeout bounds one introspection request. An app that does not
	// answer in time is "cannot answer": the gateway fails closed with
	// 503 AUTH_UNAVAILABLE. Default: 2s.
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// CacheTTL is how long a positive answer (an active token) is cached.
	// An entry never outlives the end of the account's plan. Default: 30s.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`

	// NegativeTTL is how long a negative answer (an unknown or revoked
	// token) is cached. Failed calls are never cached. Default: 5s.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`

	// MaxEntries bounds the number of cached answers; past it, the least
	// useful entries (by frequency and recency) are evicted.
	// Default: 100000.
	MaxEntries int `json:"max_entries,omitempty"`

	// TLS configures the connection to the app when URL is https: a trust
	// pool for a private CA, a client certificate for mutual TLS, the
	// server name; the same options as reverse_proxy's http transport
	// (tls_trust_pool, tls_client_auth, tls_server_name in the
	// Caddyfile). Placeholders are expanded in file paths. Default: the
	// system's roots, no client certificate.
	TLS *reverseproxy.TLSConfig `json:"tls,omitempty"`

	// PurgeChannel, if set, is the Redis channel on which the app
	// publishes revoked tokens (the hex SHA-256 of a token, or "*" for
	// everything): one PUBLISH purges them from this cache on every
	// gateway subscribed. Provisioning never waits for Redis; while it is
	// unreachable requests are served as without a channel, and
	// everything is purged when the subscription comes back. Default: none.
	PurgeChannel *PurgeChannel `json:"purge_channel,omitempty"`

	subscriber *subscriber
	cache      *introspectCache
	poolKey    string
	client     *http.Client
	headers    http.Header
	logger     *zap.Logger
	// now and clock are the source's time: tests set a clock they move.
	now   func() time.Time
	clock otter.Clock // the cache's; nil is the real clock
}

// introspectAnswer is a cached answer: account nil means inactive.
type introspectAnswer struct {
	account *Account
}

// introspectCache is one cache of answers, shared through introspectPool
// by every provisioned source with the same settings, so that it survives
// config reloads (Caddy provisions the new config before cleaning up the
// old one) and the purge admin endpoint can reach it.
type introspectCache struct {
	c *otter.Cache[[sha256.Size]byte, introspectAnswer]
	// purges counts purges. otter drops a load in flight when its key is
	// invalidated, but not on InvalidateAll: a load that saw a purge
	// while it ran asks the app again, so that a token revoked before a
	// purge-all is not cached from an answer given before it.
	purges atomic.Uint64
}

// Destruct implements caddy.Destructor.
func (ic *introspectCache) Destruct() error {
	ic.c.InvalidateAll()
	ic.c.StopAllGoroutines()
	return nil
}

var introspectPool = caddy.NewUsagePool()

// CaddyModule returns the Caddy module information.
func (IntrospectAccounts) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.whatsapp_media.accounts.introspect",
		New: func() caddy.Module { return new(IntrospectAccounts) },
	}
}

// Provision sets defaults, expands placeholders and gets the cache.
func (s *IntrospectAccounts) Provision(ctx caddy.Context) error {
	s.logger = ctx.Logger()
	if s.now == nil {
		s.now = time.Now
	}
	repl := caddy.NewReplacer()
	u, err := url.Parse(repl.ReplaceKnown(s.URL, ""))
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("introspect: url must be an absolute http(s) URL: %q", s.URL)
	}
	if s.Timeout == 0 {
		s.Timeout = caddy.Duration(DefaultIntrospectTimeout)
	}
	if s.CacheTTL == 0 {
		s.CacheTTL = caddy.Duration(DefaultIntrospectCacheTTL)
	}
	if s.NegativeTTL == 0 {
		s.NegativeTTL = caddy.Duration(DefaultIntrospectNegativeTTL)
	}
	if s.MaxEntries == 0 {
		s.MaxEntries = DefaultIntrospectMaxEntries
	}
	if s.Timeout < 0 || s.CacheTTL < 0 || s.NegativeTTL < 0 || s.MaxEntries < 0 {
		return fmt.Errorf("introspect: timeouts, TTLs and max_entries must be positive")
	}
	s.headers = make(http.Header, len(s.Headers)+3)
	names := make([]string, 0, len(s.Headers))
	for name, vals := range s.Headers {
		names = append(names, name)
		for _, v := range vals {
			v = repl.ReplaceKnown(v, "")
			if strings.TrimSpace(v) == "" {
				// Most likely an unset {env.INTROSPECT_SECRET}: the app
				// will refuse every call, and every request is 503.
				s.logger.Warn("introspection header value expands to nothing; an app that checks it refuses every call (503 AUTH_UNAVAILABLE)",
					zap.String("header", name))
			}
			s.headers.Add(name, v)
		}
	}
	sort.Strings(names)
	s.headers.Set("Content-Type", "application/x-www-form-urlencoded")
	s.headers.Set("Accept", "application/json")
	s.headers.Set("User-Agent", userAgent)
	s.URL = u.String()
	transport := newIntrospectTransport(time.Duration(s.Timeout))
	if transport.TLSClientConfig, err = tlsClientConfig(ctx, s.TLS); err != nil {
		return fmt.Errorf("introspect: tls: %v", err)
	}
	s.client = &http.Client{
		Transport: transport,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse // a redirect is not an answer
		},
	}

	// The cache is shared by sources with the same settings. The key
	// holds the header names, not their (secret) values.
	s.poolKey = strings.Join([]string{s.URL, strings.Join(names, ","),
		strconv.FormatInt(int64(s.CacheTTL), 10), strconv.FormatInt(int64(s.NegativeTTL), 10),
		strconv.Itoa(s.MaxEntries)}, "|")
	val, _, err := introspectPool.LoadOrNew(s.poolKey, func() (caddy.Destructor, error) {
		return s.newCache()
	})
	if err != nil {
		return fmt.Errorf("introspect: cache: %v", err)
	}
	s.cache = val.(*introspectCache)
	return s.provisionPurgeChannel(ctx, repl)
}

// newIntrospectTransport returns the transport for calls to the app: small
// JSON requests and answers, so net/http's default buffers, and an idle
// pool sized for the concurrent cache misses of a busy gateway rather than
// for hundreds of long transfers (those go to Meta on graph.go's
// transport). It speaks HTTP/1.1, as it always has.
func newIntrospectTransport(timeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		MaxIdleConns:          64,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   timeout,
		ResponseHeaderTimeout: timeout,
	}
}

// provisionPurgeChannel subscribes the cache to the purge channel, if any.
func (s *IntrospectAccounts) provisionPurgeChannel(ctx caddy.Context, repl *caddy.Replacer) error {
	pc := s.PurgeChannel
	if pc == nil {
		return nil
	}
	if pc.Channel == "" {
		pc.Channel = DefaultPurgeChannel
	}
	url := strings.TrimSpace(repl.ReplaceKnown(pc.URL, ""))
	if url == "" {
		// An unset {env.REDIS_URL}: like every secret placeholder that
		// expands to nothing, not an error, so that caddy validate works
		// without the production environment; but never silent.
		s.logger.Warn("purge_channel's Redis URL expands to nothing; no purge channel: revoked tokens stay cached up to cache_ttl unless purged on the admin endpoint",
			zap.String("channel", pc.Channel))
		return nil
	}
	tlsConfig, err := tlsClientConfig(ctx, pc.TLS)
	if err != nil {
		return fmt.Errorf("introspect: purge_channel: tls: %v", err)
	}
	sub, err := loadSubscriber(url, pc.Channel, pc.TLS, tlsConfig, s.logger)
	if err != nil {
		return err
	}
	sub.register(s.cache)
	s.subscriber = sub
	return nil
}

func (s *IntrospectAccounts) newCache() (*introspectCache, error) {
	pos, neg, now := time.Duration(s.CacheTTL), time.Duration(s.NegativeTTL), s.now
	c, err := otter.New(&otter.Options[[sha256.Size]byte, introspectAnswer]{
		MaximumSize: s.MaxEntries,
		ExpiryCalculator: otter.ExpiryCreatingFunc(func(e otter.Entry[[sha256.Size]byte, introspectAnswer]) time.Duration {
			return answerTTL(e.Value, pos, neg, now())
		}),
		Clock: s.clock,
	})
	if err != nil {
		return nil, err
	}
	return &introspectCache{c: c}, nil
}

// answerTTL is how long an answer may be cached: the negative TTL for a
// refusal, else the positive TTL, but never past the end of the plan.
func answerTTL(a introspectAnswer, pos, neg time.Duration, now time.Time) time.Duration {
	if a.account == nil {
		return neg
	}
	if end := a.account.PlanExpires; !end.IsZero() {
		left := end.Sub(now)
		if left <= 0 {
			return neg // an expired plan: ask again soon, it may be renewed
		}
		if left < pos {
			return left
		}
	}
	return pos
}

// Cleanup closes idle connections to the app and releases this source's
// reference to the shared cache.
func (s *IntrospectAccounts) Cleanup() error {
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	if s.subscriber != nil {
		s.subscriber.unregister(s.cache)
		_, _ = subscribers.Delete(s.subscriber.key)
	}
	if s.poolKey != "" {
		_, err := introspectPool.Delete(s.poolKey)
		return err
	}
	return nil
}

// Lookup returns the account of token from the cache, or asks the app.
// Concurrent look-ups of one token share one call. A failed call is not
// cached.
func (s *IntrospectAccounts) Lookup(ctx context.Context, token string) (*Account, error) {
	key := tokenKey(token)
	if a, ok := s.cache.c.GetIfPresent(key); ok { // the hot path: no loader closure
		metrics.cacheHit.Inc()
		return a.result()
	}
	metrics.cacheMiss.Inc()
	a, err := s.cache.c.Get(ctx, key, otter.LoaderFunc[[sha256.Size]byte, introspectAnswer](
		func(ctx context.Context, _ [sha256.Size]byte) (introspectAnswer, error) {
			// The call is shared by every caller waiting for this token:
			// one caller going away must not fail it for the others.
			ctx = context.WithoutCancel(ctx)
			for try := 0; try < 3; try++ {
				before := s.cache.purges.Load()
				a, err := s.introspect(ctx, token)
				if err != nil || s.cache.purges.Load() == before {
					return a, err
				}
			}
			return introspectAnswer{}, errors.New("introspection kept racing purges")
		}))
	if err != nil {
		return nil, err
	}
	return a.result()
}

func (a introspectAnswer) result() (*Account, error) {
	if a.account == nil {
		return nil, ErrUnknownToken
	}
	return a.account, nil
}

// introspectResponse is the app's answer, as docs/introspection.md
// describes it.
type introspectResponse struct {
	Active          *bool             `json:"active"`
	Sub             json.RawMessage   `json:"sub"`
	Plan            string            `json:"plan"`
	PlanExpiresAt   *string           `json:"plan_expires_at"`
	MetaAccessToken string            `json:"meta_access_token"`
	PhoneNumberIDs  []json.RawMessage `json:"phone_number_ids"`
}

// idValue reads an id as the app may send it: a JSON string, or an
// integer (an ORM's numeric primary key, a phone number id from a JSON
// number), kept as its decimal digits. field names it in the error.
func idValue(field string, raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case len(raw) == 0 || string(raw) == "null":
		return "", nil
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", fmt.Errorf("introspection answer is not the expected JSON: %s is not a valid string", field)
		}
		return s, nil
	case media.IsDigits(strings.TrimPrefix(string(raw), "-"), 64):
		return string(raw), nil
	}
	return "", fmt.Errorf("introspection answer is not the expected JSON: %s must be a string or an integer", field)
}

// account is the account an active answer describes.
func (ir *introspectResponse) account() (*Account, error) {
	sub, phones, err := ir.ids()
	if err != nil {
		return nil, err
	}
	if sub == "" {
		return nil, errors.New("introspection answer is active without sub")
	}
	acct := &Account{ID: sub, Plan: ir.Plan, MetaToken: strings.TrimSpace(ir.MetaAccessToken), PhoneNumberIDs: phones}
	if ir.PlanExpiresAt != nil && *ir.PlanExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, *ir.PlanExpiresAt)
		if err != nil {
			return nil, errors.New("introspection answer has a plan_expires_at that is not RFC 3339")
		}
		acct.PlanExpires = t
	}
	return acct, nil
}

func (s *IntrospectAccounts) logAnswer(active bool, sub string, start time.Time) {
	if ce := s.logger.Check(zapcore.DebugLevel, "introspection answered"); ce != nil {
		ce.Write(zap.Bool("active", active), zap.String("sub", sub), zap.Duration("duration", time.Since(start)))
	}
}

// ids reads the account's id and phone number ids.
func (ir *introspectResponse) ids() (sub string, phones []string, err error) {
	if sub, err = idValue("sub", ir.Sub); err != nil {
		return "", nil, err
	}
	for i, raw := range ir.PhoneNumberIDs {
		p, err := idValue("phone_number_ids["+strconv.Itoa(i)+"]", raw)
		if err != nil {
			return "", nil, err
		}
		phones = append(phones, p)
	}
	return sub, phones, nil
}

// answerError names the field of the app's answer that did not parse.
func answerError(err error) error {
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &te) && te.Field != "":
		return fmt.Errorf("introspection answer is not the expected JSON: %s must be a JSON %s, not %s", te.Field, jsonKind(te.Type), te.Value)
	}
	return errors.New("introspection answer is not the expected JSON")
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "array"
	case reflect.Pointer:
		return jsonKind(t.Elem())
	}
	return "string"
}

// introspect makes one call to the app.
func (s *IntrospectAccounts) introspect(ctx context.Context, token string) (introspectAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Duration(s.Timeout))
	defer cancel()
	body := "token=" + url.QueryEscape(token)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, strings.NewReader(body))
	if err != nil {
		return introspectAnswer{}, err
	}
	req.Header = s.headers.Clone()
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		return introspectAnswer{}, fmt.Errorf("introspection call: %w", err)
	}
	defer resp.Body.Close()
	observeUpstream("introspection", start)
	if resp.StatusCode != http.StatusOK {
		return introspectAnswer{}, fmt.Errorf("introspection answered status %d", resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectAnswer+1))
	if err != nil {
		return introspectAnswer{}, fmt.Errorf("introspection answer: %w", err)
	}
	if len(raw) > maxIntrospectAnswer {
		return introspectAnswer{}, errors.New("introspection answer too large")
	}
	var ir introspectResponse
	if err := json.Unmarshal(raw, &ir); err != nil {
		return introspectAnswer{}, answerError(err)
	}
	if ir.Active == nil {
		// null, {} or an error object is "cannot answer", not "revoked".
		return introspectAnswer{}, errors.New("introspection answer is not the expected JSON: it has no active field")
	}
	if !*ir.Active {
		s.logAnswer(false, "", start)
		return introspectAnswer{}, nil
	}
	acct, err := ir.account()
	if err != nil {
		return introspectAnswer{}, err
	}
	s.logAnswer(true, acct.ID, start)
	return introspectAnswer{account: acct}, nil
}

// purge removes the cached answer under key (a token's SHA-256), or every
// answer when key is nil, and returns how many entries went.
func (ic *introspectCache) purge(key *[sha256.Size]byte) int {
	ic.purges.Add(1)
	if key == nil {
		n := ic.c.EstimatedSize()
		ic.c.InvalidateAll()
		return n
	}
	if _, ok := ic.c.Invalidate(*key); ok {
		return 1
	}
	return 0
}

// purgeIntrospectCaches purges key (nil: everything) from every cache of
// the running configs, and returns the entries removed and the caches
// reached.
func purgeIntrospectCaches(key *[sha256.Size]byte) (entries, caches int) {
	introspectPool.Range(func(_, v any) bool {
		entries += v.(*introspectCache).purge(key)
		caches++
		return true
	})
	return entries, caches
}

// UnmarshalCaddyfile sets up the introspect source from Caddyfile tokens.
// Syntax:
//
//	accounts introspect <url> {
//	    header       <name> <value>   # repeatable
//	    timeout      <duration>       # default 2s
//	    cache_ttl    <duration>       # default 30s
//	    negative_ttl <duration>       # default 5s
//	    max_entries  <n>              # default 100000
//	    tls_trust_pool  <module> [<args...>]  # reverse_proxy's TLS client options,
//	    tls_client_auth <cert.pem> <key.pem>  # for an https:// url
//	    tls_server_name <name>
//	    purge_channel <redis-url> [<channel>] {  # default channel whatsapp_media:purge
//	        tls_trust_pool  <module> [<args...>]  # the same, for a rediss:// url
//	        tls_client_auth <cert.pem> <key.pem>
//	        tls_server_name <name>
//	    }
//	}
func (s *IntrospectAccounts) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the source name ("introspect")
	if !d.Args(&s.URL) {
		return d.ArgErr()
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	if !strings.Contains(s.URL, "{") {
		if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return d.Errf("introspect url must be an absolute http(s) URL: '%s'", s.URL)
		}
	}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "header":
			var name, value string
			if !d.Args(&name, &value) || d.NextArg() {
				return d.ArgErr()
			}
			if s.Headers == nil {
				s.Headers = make(map[string][]string)
			}
			name = http.CanonicalHeaderKey(name)
			s.Headers[name] = append(s.Headers[name], value)
		case "timeout":
			if err := parseDurationArg(d, &s.Timeout); err != nil {
				return err
			}
		case "cache_ttl":
			if err := parseDurationArg(d, &s.CacheTTL); err != nil {
				return err
			}
		case "negative_ttl":
			if err := parseDurationArg(d, &s.NegativeTTL); err != nil {
				return err
			}
		case "purge_channel":
			if err := s.unmarshalPurgeChannel(d); err != nil {
				return err
			}
		case "max_entries":
			if err := parsePositiveArg(d, &s.MaxEntries); err != nil {
				return err
			}
		default:
			if ok, err := unmarshalTLSOption(d, &s.TLS); ok || err != nil {
				if err != nil {
					return err
				}
				continue
			}
			return d.Errf("unrecognized accounts introspect option '%s'", opt)
		}
	}
	return nil
}

// unmarshalPurgeChannel parses purge_channel <url> [<channel>], with an
// optional block of TLS client options for Redis.
func (s *IntrospectAccounts) unmarshalPurgeChannel(d *caddyfile.Dispenser) error {
	pc := &PurgeChannel{}
	if !d.Args(&pc.URL) {
		return d.ArgErr()
	}
	d.Args(&pc.Channel)
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if ok, err := unmarshalTLSOption(d, &pc.TLS); !ok || err != nil {
			if err != nil {
				return err
			}
			return d.Errf("unrecognized purge_channel option '%s'", d.Val())
		}
	}
	s.PurgeChannel = pc
	return nil
}

// Interface guards
var (
	_ AccountSource         = (*IntrospectAccounts)(nil)
	_ caddy.Provisioner     = (*IntrospectAccounts)(nil)
	_ caddy.CleanerUpper    = (*IntrospectAccounts)(nil)
	_ caddyfile.Unmarshaler = (*IntrospectAccounts)(nil)
	_ caddy.Destructor      = (*introspectCache)(nil)
)
