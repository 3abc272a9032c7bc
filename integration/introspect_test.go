package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// introspectApp is a stand-in for the app's introspection endpoint.
type introspectApp struct {
	mu     sync.Mutex
	active map[string]bool
	calls  atomic.Int32
	url    string
}

func startIntrospectApp(t *testing.T) *introspectApp {
	a := &introspectApp{active: map[string]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		if r.Header.Get("X-Introspect-Secret") != "shh" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		body, _ := io.ReadAll(r.Body)
		form, _ := url.ParseQuery(string(body))
		a.mu.Lock()
		ok := a.active[form.Get("token")]
		a.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			_, _ = io.WriteString(w, `{"active":false}`)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"active": true, "sub": "user_42", "plan": "premium",
			"meta_access_token": metaToken, "phone_number_ids": []string{phone}})
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL + "/internal/introspect"
	return a
}

func (a *introspectApp) setActive(token string, on bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.active[token] = on
}

func introspectCaddyfile(graphURL, appAddr, introspectURL, extra string) string {
	return globalOptions("") + fmt.Sprintf(`
%s {
	whatsapp_media {
		graph_url %s
		%s
		accounts introspect %s {
			header X-Introspect-Secret {env.IT_INTROSPECT_SECRET}
			cache_ttl 1h
			negative_ttl 1h
		}
	}
	reverse_proxy %s
}
`, baseURL, graphURL, extra, introspectURL, appAddr)
}

func purge(t *testing.T, tester *caddytest.Tester, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://localhost:2999/whatsapp_media/purge", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := tester.Client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	var out struct {
		Purged int `json:"purged"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
	return out.Purged
}

// TestCaddyIntrospectPurgeAcrossReload checks that the account cache
// survives a config reload and that the purge endpoint reaches it after
// one: a regenerated token is refused right after the purge.
func TestCaddyIntrospectPurgeAcrossReload(t *testing.T) {
	skipShort(t)
	t.Setenv("IT_INTROSPECT_SECRET", "shh")
	emu, graphURL := startEmulator(t)
	app := startIntrospectApp(t)
	appAddr := startApp(t)
	id, err := emu.AddMedia(phone, "image/jpeg", fixtures.JPEG(1000))
	require.NoError(t, err)
	app.setActive("old-token", true)

	tester := startTester(t, introspectCaddyfile(graphURL, appAddr, app.url, ""))
	get := func(token string) int {
		req, _ := http.NewRequest(http.MethodGet, baseURL+"/v2/media/"+id+"/download", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := tester.Client.Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for i := 0; i < 5; i++ {
		assert.Equal(t, 200, get("old-token"))
	}
	up, _ := http.NewRequest(http.MethodPost, baseURL+"/v2/media/upload", strings.NewReader(string(fixtures.JPEG(5000))))
	up.Header.Set("Authorization", "Bearer old-token")
	up.Header.Set("X-Phone-Number-Id", phone)
	up.Header.Set("Content-Type", "image/jpeg")
	tester.AssertResponseCode(up, 200)
	assert.Equal(t, int32(1), app.calls.Load(), "the app was asked more than once per token per TTL")

	// The app regenerates the token: the old one is revoked there, but the
	// gateway's cache still vouches for it until purged.
	app.setActive("old-token", false)
	app.setActive("new-token", true)

	tester.InitServer(introspectCaddyfile(graphURL, appAddr, app.url, "max_size 50MiB"), "caddyfile")
	assert.Equal(t, 200, get("old-token"))
	assert.Equal(t, int32(1), app.calls.Load(), "the cache did not survive the reload")

	assert.Equal(t, 1, purge(t, tester, `{"token":"old-token"}`))
	assert.Equal(t, 401, get("old-token"), "a purged, revoked token was still accepted")
	assert.Equal(t, 200, get("new-token"))
	assert.Equal(t, int32(3), app.calls.Load())

	assert.Equal(t, 2, purge(t, tester, `{}`))
	assert.Equal(t, 200, get("new-token"))
	assert.Equal(t, int32(4), app.calls.Load())

	req, _ := http.NewRequest(http.MethodPost, "http://localhost:2999/whatsapp_media/purge", strings.NewReader(`{"tokn":"x"}`))
	resp, err := tester.Client.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, 400, resp.StatusCode)
}
