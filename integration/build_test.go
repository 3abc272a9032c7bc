package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cleanEnv is the environment without the example's secrets.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ACME_") {
			env = append(env, kv)
		}
	}
	return env
}

// validateExample runs `caddy validate` on Caddyfile.example with none of
// its environment variables set.
func validateExample(t *testing.T, bin string) {
	t.Helper()
	cmd := exec.Command(bin, "validate", "--config", "../Caddyfile.example")
	cmd.Env = append(cleanEnv(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "Valid configuration")
}

func TestEndToEndValidateExample(t *testing.T) {
	skipShort(t)
	validateExample(t, caddyBinary(t))
}

// TestXcaddyBuild builds Caddy the way users do, with xcaddy and this
// module from the checkout, and checks the binary. xcaddy.Dockerfile runs
// the same build (without the version on the replaced module, which only
// this environment's module proxy needs).
func TestXcaddyBuild(t *testing.T) {
	skipShort(t)
	repo, err := filepath.Abs("..")
	require.NoError(t, err)
	bin := filepath.Join(t.TempDir(), "caddy")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "run", "github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5",
		"build", "v2.11.9",
		"--with", "github.com/avenping/caddy-whatsapp-media@v0.0.0-00010101000000-000000000000="+repo,
		"--output", bin)
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "xcaddy build:\n%s", out)

	mods, err := exec.Command(bin, "list-modules").Output()
	require.NoError(t, err)
	for _, m := range []string{"http.handlers.whatsapp_media", "http.handlers.whatsapp_media.accounts.static",
		"http.handlers.whatsapp_media.accounts.introspect", "admin.api.whatsapp_media"} {
		assert.Contains(t, string(mods), m+"\n")
	}
	validateExample(t, bin)
}
