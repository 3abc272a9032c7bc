package whatsappmedia

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

// fakeApp implements the app's side of introspection (docs/introspection.md).
type fakeApp struct {
	srv     *httptest.Server
	calls   atomic.Int32
	mu      sync.Mutex
	answers map[string]any // token -> JSON answer
	status  int
	delay   time.Duration
	gate    chan struct{} // when set, calls wait for it to close
	lastReq *http.Request
	lastTok string
}

func newFakeApp(t testing.TB) *fakeApp {
	a := &fakeApp{answers: map[string]any{}, status: 200}
	a.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		a.mu.Lock()
		a.lastReq, a.lastTok = r.Clone(context.Background()), form.Get("token")
		ans, ok := a.answers[form.Get("token")]
		status, delay, gate := a.status, a.delay, a.gate
		a.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		if !ok {
			ans = map[string]any{"active": false}
		}
		if s, isString := ans.(string); isString {
			_, _ = io.WriteString(w, s)
			return
		}
		_ = json.NewEncoder(w).Encode(ans)
	}))
	t.Cleanup(a.srv.Close)
	return a
}

func (a *fakeApp) set(token string, answer any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.answers[token] = answer
}

func activeAnswer(sub string, expires time.Time) map[string]any {
	m := map[string]any{
		"active": true, "sub": sub, "plan": "premium",
		"meta_access_token": "EAAG-" + sub, "phone_number_ids": []string{phoneA}, "waba_id": "1029384756",
	}
	if !expires.IsZero() {
		m["plan_expires_at"] = expires.UTC().Format(time.RFC3339Nano)
	}
	return m
}

func newIntrospect(t testing.TB, app *fakeApp, mod func(*IntrospectAccounts)) *IntrospectAccounts {
	t.Helper()
	s := &IntrospectAccounts{URL: app.srv.URL + "/internal/introspect"}
	if mod != nil {
		mod(s)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	require.NoError(t, s.Provision(ctx))
	s.logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	t.Cleanup(func() {
		_ = s.Cleanup()
		cancel()
	})
	return s
}

func TestIntrospectRequestAndCache(t *testing.T) {
	t.Setenv("INTROSPECT_SECRET", "s3cret")
	app := newFakeApp(t)
	exp := time.Now().Add(24 * time.Hour).Truncate(time.Second)
	app.set("tok&=1", activeAnswer("user_42", exp))
	s := newIntrospect(t, app, func(s *IntrospectAccounts) {
		s.Headers = map[string][]string{"X-Introspect-Secret": {"{env.INTROSPECT_SECRET}"}}
	})

	acct, err := s.Lookup(context.Background(), "tok&=1")
	require.NoError(t, err)
	assert.Equal(t, &Account{ID: "user_42", Plan: "premium", PlanExpires: exp.UTC(), MetaToken: "EAAG-user_42",
		PhoneNumberIDs: []string{phoneA}}, acct)
	r := app.lastReq
	assert.Equal(t, http.MethodPost, r.Method)
	assert.Equal(t, "/internal/introspect", r.URL.Path)
	assert.Equal(t, "application/x-www-form-urlencoded", r.Header.Get("Content-Type"))
	assert.Equal(t, "s3cret", r.Header.Get("X-Introspect-Secret"))
	assert.Equal(t, userAgent, r.Header.Get("User-Agent"))
	assert.Equal(t, "tok&=1", app.lastTok, "the token must be form-encoded")

	for i := 0; i < 10; i++ {
		_, err := s.Lookup(context.Background(), "tok&=1")
		require.NoError(t, err)
	}
	assert.Equal(t, int32(1), app.calls.Load(), "cached answers were not used")
}

func TestIntrospectNegativeAndExpiry(t *testing.T) {
	app := newFakeApp(t)
	app.set("good", activeAnswer("u1", time.Time{}))
	clk := newTestClock()
	s := newIntrospect(t, app, func(s *IntrospectAccounts) {
		s.CacheTTL = caddy.Duration(30 * time.Second)
		s.NegativeTTL = caddy.Duration(5 * time.Second)
		s.now, s.clock = clk.Now, clk
	})
	for i := 0; i < 3; i++ {
		_, err := s.Lookup(context.Background(), "revoked")
		assert.ErrorIs(t, err, ErrUnknownToken)
		_, err = s.Lookup(context.Background(), "good")
		require.NoError(t, err)
	}
	assert.Equal(t, int32(2), app.calls.Load(), "negative or positive answer not cached")
	clk.Advance(5*time.Second + time.Millisecond)
	_, err := s.Lookup(context.Background(), "revoked")
	assert.ErrorIs(t, err, ErrUnknownToken)
	_, err = s.Lookup(context.Background(), "good")
	require.NoError(t, err)
	assert.Equal(t, int32(3), app.calls.Load(), "the negative answer outlived negative_ttl, or the positive one went early")
	clk.Advance(25 * time.Second)
	_, err = s.Lookup(context.Background(), "good")
	require.NoError(t, err)
	assert.Equal(t, int32(4), app.calls.Load(), "the positive answer outlived cache_ttl")
}

func TestIntrospectPlanExpiryInsideTTL(t *testing.T) {
	app := newFakeApp(t)
	clk := newTestClock()
	app.set("tok", activeAnswer("u1", clk.Now().Add(10*time.Minute)))
	s := newIntrospect(t, app, func(s *IntrospectAccounts) {
		s.CacheTTL = caddy.Duration(time.Hour)
		s.now, s.clock = clk.Now, clk
	})
	_, err := s.Lookup(context.Background(), "tok")
	require.NoError(t, err)
	_, err = s.Lookup(context.Background(), "tok")
	require.NoError(t, err)
	assert.Equal(t, int32(1), app.calls.Load())
	clk.Advance(10*time.Minute + time.Second)
	// The entry ended with the plan: the app is asked again (and may say
	// the plan was renewed).
	app.set("tok", activeAnswer("u1", clk.Now().Add(time.Hour)))
	acct, err := s.Lookup(context.Background(), "tok")
	require.NoError(t, err)
	assert.Equal(t, int32(2), app.calls.Load(), "a cached entry outlived the plan")
	assert.True(t, acct.PlanExpires.After(clk.Now()))
}

func TestAnswerTTL(t *testing.T) {
	now := time.Now()
	pos, neg := 30*time.Second, 5*time.Second
	assert.Equal(t, neg, answerTTL(introspectAnswer{}, pos, neg, now))
	assert.Equal(t, pos, answerTTL(introspectAnswer{account: &Account{}}, pos, neg, now))
	assert.Equal(t, 10*time.Second, answerTTL(introspectAnswer{account: &Account{PlanExpires: now.Add(10 * time.Second)}}, pos, neg, now))
	assert.Equal(t, pos, answerTTL(introspectAnswer{account: &Account{PlanExpires: now.Add(time.Hour)}}, pos, neg, now))
	assert.Equal(t, neg, answerTTL(introspectAnswer{account: &Account{PlanExpires: now.Add(-time.Second)}}, pos, neg, now))
}

func TestIntrospectConcurrentColdLookupsCollapse(t *testing.T) {
	app := newFakeApp(t)
	app.set("tok", activeAnswer("u1", time.Time{}))
	gate := make(chan struct{})
	app.gate = gate
	s := newIntrospect(t, app, nil)
	const n = 50
	misses := testutil.ToFloat64(metrics.cacheMiss)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			_, err := s.Lookup(ctx, "tok")
			errs <- err
		}()
	}
	// Every look-up has missed the cache while the first call is held: a
	// look-up that reaches the cache after the gate opens finds the answer.
	require.Eventually(t, func() bool {
		return app.calls.Load() >= 1 && testutil.ToFloat64(metrics.cacheMiss)-misses >= n
	}, 5*time.Second, time.Millisecond)
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, int32(1), app.calls.Load(), "concurrent look-ups of one token made several calls")
}

func TestIntrospectFailuresNotCached(t *testing.T) {
	app := newFakeApp(t)
	app.set("tok", activeAnswer("u1", time.Time{}))
	s := newIntrospect(t, app, func(s *IntrospectAccounts) { s.Timeout = caddy.Duration(200 * time.Millisecond) })

	for _, c := range []struct {
		name   string
		status int
		answer any
	}{
		{"5xx", 500, nil},
		{"4xx", 401, nil},
		{"malformed", 200, "{not json"},
		{"html", 200, "<html>oops</html>"},
		{"active without sub", 200, map[string]any{"active": true}},
		{"bad plan_expires_at", 200, map[string]any{"active": true, "sub": "u", "plan_expires_at": "tomorrow"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := app.calls.Load()
			app.mu.Lock()
			app.status = c.status
			app.mu.Unlock()
			if c.answer != nil {
				app.set("tok", c.answer)
			}
			_, err := s.Lookup(context.Background(), "tok")
			require.Error(t, err)
			assert.NotErrorIs(t, err, ErrUnknownToken, "a failure must not read as a refusal")
			_, err = s.Lookup(context.Background(), "tok")
			require.Error(t, err)
			assert.Equal(t, before+2, app.calls.Load(), "a failed call was cached")
		})
	}

	t.Run("timeout", func(t *testing.T) {
		app.mu.Lock()
		app.status, app.delay = 200, 5*time.Second
		app.mu.Unlock()
		app.set("tok", activeAnswer("u1", time.Time{}))
		start := time.Now()
		_, err := s.Lookup(context.Background(), "tok")
		require.Error(t, err)
		assert.Less(t, time.Since(start), 3*time.Second, "the timeout was not honoured")
		app.mu.Lock()
		app.delay = 0
		app.mu.Unlock()
		_, err = s.Lookup(context.Background(), "tok")
		require.NoError(t, err, "the timed-out call was cached")
	})

	t.Run("app down", func(t *testing.T) {
		down := &IntrospectAccounts{URL: "http://127.0.0.1:1/introspect"}
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		defer cancel()
		require.NoError(t, down.Provision(ctx))
		defer down.Cleanup()
		_, err := down.Lookup(context.Background(), "tok")
		require.Error(t, err)
		assert.False(t, errors.Is(err, ErrUnknownToken))
	})
}

func TestIntrospectPurge(t *testing.T) {
	app := newFakeApp(t)
	app.set("a", activeAnswer("ua", time.Time{}))
	app.set("b", activeAnswer("ub", time.Time{}))
	s := newIntrospect(t, app, nil)
	for _, tok := range []string{"a", "b", "c"} {
		_, _ = s.Lookup(context.Background(), tok)
	}
	require.Equal(t, int32(3), app.calls.Load())

	n, caches := purgeIntrospectCaches(keyOf("a"))
	assert.Equal(t, 1, n)
	assert.GreaterOrEqual(t, caches, 1)
	n, _ = purgeIntrospectCaches(keyOf("a"))
	assert.Equal(t, 0, n, "already purged")
	app.set("a", map[string]any{"active": false}) // regenerated: the old token is revoked
	_, err := s.Lookup(context.Background(), "a")
	assert.ErrorIs(t, err, ErrUnknownToken, "the purged token was still served from the cache")
	assert.Equal(t, int32(4), app.calls.Load())

	n, _ = purgeIntrospectCaches(nil)
	assert.GreaterOrEqual(t, n, 3)
	_, _ = s.Lookup(context.Background(), "b")
	assert.Equal(t, int32(5), app.calls.Load())
}

func TestIntrospectThroughHandler(t *testing.T) {
	app := newFakeApp(t)
	app.set("good", activeAnswer("user_42", time.Time{}))
	app.set("nometa", map[string]any{"active": true, "sub": "u2", "plan": "premium", "meta_access_token": ""})
	app.set("dev", map[string]any{"active": true, "sub": "u3", "plan": "developer", "meta_access_token": "x"})
	e := newEnv(t, func(h *Handler) {
		h.AccountsRaw = json.RawMessage(`{"source":"introspect","url":"` + app.srv.URL + `"}`)
	})
	e.emu.Reset()
	for tok, want := range map[string]struct {
		status int
		code   string
	}{
		"revoked": {401, codeUnauthorized},
		"nometa":  {404, codeNotFound},
		"dev":     {403, codeDeveloperPlan},
	} {
		a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/123/download"), tok))
		assert.Equal(t, want.status, a.Status, tok)
		assert.Equal(t, want.code, a.Error, tok)
	}
	app.srv.Close() // the app goes down: fail closed
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/123/download"), "unseen"))
	assert.Equal(t, 503, a.Status)
	assert.Equal(t, codeAuthUnavailable, a.Error)
}

func TestIntrospectCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`introspect https://app.internal/introspect {
		header X-Introspect-Secret {env.SECRET}
		header X-Extra a
		header X-Extra b
		timeout 1s
		cache_ttl 1m
		negative_ttl 10s
		max_entries 500
		purge_channel {env.REDIS_URL} gw:purge
	}`)
	var s IntrospectAccounts
	require.NoError(t, s.UnmarshalCaddyfile(d))
	assert.Equal(t, &PurgeChannel{URL: "{env.REDIS_URL}", Channel: "gw:purge"}, s.PurgeChannel)
	assert.Equal(t, "https://app.internal/introspect", s.URL)
	assert.Equal(t, map[string][]string{"X-Introspect-Secret": {"{env.SECRET}"}, "X-Extra": {"a", "b"}}, s.Headers)
	assert.Equal(t, caddy.Duration(time.Second), s.Timeout)
	assert.Equal(t, caddy.Duration(time.Minute), s.CacheTTL)
	assert.Equal(t, caddy.Duration(10*time.Second), s.NegativeTTL)
	assert.Equal(t, 500, s.MaxEntries)

	for input, want := range map[string]string{
		"introspect":                                                "wrong argument count",
		"introspect ftp://x":                                        "must be an absolute http(s) URL",
		"introspect http://x extra":                                 "wrong argument count",
		"introspect http://x {\ncolour red\n}":                      "unrecognized accounts introspect option 'colour'",
		"introspect http://x {\ntimeout no\n}":                      "timeout must be a positive duration",
		"introspect http://x {\nmax_entries -1\n}":                  "max_entries must be a positive number",
		"introspect http://x {\nheader X\n}":                        "wrong argument count",
		"introspect http://x {\npurge_channel\n}":                   "wrong argument count",
		"introspect http://x {\npurge_channel redis://r c extra\n}": "wrong argument count",
	} {
		var s IntrospectAccounts
		err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		require.Error(t, err, input)
		assert.Contains(t, err.Error(), want, input)
	}
}

// BenchmarkIntrospectCachedLookup measures a look-up answered from the
// cache.
//
//	go test -run '^$' -bench BenchmarkIntrospectCachedLookup -benchmem .
func BenchmarkIntrospectCachedLookup(b *testing.B) {
	app := newFakeApp(b)
	app.set("tok", activeAnswer("u1", time.Time{}))
	s := newIntrospect(b, app, func(s *IntrospectAccounts) { s.CacheTTL = caddy.Duration(time.Hour) })
	ctx := context.Background()
	_, _ = s.Lookup(ctx, "tok")
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Lookup(ctx, "tok"); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func TestIntrospectEmptyAnswersFailClosed(t *testing.T) {
	app := newFakeApp(t)
	s := newIntrospect(t, app, nil)
	for _, ans := range []string{"null", "{}", `{"error":"db down"}`, `[]`} {
		app.set("tok", ans)
		_, err := s.Lookup(context.Background(), "tok")
		require.Error(t, err, ans)
		assert.NotErrorIs(t, err, ErrUnknownToken, "%s read as a revoked token", ans)
	}
}

// TestIntrospectIDsAndFieldErrors: ids may come as JSON integers (an
// ORM's numeric keys), and an answer that does not parse names its field.
func TestIntrospectIDsAndFieldErrors(t *testing.T) {
	app := newFakeApp(t)
	s := newIntrospect(t, app, nil)
	app.set("num", `{"active": true, "sub": 42, "plan": "premium", "meta_access_token": "EAAG",
		"phone_number_ids": [106540352242922, "106540352242923"]}`)
	acct, err := s.Lookup(context.Background(), "num")
	require.NoError(t, err)
	assert.Equal(t, "42", acct.ID)
	assert.Equal(t, []string{phoneA, phoneB}, acct.PhoneNumberIDs)
	for ans, want := range map[string]string{
		`{"active": "yes"}`:                                             "active must be a JSON boolean, not string",
		`{"active": true, "sub": {"id": 1}}`:                            "sub must be a string or an integer",
		`{"active": true, "sub": 1.5}`:                                  "sub must be a string or an integer",
		`{"active": true, "sub": "u", "plan": 3}`:                       "plan must be a JSON string, not number",
		`{"active": true, "sub": "u", "phone_number_ids": "1"}`:         "phone_number_ids must be a JSON array, not string",
		`{"sub": "u"}`:                                                  "it has no active field",
		`{"active": true, "sub": "u", "phone_number_ids": ["1", true]}`: "phone_number_ids[1] must be a string or an integer",
	} {
		app.set("bad", ans)
		_, err := s.Lookup(context.Background(), "bad")
		require.Error(t, err, ans)
		assert.NotErrorIs(t, err, ErrUnknownToken)
		assert.Contains(t, err.Error(), want, ans)
	}
}

func TestIntrospectPurgeAllRacesLoad(t *testing.T) {
	app := newFakeApp(t)
	app.set("tok", activeAnswer("u", time.Time{}))
	gate := make(chan struct{})
	app.mu.Lock()
	app.gate = gate
	app.mu.Unlock()
	s := newIntrospect(t, app, nil)
	done := make(chan error, 1)
	go func() {
		_, err := s.Lookup(context.Background(), "tok")
		done <- err
	}()
	require.Eventually(t, func() bool { return app.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	// The token is revoked and everything purged while the first answer
	// (still "active") is on its way.
	app.set("tok", map[string]any{"active": false})
	purgeIntrospectCaches(nil)
	app.mu.Lock()
	app.gate = nil
	app.mu.Unlock()
	close(gate)
	assert.ErrorIs(t, <-done, ErrUnknownToken, "an answer from before the purge was used")
	_, err := s.Lookup(context.Background(), "tok")
	assert.ErrorIs(t, err, ErrUnknownToken, "an answer from before the purge was cached")
}

func TestIntrospectionSlowFailsClosed(t *testing.T) {
	app := newFakeApp(t)
	app.set("tok", activeAnswer("u", time.Time{}))
	app.delay = 3 * time.Second
	e := newEnv(t, func(h *Handler) {
		h.AccountsRaw = []byte(`{"source":"introspect","url":"` + app.srv.URL + `","timeout":"200ms"}`)
	})
	start := time.Now()
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/1/download"), "tok"))
	assert.Equal(t, 503, a.Status)
	assert.Equal(t, codeAuthUnavailable, a.Error)
	assert.Less(t, time.Since(start), 2*time.Second)
	app.mu.Lock()
	app.delay = 0
	app.mu.Unlock()
	a = e.do(mustReq(t, http.MethodGet, e.url("/v2/media/1/download"), "tok"))
	assert.NotEqual(t, codeAuthUnavailable, a.Error, "the timed-out look-up was cached")
	assert.Equal(t, codeMetaAPIError, a.Error, "the account was known: Meta refused its token")
}

// keyOf is a pointer to token's key, as the purge functions take it.
func keyOf(token string) *[sha256.Size]byte {
	k := tokenKey(token)
	return &k
}

func TestIntrospectPurgeChannelDefaults(t *testing.T) {
	var s IntrospectAccounts
	require.NoError(t, s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("introspect http://x {\npurge_channel redis://:pw@127.0.0.1:1/2\n}")))
	assert.Equal(t, &PurgeChannel{URL: "redis://:pw@127.0.0.1:1/2"}, s.PurgeChannel)
	// Provisioned against a Redis that is not there: provisioning does not
	// wait, the channel defaults, and the URL's password is nowhere.
	app := newFakeApp(t)
	start := time.Now()
	p := newIntrospect(t, app, func(p *IntrospectAccounts) { p.PurgeChannel = s.PurgeChannel })
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Equal(t, DefaultPurgeChannel, p.PurgeChannel.Channel)
	_, err := loadSubscriber("redis://:secret@[::1", "c", nil, nil, zap.NewNop())
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "secret")
}
