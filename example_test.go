package whatsappmedia

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCaddyfileExampleGolden keeps the JSON that Caddyfile.example adapts
// to in testdata/Caddyfile.example.json. Regenerate it after a deliberate
// change with: UPDATE_GOLDEN=1 go test -run TestCaddyfileExampleGolden .
func TestCaddyfileExampleGolden(t *testing.T) {
	src, err := os.ReadFile("Caddyfile.example")
	require.NoError(t, err)
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(src, map[string]any{"filename": "Caddyfile.example"})
	require.NoError(t, err)
	assert.Empty(t, warnings)
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, out, "", "\t"))
	pretty.WriteByte('\n')
	const golden = "testdata/Caddyfile.example.json"
	if os.Getenv("UPDATE_GOLDEN") != "" {
		require.NoError(t, os.WriteFile(golden, pretty.Bytes(), 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err)
	assert.Equal(t, string(want), pretty.String())
	// Secrets stay placeholders in the adapted config.
	assert.Contains(t, pretty.String(), "{env.ACME_META_TOKEN}")
	assert.Contains(t, pretty.String(), "{env.ACME_TOKEN_SHA256}")
}
