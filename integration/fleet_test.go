package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// fleetGateway is one instance of the fleet: the built binary with an
// admin endpoint, introspection and the purge channel.
type fleetGateway struct {
	*caddyProcess
	admin string
	site  func(extra string) string
}

func startFleetGateway(t *testing.T, graphURL, appAddr, introspectURL, redisURL string) *fleetGateway {
	t.Helper()
	g := &fleetGateway{admin: "localhost:" + fixtures.FreePort(t)}
	g.site = func(extra string) string {
		return fmt.Sprintf(`	whatsapp_media {
		graph_url %s
		%s
		accounts introspect %s {
			header X-Introspect-Secret shh
			cache_ttl 1h
			negative_ttl 1h
			purge_channel {env.IT_REDIS_URL}
		}
	}
	reverse_proxy %s`, graphURL, extra, introspectURL, appAddr)
	}
	t.Setenv("IT_REDIS_URL", redisURL)
	g.caddyProcess = startCaddyWith(t, "admin "+g.admin+"\n\tmetrics", g.site(""))
	return g
}

// status is the status of a HEAD download with token: 404 once the token
// is accepted (no such media), 401 once it is refused.
func (g *fleetGateway) status(t *testing.T, token string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, g.base+"/v2/media/1/download", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

func (g *fleetGateway) metric(t *testing.T, name string) string {
	t.Helper()
	resp, err := http.Get("http://" + g.admin + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, name) {
			return line[strings.LastIndexByte(line, ' ')+1:]
		}
	}
	return ""
}

func (g *fleetGateway) reload(t *testing.T, extra string) {
	t.Helper()
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(cfg, []byte(g.config("admin "+g.admin+"\n\tmetrics", g.site(extra))), 0o600))
	out, err := exec.Command(caddyBinary(t), "reload", "--config", cfg, "--adapter", "caddyfile", "--address", g.admin).CombinedOutput()
	require.NoError(t, err, "caddy reload: %s", out)
}

// TestFleetPurgeChannel: two gateways on one Redis channel. One PUBLISH
// revokes a token on both; a Redis outage costs no request, and what was
// missed during it is purged on return; a reload keeps one subscriber.
func TestFleetPurgeChannel(t *testing.T) {
	skipShort(t)
	rs := fixtures.StartRedis(t)
	app := startIntrospectApp(t)
	_, graphURL := startEmulator(t)
	appAddr := startApp(t)
	fleet := []*fleetGateway{
		startFleetGateway(t, graphURL, appAddr, app.url, rs.URL()),
		startFleetGateway(t, graphURL, appAddr, app.url, rs.URL()),
	}
	pub := redis.NewClient(&redis.Options{Addr: rs.Addr,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer pub.Close()
	ctx := context.Background()
	const channel = "whatsapp_media:purge"
	for _, g := range fleet {
		require.Eventually(t, func() bool { return g.metric(t, "caddy_whatsapp_media_purge_channel_up") == "1" },
			10*time.Second, 20*time.Millisecond, "subscribed")
	}
	// eventually asserts that every instance answers want for token
	// within d.
	eventually := func(token string, want int, d time.Duration, msg string) {
		t.Helper()
		for _, g := range fleet {
			require.Eventually(t, func() bool { return g.status(t, token) == want }, d, 10*time.Millisecond, msg)
		}
	}
	accept := func(tokens ...string) {
		t.Helper()
		for _, tok := range tokens {
			app.setActive(tok, true)
			for _, g := range fleet {
				require.Equal(t, 404, g.status(t, tok), "%s accepted and cached", tok)
			}
		}
	}

	t.Run("one PUBLISH revokes a token on every instance", func(t *testing.T) {
		accept("tok-1", "tok-2")
		app.setActive("tok-1", false)
		for _, g := range fleet {
			assert.Equal(t, 404, g.status(t, "tok-1"), "still cached before the purge")
		}
		start := time.Now()
		n, err := pub.Publish(ctx, channel, fixtures.SHA256Hex([]byte("tok-1"))).Result()
		require.NoError(t, err)
		assert.Equal(t, int64(2), n, "one subscriber an instance")
		eventually("tok-1", 401, time.Second, "revoked within a second")
		t.Logf("revoked on both instances in %v", time.Since(start))
		for _, g := range fleet {
			assert.Equal(t, 404, g.status(t, "tok-2"), "another token was purged")
		}
	})

	t.Run("junk changes nothing, * purges everything", func(t *testing.T) {
		accept("tok-sentinel")
		app.setActive("tok-2", false)
		app.setActive("tok-sentinel", false)
		require.NoError(t, pub.Publish(ctx, channel, "tok-2").Err()) // a raw token is not a message
		// A real purge published after it: once it has been applied, so
		// has the junk before it (a subscriber gets messages in order).
		require.NoError(t, pub.Publish(ctx, channel, fixtures.SHA256Hex([]byte("tok-sentinel"))).Err())
		eventually("tok-sentinel", 401, time.Second, "the purge after the junk message")
		for _, g := range fleet {
			assert.Equal(t, 404, g.status(t, "tok-2"), "a junk message purged")
		}
		require.NoError(t, pub.Publish(ctx, channel, "*").Err())
		eventually("tok-2", 401, time.Second, "* purged both")
		for _, g := range fleet {
			logs := g.logs.String()
			assert.Contains(t, logs, fixtures.SHA256Hex([]byte("tok-2")), "the junk message's hash, at debug level")
			assert.NotContains(t, logs, `"tok-2"`, "a raw token published by mistake reached the logs")
		}
	})

	t.Run("a Redis outage costs no request; what it missed is purged on return", func(t *testing.T) {
		accept("tok-3")
		rs.Stop()
		for _, g := range fleet {
			require.Eventually(t, func() bool { return g.metric(t, "caddy_whatsapp_media_purge_channel_up") == "0" },
				10*time.Second, 20*time.Millisecond, "the metric says the channel is down")
		}
		var wg sync.WaitGroup
		for i := 0; i < 20; i++ {
			for _, g := range fleet {
				wg.Go(func() { assert.Equal(t, 404, g.status(t, "tok-3"), "a request failed while Redis was down") })
			}
		}
		wg.Wait()
		app.setActive("tok-3", false) // revoked while Redis is down: the PUBLISH is lost
		rs.Start()
		eventually("tok-3", 401, 10*time.Second, "not purged after Redis came back")
	})

	t.Run("a reload keeps one subscriber an instance", func(t *testing.T) {
		before := subscriberIDs(t, pub)
		require.Len(t, before, 2)
		// caddy reload returns once the new config runs and the old one is
		// cleaned up: the subscriber it kept is the one from before.
		fleet[0].reload(t, "max_size 50MiB")
		assert.Equal(t, before, subscriberIDs(t, pub), "the reload resubscribed")
		n, err := pub.Publish(ctx, channel, "*").Result()
		require.NoError(t, err)
		assert.Equal(t, int64(2), n)
		assert.Equal(t, "1", fleet[0].metric(t, "caddy_whatsapp_media_purge_channel_up"))
	})
}

// subscriberIDs lists the ids of Redis clients subscribed to a channel
// (CLIENT LIST's connections with sub=1).
func subscriberIDs(t *testing.T, c *redis.Client) []string {
	t.Helper()
	list, err := c.ClientList(context.Background()).Result()
	require.NoError(t, err)
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		fields := map[string]string{}
		for _, f := range strings.Fields(line) {
			k, v, _ := strings.Cut(f, "=")
			fields[k] = v
		}
		if fields["sub"] == "1" {
			ids = append(ids, fields["id"])
		}
	}
	sort.Strings(ids)
	return ids
}
