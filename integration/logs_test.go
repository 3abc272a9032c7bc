package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// readmeGlobalLog returns the global log block of the README's production
// config, the one that filters every logger's lines.
func readmeGlobalLog(t *testing.T) string {
	t.Helper()
	blocks := codeBlocks(readmeSection(t, "### In production, in front of the app"), "caddy")
	require.Len(t, blocks, 1)
	m := regexp.MustCompile(`(?s)\n\tlog \{\n.*?\n\t\}\n`).FindString(blocks[0])
	require.NotEmpty(t, m, "the README's production config has a global log block")
	return m
}

// TestLogsHoldNoToken runs Caddy with the README's logging (the global log
// block, and a site's filtered access log) and sends tokens in
// X-API-Token and Authorization to every server and Host Caddy logs: the
// site, a Host no site has, the site's name with a trailing dot, and the
// HTTP→HTTPS redirect server. No line of any log holds a token, and the
// unmapped requests were logged (the test would see a leak).
func TestLogsHoldNoToken(t *testing.T) {
	skipShort(t)
	httpPort, httpsPort := fixtures.FreePort(t), fixtures.FreePort(t)
	dir := t.TempDir()
	access := filepath.Join(dir, "access.log")
	cfg := fmt.Sprintf(`{
	admin off
	persist_config off
	http_port %s
	https_port %s
	local_certs
	skip_install_trust
%s}

api.test {
	bind 127.0.0.1
	log {
		output file %s
		format filter {
			wrap json
			request>headers>X-Api-Token delete
		}
	}
	respond "app"
}
`, httpPort, httpsPort, readmeGlobalLog(t), access)
	path := filepath.Join(dir, "Caddyfile")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	logs := &syncBuffer{}
	cmd := exec.Command(caddyBinary(t), "run", "--config", path, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	require.NoError(t, cmd.Start())
	p := &caddyProcess{cmd: cmd, logs: logs}
	t.Cleanup(func() { p.stop(t) })
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "serving initial configuration") },
		30*time.Second, 20*time.Millisecond, "caddy did not start: %s", logs.String())

	const secret = "it-log-secret-token"
	resolve := []string{"--resolve", "api.test:" + httpsPort + ":127.0.0.1"}
	// The internal CA issues the site's certificate in the background.
	require.Eventually(t, func() bool {
		return exec.Command("curl", append(resolve, "-skf", "-o", "/dev/null", "https://api.test:"+httpsPort+"/")...).Run() == nil
	}, 30*time.Second, 100*time.Millisecond, "no certificate for api.test: %s", logs.String())
	for _, host := range []string{"api.test", "other.test", "api.test."} {
		curl(t, append(resolve, "-sk", "-o", "/dev/null", "-H", "X-API-Token: "+secret+"-x", "-H", "Authorization: Bearer "+secret+"-a",
			"-H", "Host: "+host, "https://api.test:"+httpsPort+"/v2/media/1/download")...)
	}
	for _, host := range []string{"api.test", "other.test"} {
		curl(t, "-s", "-o", "/dev/null", "-H", "X-API-Token: "+secret+"-r", "-H", "Host: "+host, "http://127.0.0.1:"+httpPort+"/x")
	}
	require.Eventually(t, func() bool { return strings.Count(logs.String(), `"host":"other.test"`) >= 2 },
		10*time.Second, 20*time.Millisecond, "the unmapped requests were not logged")
	p.stop(t)
	siteLog, err := os.ReadFile(access)
	require.NoError(t, err)
	all := logs.String() + string(siteLog)
	assert.Contains(t, all, `"host":"api.test."`, "the trailing-dot Host was logged")
	assert.NotContains(t, all, secret, "a token reached a log")
}
