package whatsappmedia

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// DefaultPurgeChannel is the Redis channel purges arrive on.
const DefaultPurgeChannel = "whatsapp_media:purge"

// Reconnection backoff of the purge channel: jittered, doubling from
// purgeBackoffMin up to purgeBackoffMax between tries.
const (
	purgeBackoffMin = 100 * time.Millisecond
	purgeBackoffMax = 5 * time.Second
	// purgeHealthCheck is how long the subscriber waits for a message
	// before it pings Redis, to notice a connection that died silently.
	purgeHealthCheck = 30 * time.Second
	// purgeWarnEvery spaces the warnings while the channel stays down.
	purgeWarnEvery = time.Minute
)

// PurgeChannel is a Redis channel on which the app publishes revoked
// tokens, so that one PUBLISH purges them from every gateway's
// introspection cache. A message is the hex SHA-256 of a token (64
// characters), which purges that token, or "*", which purges everything;
// no raw token travels through Redis.
type PurgeChannel struct {
	// URL is the Redis server: redis://[:password@]host:port[/db], or
	// rediss:// for TLS, as the app's REDIS_URL. Placeholders such as
	// {env.REDIS_URL} are expanded at provision time. Required.
	URL string `json:"url,omitempty"`

	// Channel is the channel subscribed to. Default: whatsapp_media:purge.
	Channel string `json:"channel,omitempty"`

	// TLS configures the connection to Redis for a rediss:// URL, with the
	// same options as reverse_proxy's http transport (tls_trust_pool,
	// tls_client_auth, tls_server_name in the Caddyfile). Default: the
	// system's roots, no client certificate.
	TLS *reverseproxy.TLSConfig `json:"tls,omitempty"`
}

// purgeMessage parses a message of the purge channel: the key of the
// token to purge, nil for everything ("*"), or false for anything else.
func purgeMessage(payload string) (*[sha256.Size]byte, bool) {
	if payload == "*" {
		return nil, true
	}
	key, ok := parseTokenHash(payload)
	if !ok {
		return nil, false
	}
	return &key, true
}

// backoff is a jittered exponential backoff ("full jitter"): each wait is
// random in [0, d), d doubling from min to max.
type backoff struct {
	min, max, d time.Duration
}

func (b *backoff) next() time.Duration {
	if b.d < b.min {
		b.d = b.min
	}
	wait := time.Duration(rand.Int64N(int64(b.d))) + 1
	b.d = min(2*b.d, b.max)
	return wait
}

func (b *backoff) reset() { b.d = 0 }

// subscribers holds one subscriber per (URL, channel) in this process,
// shared by every config that names it, so that a reload keeps it.
var subscribers = caddy.NewUsagePool()

// subscriber listens on one purge channel and purges the caches of the
// introspection sources that name it.
type subscriber struct {
	key     string // in subscribers
	channel string
	client  *redis.Client
	logger  *zap.Logger
	cancel  context.CancelFunc
	done    chan struct{}

	mu     sync.Mutex
	caches map[*introspectCache]int // registrations by source
	ps     *redis.PubSub            // set by run
	up     prometheus.Gauge         // purge_channel_up of this subscriber
	// failed counts failed subscriptions and lastErr is the latest's
	// error, so that a test can wait for a refusal instead of a timeout.
	failed  atomic.Int64
	lastErr error

	// Junk messages are warned of at most once every purgeWarnEvery,
	// with the count since the last warning (run's goroutine only).
	junk       int
	junkWarned time.Time
	now        func() time.Time
}

// subscriberKey names a subscriber: its channel, URL and TLS options.
// The TLS part is tlsFingerprint's: the options and the contents of the
// files they name, so that a reload after certificates were rotated in
// place starts a subscriber with the new ones.
func subscriberKey(url, channel string, t *reverseproxy.TLSConfig) string {
	key := channel + "\x00" + url
	if t != nil {
		key += "\x00" + tlsFingerprint(t)
	}
	return key
}

// loadSubscriber returns the subscriber of (url, channel, TLS options),
// starting it if this is its first user. It never waits for Redis.
func loadSubscriber(url, channel string, t *reverseproxy.TLSConfig, tlsConfig *tls.Config, logger *zap.Logger) (*subscriber, error) {
	key := subscriberKey(url, channel, t)
	v, _, err := subscribers.LoadOrNew(key, func() (caddy.Destructor, error) {
		opts, err := redis.ParseURL(url)
		if err != nil {
			return nil, fmt.Errorf("purge_channel: %v", redactURLError(err))
		}
		if tlsConfig != nil {
			if opts.TLSConfig == nil {
				return nil, errors.New("purge_channel: TLS options need a rediss:// URL")
			}
			if tlsConfig.ServerName == "" {
				tlsConfig.ServerName = opts.TLSConfig.ServerName
			}
			opts.TLSConfig = tlsConfig
		}
		// Maintenance notifications are for Redis Enterprise and
		// cluster handoffs; against plain Redis they only log noise.
		opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		opts.DialTimeout = 5 * time.Second
		s := &subscriber{key: key, channel: channel, client: redis.NewClient(opts), logger: logger,
			done: make(chan struct{}), caches: map[*introspectCache]int{}, now: time.Now}
		ctx, cancel := context.WithCancel(context.Background())
		s.cancel = cancel
		s.up = metrics.channelUp.WithLabelValues(channel, opts.Addr)
		s.up.Set(0)
		go s.run(ctx)
		return s, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*subscriber), nil
}

// redactURLError keeps a Redis URL's password out of an error.
func redactURLError(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		return errors.New("not a valid redis:// or rediss:// URL")
	}
	return err
}

func (s *subscriber) register(ic *introspectCache) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.caches[ic]++
}

func (s *subscriber) unregister(ic *introspectCache) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.caches[ic]--; s.caches[ic] <= 0 {
		delete(s.caches, ic)
	}
}

// Destruct stops the subscriber once the last config using it is gone.
func (s *subscriber) Destruct() error {
	s.cancel()
	s.mu.Lock()
	if s.ps != nil {
		_ = s.ps.Close() // ends a Receive waiting on the connection
	}
	s.mu.Unlock()
	<-s.done
	metrics.channelUp.DeletePartialMatch(prometheus.Labels{"channel": s.channel, "server": s.client.Options().Addr})
	return s.client.Close()
}

// purge purges key (nil: everything) from the caches that name this
// channel.
func (s *subscriber) purge(key *[sha256.Size]byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for ic := range s.caches {
		n += ic.purge(key)
	}
	metrics.purges.WithLabelValues("channel").Inc()
	return n
}

// run subscribes and handles messages until ctx ends. While the
// subscription is down it retries with a jittered backoff; every
// subscription that follows a loss purges everything, because messages
// may have been missed meanwhile. go-redis re-dials and resubscribes on
// the Receive after an error; this loop paces those tries.
func (s *subscriber) run(ctx context.Context) {
	defer close(s.done)
	ps := s.client.Subscribe(ctx, s.channel)
	defer ps.Close()
	s.mu.Lock()
	s.ps = ps
	s.mu.Unlock()
	b := backoff{min: purgeBackoffMin, max: purgeBackoffMax}
	subscribed, lost := false, false
	var warned time.Time // the last warning while down
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, purgeHealthCheck)
		if err != nil {
			var ne net.Error
			if subscribed && errors.As(err, &ne) && ne.Timeout() {
				err = ps.Ping(ctx) // quiet for a while: is Redis still there?
			}
			if err != nil && ctx.Err() == nil {
				s.down(err, subscribed || time.Since(warned) >= purgeWarnEvery, &warned)
				subscribed, lost = false, true
				sleepCtx(ctx, b.next())
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" && m.Channel == s.channel {
				subscribed, warned = true, time.Time{}
				b.reset()
				s.up.Set(1)
				s.logger.Info("purge channel subscribed", zap.String("channel", s.channel), zap.Bool("after_loss", lost))
				if lost {
					s.purge(nil)
					lost = false
				}
			}
		case *redis.Message:
			s.handle(m.Payload)
		}
	}
}

// down records a failed subscription. It warns when warn is set (the
// channel was up, or the last warning is purgeWarnEvery old: a wrong
// password or certificate must not fail silently); other retries are
// logged at debug level.
func (s *subscriber) down(err error, warn bool, warned *time.Time) {
	s.up.Set(0)
	s.mu.Lock()
	s.lastErr = err
	s.mu.Unlock()
	s.failed.Add(1)
	level := zapcore.DebugLevel
	if warn {
		level = zapcore.WarnLevel
		*warned = time.Now()
	}
	if ce := s.logger.Check(level, "purge channel down; retrying; revocations do not reach this instance until it is back"); ce != nil {
		ce.Write(zap.String("channel", s.channel), zap.Error(err))
	}
}

// handle applies one message. An unexpected message is ignored with a
// warning, at most one a minute however many come (with their count), so
// that a publisher's mistake cannot flood the log. Its text is never logged, not even at debug level: the likely
// mistake is an app publishing the raw token instead of its hash. The
// debug log gives the message's SHA-256 instead, which for a raw token is
// the message the app should have sent.
func (s *subscriber) handle(payload string) {
	key, ok := purgeMessage(payload)
	if !ok {
		s.junk++
		if now := s.now(); now.Sub(s.junkWarned) >= purgeWarnEvery {
			s.logger.Warn("purge channel: ignored messages that are neither a token's hex SHA-256 nor *",
				zap.String("channel", s.channel), zap.Int("ignored", s.junk), zap.Int("last_length", len(payload)))
			s.junk, s.junkWarned = 0, now
		}
		if ce := s.logger.Check(zapcore.DebugLevel, "purge channel: the ignored message, hashed"); ce != nil {
			ce.Write(zap.String("message_sha256", hashToken(payload)))
		}
		return
	}
	n := s.purge(key)
	if ce := s.logger.Check(zapcore.DebugLevel, "purge channel: purged"); ce != nil {
		ce.Write(zap.String("channel", s.channel), zap.Bool("all", key == nil), zap.Int("entries", n))
	}
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
