package whatsappmedia

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

func TestPurgeMessage(t *testing.T) {
	hash := fixtures.SHA256Hex([]byte("tok"))
	key, ok := purgeMessage(hash)
	require.True(t, ok)
	assert.Equal(t, keyOf("tok"), key)
	key, ok = purgeMessage(strings.ToUpper(hash))
	assert.True(t, ok, "hex digits in either case")
	assert.Equal(t, keyOf("tok"), key)
	key, ok = purgeMessage("*")
	assert.True(t, ok)
	assert.Nil(t, key, "* purges everything")
	for _, junk := range []string{"", "tok", hash[:63], hash + "0", strings.Repeat("g", 64), " " + hash[1:], "**", "all"} {
		_, ok := purgeMessage(junk)
		assert.False(t, ok, "%q", junk)
	}
}

func TestBackoff(t *testing.T) {
	b := backoff{min: 100 * time.Millisecond, max: 5 * time.Second}
	limit := b.min
	for i := 0; i < 20; i++ {
		w := b.next()
		assert.Positive(t, w)
		assert.LessOrEqual(t, w, limit, "try %d", i)
		limit = min(2*limit, b.max)
	}
	assert.Equal(t, 5*time.Second, b.d, "capped at the max")
	// Jittered: waits at the cap differ.
	seen := map[time.Duration]bool{}
	for i := 0; i < 10; i++ {
		seen[b.next()] = true
	}
	assert.Greater(t, len(seen), 5)
	b.reset()
	assert.LessOrEqual(t, b.next(), b.min)
}

func TestPurgeRequest(t *testing.T) {
	hash := fixtures.SHA256Hex([]byte("tok"))
	for body, want := range map[string]*[32]byte{
		`{"token": "tok"}`:                 keyOf("tok"),
		`{"token_sha256": "` + hash + `"}`: keyOf("tok"),
		`{}`:                               nil,
		``:                                 nil,
	} {
		key, err := purgeRequest(strings.NewReader(body))
		require.NoError(t, err, body)
		assert.Equal(t, want, key, body)
	}
	for _, body := range []string{`{"token": ""}`, `{"token_sha256": "abc"}`, `{"token": "a", "token_sha256": "` + hash + `"}`, `{"tokn": "a"}`, `[`,
		// Mistakes that would read as {} and purge everything.
		`null`, ` null `, `{"token": null}`, `{"token_sha256": null}`, `{"token_sha256": ""}`, `[]`, `"tok"`} {
		_, err := purgeRequest(strings.NewReader(body))
		assert.Error(t, err, body)
	}
}

func redisClient(t *testing.T, r *fixtures.Redis) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: r.Addr,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestPurgeChannel drives one subscriber against a redis-server of the
// test's own: purges by hash and "*", junk ignored, and an outage that
// costs no look-up and ends with everything purged.
func TestPurgeChannel(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) }) // runs last: after every other cleanup
	rs := fixtures.StartRedis(t)
	app := newFakeApp(t)
	for _, tok := range []string{"a", "b", "c"} {
		app.set(tok, activeAnswer("u"+tok, time.Time{}))
	}
	s := newIntrospect(t, app, func(s *IntrospectAccounts) { s.PurgeChannel = &PurgeChannel{URL: rs.URL()} })
	up := func() float64 {
		return testutil.ToFloat64(metrics.channelUp.WithLabelValues(DefaultPurgeChannel, rs.Addr))
	}
	require.Eventually(t, func() bool { return up() == 1 }, 10*time.Second, 10*time.Millisecond)
	pub := redisClient(t, rs)
	ctx := context.Background()
	lookup := func(tok string) error { _, err := s.Lookup(ctx, tok); return err }
	cached := func(tok string) bool { _, ok := s.cache.c.GetIfPresent(tokenKey(tok)); return ok }
	for _, tok := range []string{"a", "b", "c"} {
		require.NoError(t, lookup(tok))
	}

	// One token, by its hash.
	app.set("a", map[string]any{"active": false})
	n, err := pub.Publish(ctx, DefaultPurgeChannel, fixtures.SHA256Hex([]byte("a"))).Result()
	require.NoError(t, err)
	assert.Equal(t, int64(1), n, "one subscriber")
	require.Eventually(t, func() bool { return !cached("a") }, time.Second, 5*time.Millisecond)
	assert.ErrorIs(t, lookup("a"), ErrUnknownToken)
	assert.True(t, cached("b"))

	// Junk changes nothing.
	require.NoError(t, pub.Publish(ctx, DefaultPurgeChannel, "not a hash").Err())
	require.NoError(t, pub.Publish(ctx, DefaultPurgeChannel, fixtures.SHA256Hex([]byte("c"))).Err()) // a marker after it
	require.Eventually(t, func() bool { return !cached("c") }, time.Second, 5*time.Millisecond)
	assert.True(t, cached("b"), "the junk message purged something")

	// Everything.
	require.NoError(t, pub.Publish(ctx, DefaultPurgeChannel, "*").Err())
	require.Eventually(t, func() bool { return !cached("b") }, time.Second, 5*time.Millisecond)

	// Redis goes away: look-ups go on, the channel is down; a token
	// revoked meanwhile is purged when the subscription is back.
	require.NoError(t, lookup("b"))
	rs.Stop()
	require.Eventually(t, func() bool { return up() == 0 }, 10*time.Second, 10*time.Millisecond)
	app.set("b", map[string]any{"active": false})
	assert.NoError(t, lookup("b"), "served from the cache, as without a channel")
	require.NoError(t, lookup("c"), "and asked of the app")
	rs.Start()
	require.Eventually(t, func() bool { return up() == 1 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return !cached("b") }, 5*time.Second, 10*time.Millisecond, "nothing purged after the outage")
	assert.ErrorIs(t, lookup("b"), ErrUnknownToken)

	// The last source gone, the subscriber stops (goleak checks).
	require.NoError(t, s.Cleanup())
	s.subscriber = nil
	_, ok := subscribers.References(subscriberKey(rs.URL(), DefaultPurgeChannel, nil))
	assert.False(t, ok)
}

// TestPurgeChannelJunkWarnings: however many junk messages come, one
// warning a minute, with their count.
func TestPurgeChannelJunkWarnings(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &subscriber{channel: "c", logger: zap.New(core), caches: map[*introspectCache]int{}, now: func() time.Time { return now }}
	for i := 0; i < 1000; i++ {
		s.handle("not a hash")
	}
	require.Equal(t, 1, logs.Len(), "one warning for a burst")
	assert.Equal(t, int64(1), logs.All()[0].ContextMap()["ignored"])
	now = now.Add(purgeWarnEvery)
	s.handle("still not a hash")
	require.Equal(t, 2, logs.Len())
	assert.Equal(t, int64(1000), logs.All()[1].ContextMap()["ignored"], "the count since the last warning")
}
