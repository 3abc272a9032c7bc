package whatsappmedia

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// trustPool is tls_trust_pool file <files...> in JSON.
func trustPool(files ...string) json.RawMessage {
	b, _ := json.Marshal(map[string]any{"provider": "file", "pem_files": files})
	return b
}

// tlsApp serves an active answer for every token over TLS with the PKI's
// server certificate, requiring a client certificate with clientAuth.
func tlsApp(t *testing.T, p *fixtures.PKI, clientAuth bool) string {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(activeAnswer("u", time.Time{}))
	}))
	srv.TLS = p.ServerTLS(t, clientAuth)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestIntrospectTLS(t *testing.T) {
	p := fixtures.NewPKI(t)
	lookup := func(url string, tlsCfg *reverseproxy.TLSConfig) error {
		s := newIntrospect(t, &fakeApp{srv: &httptest.Server{URL: url}}, func(s *IntrospectAccounts) {
			s.URL, s.TLS = url, tlsCfg
		})
		_, err := s.Lookup(context.Background(), "tok")
		return err
	}
	t.Run("a private CA", func(t *testing.T) {
		url := tlsApp(t, p, false)
		err := lookup(url, nil)
		require.Error(t, err, "the system's roots do not know the test CA")
		assert.NotErrorIs(t, err, ErrUnknownToken, "cannot answer, not revoked")
		assert.NoError(t, lookup(url, &reverseproxy.TLSConfig{CARaw: trustPool(p.CA)}))
	})
	t.Run("mutual TLS", func(t *testing.T) {
		url := tlsApp(t, p, true)
		assert.Error(t, lookup(url, &reverseproxy.TLSConfig{CARaw: trustPool(p.CA)}), "no client certificate")
		assert.NoError(t, lookup(url, &reverseproxy.TLSConfig{CARaw: trustPool(p.CA),
			ClientCertificateFile: p.ClientCert, ClientCertificateKeyFile: p.ClientKey}))
	})
	t.Run("placeholders in file paths", func(t *testing.T) {
		url := tlsApp(t, p, true)
		t.Setenv("TEST_CA", p.CA)
		t.Setenv("TEST_CLIENT_CERT", p.ClientCert)
		t.Setenv("TEST_CLIENT_KEY", p.ClientKey)
		assert.NoError(t, lookup(url, &reverseproxy.TLSConfig{CARaw: trustPool("{env.TEST_CA}"),
			ClientCertificateFile: "{env.TEST_CLIENT_CERT}", ClientCertificateKeyFile: "{env.TEST_CLIENT_KEY}"}))
	})
}

func TestPurgeChannelTLS(t *testing.T) {
	p := fixtures.NewPKI(t)
	// up reports whether a source with tlsCfg subscribes to rs: true once
	// the channel is up, false once a subscription has failed (which keeps
	// the channel down) with an error that says why, whichever comes
	// first. A server that wants a client certificate refuses after the
	// client's side of a TLS 1.3 handshake is done: the client then sees
	// an alert or a reset.
	up := func(t *testing.T, rs *fixtures.Redis, channel string, tlsCfg *reverseproxy.TLSConfig, why *regexp.Regexp) bool {
		app := newFakeApp(t)
		s := newIntrospect(t, app, func(s *IntrospectAccounts) {
			s.PurgeChannel = &PurgeChannel{URL: "rediss://" + rs.Addr, Channel: channel, TLS: tlsCfg}
		})
		defer func() { _ = s.Cleanup(); s.subscriber = nil }()
		var isUp bool
		require.Eventually(t, func() bool {
			isUp = testutil.ToFloat64(metrics.channelUp.WithLabelValues(channel, rs.Addr)) == 1
			return isUp || s.subscriber.failed.Load() > 0
		}, 10*time.Second, 10*time.Millisecond, "neither subscribed nor refused")
		if !isUp {
			s.subscriber.mu.Lock()
			err := s.subscriber.lastErr
			s.subscriber.mu.Unlock()
			require.Error(t, err)
			assert.Regexp(t, why, err.Error(), "refused for another reason than TLS")
		}
		return isUp
	}
	t.Run("a private CA", func(t *testing.T) {
		rs := fixtures.StartRedisTLS(t, p, false)
		assert.False(t, up(t, rs, "tls-1a", nil, regexp.MustCompile(`tls: .*certificate`)), "the system's roots do not know the test CA")
		assert.True(t, up(t, rs, "tls-1b", &reverseproxy.TLSConfig{CARaw: trustPool(p.CA)}, nil))
	})
	t.Run("mutual TLS", func(t *testing.T) {
		rs := fixtures.StartRedisTLS(t, p, true)
		assert.False(t, up(t, rs, "tls-2a", &reverseproxy.TLSConfig{CARaw: trustPool(p.CA)},
			regexp.MustCompile(`tls|reset by peer|broken pipe|EOF`)), "no client certificate")
		assert.True(t, up(t, rs, "tls-2b", &reverseproxy.TLSConfig{CARaw: trustPool(p.CA),
			ClientCertificateFile: p.ClientCert, ClientCertificateKeyFile: p.ClientKey}, nil))
	})
}

func TestTLSCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`introspect https://app.internal/introspect {
		tls_trust_pool file /etc/app-ca.pem {env.EXTRA_CA}
		tls_client_auth /etc/gw.pem /etc/gw-key.pem
		tls_server_name app.internal
		purge_channel rediss://redis.internal:6380 {
			tls_trust_pool file /etc/redis-ca.pem
			tls_client_auth {env.REDIS_CERT} {env.REDIS_KEY}
			tls_server_name redis.internal
		}
	}`)
	var s IntrospectAccounts
	require.NoError(t, s.UnmarshalCaddyfile(d))
	require.NotNil(t, s.TLS)
	assert.JSONEq(t, `{"provider":"file","pem_files":["/etc/app-ca.pem","{env.EXTRA_CA}"]}`, string(s.TLS.CARaw))
	assert.Equal(t, "/etc/gw.pem", s.TLS.ClientCertificateFile)
	assert.Equal(t, "/etc/gw-key.pem", s.TLS.ClientCertificateKeyFile)
	assert.Equal(t, "app.internal", s.TLS.ServerName)
	pc := s.PurgeChannel
	require.NotNil(t, pc)
	assert.Equal(t, "rediss://redis.internal:6380", pc.URL)
	require.NotNil(t, pc.TLS)
	assert.JSONEq(t, `{"provider":"file","pem_files":["/etc/redis-ca.pem"]}`, string(pc.TLS.CARaw))
	assert.Equal(t, "{env.REDIS_CERT}", pc.TLS.ClientCertificateFile)
	assert.Equal(t, "redis.internal", pc.TLS.ServerName)

	for input, want := range map[string]string{
		"introspect https://x {\ntls_client_auth a\n}":                            "wrong argument count",
		"introspect https://x {\ntls_server_name\n}":                              "wrong argument count",
		"introspect https://x {\ntls_trust_pool\n}":                               "wrong argument count",
		"introspect https://x {\ntls_trust_pool nosuch\n}":                        "tls.ca_pool.source.nosuch",
		"introspect https://x {\ntls_trust_pool file a\ntls_trust_pool file b\n}": "tls_trust_pool is given twice",
		"introspect https://x {\npurge_channel redis://r {\ncolour red\n}\n}":     "unrecognized purge_channel option 'colour'",
	} {
		var s IntrospectAccounts
		err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
		require.Error(t, err, input)
		assert.Contains(t, err.Error(), want, input)
	}
}

// TestTLSFingerprint: rotating a certificate in place changes the purge
// channel subscriber's key, so that a reload uses the new one.
func TestTLSFingerprint(t *testing.T) {
	p := fixtures.NewPKI(t)
	cfg := &reverseproxy.TLSConfig{CARaw: trustPool(p.CA), ClientCertificateFile: p.ClientCert, ClientCertificateKeyFile: p.ClientKey}
	before := subscriberKey("rediss://r", "c", cfg)
	assert.Equal(t, before, subscriberKey("rediss://r", "c", cfg))
	q := fixtures.NewPKI(t)
	for _, f := range [][2]string{{q.CA, p.CA}, {q.ClientCert, p.ClientCert}} {
		data, err := os.ReadFile(f[0])
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(f[1], data, 0o600))
		after := subscriberKey("rediss://r", "c", cfg)
		assert.NotEqual(t, before, after, "%s replaced in place", f[1])
		before = after
	}
}
