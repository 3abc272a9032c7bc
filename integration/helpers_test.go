// Package integration runs the gateway inside real Caddy servers: in
// process through caddytest, and as a built binary driven by curl. These
// tests are skipped with -short; CI runs them. They must not use
// t.Parallel: caddytest shares one Caddy instance and admin port.
package integration

import (
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	_ "github.com/avenping/caddy-whatsapp-media"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

const (
	apiToken   = "it-premium-token"
	devToken   = "it-developer-token"
	metaToken  = "it-meta-token"
	phone      = "106540352242922"
	otherPhone = "106540352242999"
)

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
}

// startEmulator serves a Meta emulator on a loopback port.
func startEmulator(t *testing.T) (*metaemu.Server, string) {
	t.Helper()
	emu, err := metaemu.New(metaemu.Config{Tokens: map[string][]string{metaToken: {phone}}})
	require.NoError(t, err)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() {
		_ = emu.Close()
		srv.Close()
	})
	return emu, srv.URL
}

// startApp serves a stand-in for the app behind Caddy.
func startApp(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Served-By", "app")
		_, _ = w.Write([]byte("app:" + r.URL.Path))
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// stored returns the bytes Meta stored for a media id.
func stored(t *testing.T, emu *metaemu.Server, id string) ([]byte, metaemu.Media) {
	t.Helper()
	m, ok := emu.Media(id)
	require.True(t, ok, "no media %s at Meta", id)
	b, err := os.ReadFile(m.Path)
	require.NoError(t, err)
	return b, m
}
