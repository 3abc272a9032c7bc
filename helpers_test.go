package whatsappmedia

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// Test accounts. Each test token belongs to one account of testAccounts.
const (
	tokPremium    = "tok-premium"
	tokEnterprise = "tok-enterprise"
	tokDeveloper  = "tok-developer"
	tokExpired    = "tok-expired"
	tokNoMeta     = "tok-nometa"
	tokExpiredDev = "tok-expired-dev"
	tokNoMetaExp  = "tok-nometa-expired"

	metaToken  = "EAAG-meta-token"
	phoneA     = "106540352242922"
	phoneB     = "106540352242923"
	phoneOther = "999999999999999"
)

func testAccountsJSON() json.RawMessage {
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	future := time.Now().Add(24 * time.Hour).UTC().Format(time.RFC3339)
	acc := map[string]any{
		"premium":        map[string]any{"token": tokPremium, "plan": "premium", "plan_expires": future, "meta_token": metaToken, "phone_numbers": []string{phoneA, phoneB}},
		"enterprise":     map[string]any{"token_sha256": fixtures.SHA256Hex([]byte(tokEnterprise)), "plan": "Enterprise", "meta_token": metaToken, "phone_numbers": []string{phoneA}},
		"developer":      map[string]any{"token": tokDeveloper, "plan": "developer", "meta_token": metaToken, "phone_numbers": []string{phoneA}},
		"expired":        map[string]any{"token": tokExpired, "plan": "premium", "plan_expires": past, "meta_token": metaToken, "phone_numbers": []string{phoneA}},
		"nometa":         map[string]any{"token": tokNoMeta, "plan": "premium", "phone_numbers": []string{phoneA}},
		"expired-dev":    map[string]any{"token": tokExpiredDev, "plan": "developer", "plan_expires": past, "meta_token": metaToken},
		"nometa-expired": map[string]any{"token": tokNoMetaExp, "plan": "premium", "plan_expires": past},
	}
	b, _ := json.Marshal(map[string]any{"source": "static", "accounts": acc})
	return b
}

// env is a handler provisioned against an emulator, served by an
// httptest server the way Caddy would serve it.
type env struct {
	t       testing.TB
	emu     *metaemu.Server
	emuSrv  *httptest.Server
	h       *Handler
	srv     *httptest.Server
	nextHit atomic.Int32
}

func newEnv(t testing.TB, opts ...func(*Handler)) *env {
	t.Helper()
	return newEnvWith(t, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA, phoneB}}}, opts...)
}

func newEnvWith(t testing.TB, cfg metaemu.Config, opts ...func(*Handler)) *env {
	t.Helper()
	// Every test's goroutines must be gone when it ends: handlers, the
	// transport's connections to Meta, timers, caches.
	leakOpts := []goleak.Option{goleak.IgnoreCurrent()}
	t.Cleanup(func() {
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(leakOpts...); err != nil {
			t.Errorf("goroutines leaked: %v", err)
		}
	})
	emu, err := metaemu.New(cfg)
	require.NoError(t, err)
	e := &env{t: t, emu: emu}
	e.emuSrv = httptest.NewServer(emu)
	h := &Handler{GraphURL: e.emuSrv.URL, AccountsRaw: testAccountsJSON(), SpoolDir: t.TempDir()}
	for _, o := range opts {
		o(h)
	}
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	require.NoError(t, h.Provision(ctx))
	require.NoError(t, h.Validate())
	// Logs go to the test's log, shown when it fails.
	h.logger = zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	e.h = h
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		e.nextHit.Add(1)
		w.Header().Set("X-Next", "app")
		_, err := io.WriteString(w, "app")
		return err
	})
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), w, nil)
		if err := h.ServeHTTP(w, r, next); err != nil {
			t.Errorf("ServeHTTP returned %v", err)
		}
	}))
	t.Cleanup(func() {
		e.srv.Close()
		_ = emu.Close() // releases hanging fault handlers first
		e.emuSrv.Close()
		_ = h.Cleanup()
		cancel()
	})
	return e
}

func (e *env) url(path string) string { return e.srv.URL + path }

// answer is a decoded envelope.
type answer struct {
	Status  int
	Header  http.Header
	Success bool            `json:"success"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Details json.RawMessage `json:"details"`
	Data    struct {
		MediaID  string `json:"mediaId"`
		MimeType string `json:"mimeType"`
		Size     int64  `json:"size"`
	} `json:"data"`
	Raw string
}

func (e *env) do(req *http.Request) answer {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	a := answer{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		require.NoError(e.t, json.Unmarshal(raw, &a), "body: %s", raw)
	}
	return a
}

// rawUpload builds a mode B request.
func (e *env) rawUpload(token string, body io.Reader, hdr map[string]string) *http.Request {
	req, err := http.NewRequest(http.MethodPost, e.url("/v2/media/upload"), body)
	require.NoError(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return req
}

// formPart is one part of a multipart body built by tests.
type formPart struct {
	name, filename, contentType string
	data                        []byte
}

func field(name, value string) formPart { return formPart{name: name, data: []byte(value)} }

func filePart(filename, contentType string, data []byte) formPart {
	return formPart{name: "file", filename: filename, contentType: contentType, data: data}
}

func buildForm(t testing.TB, parts ...formPart) (*bytes.Buffer, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		cd := `form-data; name="` + p.name + `"`
		if p.filename != "" {
			cd += `; filename="` + p.filename + `"`
		}
		h.Set("Content-Disposition", cd)
		if p.contentType != "" {
			h.Set("Content-Type", p.contentType)
		}
		w, err := mw.CreatePart(h)
		require.NoError(t, err)
		_, err = w.Write(p.data)
		require.NoError(t, err)
	}
	require.NoError(t, mw.Close())
	return &buf, mw.FormDataContentType()
}

func (e *env) formUpload(token string, parts ...formPart) *http.Request {
	body, ct := buildForm(e.t, parts...)
	req := e.rawUpload(token, body, map[string]string{"Content-Type": ct})
	return req
}

// readTracker records whether anything read the body.
type readTracker struct {
	r    io.Reader
	read atomic.Bool
}

func (rt *readTracker) Read(p []byte) (int, error) {
	rt.read.Store(true)
	return rt.r.Read(p)
}

func dirEntries(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// serveDirect runs the handler in-process on req and returns the recorder.
func (e *env) serveDirect(req *http.Request) *httptest.ResponseRecorder {
	e.t.Helper()
	rec := httptest.NewRecorder()
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), rec, nil)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		e.nextHit.Add(1)
		return nil
	})
	require.NoError(e.t, e.h.ServeHTTP(rec, req, next))
	return rec
}

// testClock is a clock the test moves, never the wall: the handler's now
// and the caches' otter.Clock (which then makes no periodic clean-ups;
// entries are checked for expiry when read).
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	// Far from the wall clock, so that a reading of the wall shows.
	c.ns.Store(time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time                      { return time.Unix(0, c.ns.Load()) }
func (c *testClock) NowNano() int64                      { return c.ns.Load() }
func (c *testClock) Tick(time.Duration) <-chan time.Time { return nil }
func (c *testClock) Advance(d time.Duration)             { c.ns.Add(int64(d)) }

// cacheOnClock runs a handler's media cache on clk (its plans stay on the
// wall clock, as the test accounts' end dates are).
func cacheOnClock(clk *testClock) func(*Handler) {
	return func(h *Handler) { h.cacheClock = clk }
}
