package integration

import (
	"os"
	"os/exec"
	"strings"
	"testing"

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
