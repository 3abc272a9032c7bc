package whatsappmedia

import (
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// fetch downloads id with token and reads the whole answer.
func (e *env) fetch(method, id, token string, hdr map[string]string) (int, []byte) {
	e.t.Helper()
	req := mustReq(e.t, method, e.url("/v2/media/"+id+"/download"), token)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(e.t, err)
	return resp.StatusCode, b
}

func TestMediaCache(t *testing.T) {
	data := fixtures.JPEG(50_000)
	etag := `"` + fixtures.SHA256Hex(data) + `"`

	t.Run("a repeat download asks Graph nothing; HEAD and 304 ask no upstream", func(t *testing.T) {
		e := newEnv(t)
		id := e.media(data, "image/jpeg")
		hits := testutil.ToFloat64(metrics.mediaCacheHit)
		status, body := e.fetch(http.MethodGet, id, tokPremium, nil)
		require.Equal(t, 200, status)
		require.Equal(t, data, body)
		e.emu.Reset()
		status, body = e.fetch(http.MethodGet, id, tokPremium, nil)
		require.Equal(t, 200, status)
		assert.Equal(t, data, body)
		assert.Empty(t, e.routeRequests("media"))
		assert.Len(t, e.routeRequests("cdn"), 1, "one request a download")

		e.emu.Reset()
		status, _ = e.fetch(http.MethodHead, id, tokPremium, nil)
		assert.Equal(t, 200, status)
		status, _ = e.fetch(http.MethodGet, id, tokPremium, map[string]string{"If-None-Match": etag})
		assert.Equal(t, 304, status)
		status, body = e.fetch(http.MethodGet, id, tokPremium, map[string]string{"Range": "bytes=10-19"})
		assert.Equal(t, 206, status)
		assert.Equal(t, data[10:20], body)
		assert.Empty(t, e.routeRequests("media"))
		assert.Len(t, e.routeRequests("cdn"), 1, "only the range went upstream, to the cached URL")
		assert.Equal(t, hits+4, testutil.ToFloat64(metrics.mediaCacheHit))
	})

	t.Run("access rules run first, on every request", func(t *testing.T) {
		e := newEnv(t)
		id := e.media(data, "image/jpeg")
		status, _ := e.fetch(http.MethodGet, id, tokPremium, nil)
		require.Equal(t, 200, status)
		e.emu.Reset()
		for _, tok := range []string{tokDeveloper, tokExpired, "unknown"} {
			status, _ = e.fetch(http.MethodHead, id, tok, nil)
			assert.NotEqual(t, 200, status, tok)
		}
		a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download?phoneNumberId="+phoneOther), tokPremium))
		assert.Equal(t, 403, a.Status, "phone number not the account's")
		assert.Empty(t, e.emu.Requests())
	})

	t.Run("one entry per account and Meta token", func(t *testing.T) {
		e := newEnv(t)
		id := e.media(data, "image/jpeg")
		ctx := context.Background()
		acct := &Account{ID: "premium", MetaToken: metaToken}
		for _, a := range []*Account{
			acct, acct, // the second is a hit
			{ID: "enterprise", MetaToken: metaToken},
			{ID: "premium", MetaToken: "EAAG-rotated"},
		} {
			_, _ = e.h.lookupMedia(ctx, a, id)
		}
		assert.Len(t, e.routeRequests("media"), 3)
		// The phoneNumberId of a download is not Graph's business: it
		// shares the account's entry.
		resp := e.download(id, "phoneNumberId="+phoneA, nil)
		assert.Equal(t, 200, resp.StatusCode)
		assert.Len(t, e.routeRequests("media"), 3)
	})

	t.Run("expiry from Graph's answer, not extended by use", func(t *testing.T) {
		clk := newTestClock()
		e := newEnv(t, cacheOnClock(clk), func(h *Handler) { ttl := caddy.Duration(4 * time.Minute); h.MediaCacheTTL = &ttl })
		id := e.media(data, "image/jpeg")
		e.fetch(http.MethodHead, id, tokPremium, nil)
		for i := 0; i < 7; i++ {
			clk.Advance(30 * time.Second)
			e.fetch(http.MethodHead, id, tokPremium, nil) // use does not extend the entry
		}
		require.Len(t, e.routeRequests("media"), 1, "the entry went before its time (3m30s of 4m)")
		clk.Advance(31 * time.Second)
		e.fetch(http.MethodHead, id, tokPremium, nil)
		assert.Len(t, e.routeRequests("media"), 2, "the entry outlived its time (4m01s of 4m)")
	})

	t.Run("concurrent misses make one Graph request", func(t *testing.T) {
		e := newEnv(t)
		id := e.media(data, "image/jpeg")
		e.emu.Inject(metaemu.Fault{Route: "media", Kind: metaemu.Delay, Delay: 200 * time.Millisecond, Times: 1})
		var wg sync.WaitGroup
		for i := 0; i < 16; i++ {
			wg.Go(func() {
				status, body := e.fetch(http.MethodGet, id, tokPremium, nil)
				assert.Equal(t, 200, status)
				assert.Equal(t, data, body)
			})
		}
		wg.Wait()
		assert.Len(t, e.routeRequests("media"), 1)
	})

	t.Run("Graph's refusals are not cached", func(t *testing.T) {
		e := newEnv(t)
		for i := 0; i < 2; i++ {
			status, _ := e.fetch(http.MethodGet, "123456", tokPremium, nil)
			assert.Equal(t, 404, status)
		}
		assert.Len(t, e.routeRequests("media"), 2)
	})

	t.Run("media_cache_ttl 0 turns the cache off", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { off := caddy.Duration(0); h.MediaCacheTTL = &off })
		id := e.media(data, "image/jpeg")
		e.fetch(http.MethodHead, id, tokPremium, nil)
		e.fetch(http.MethodHead, id, tokPremium, nil)
		assert.Len(t, e.routeRequests("media"), 2)
		assert.Nil(t, e.h.mediaCache)
	})
}
