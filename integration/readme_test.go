package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The README's commands, run as written, so that they cannot drift from
// what works: the install block, the production config, the quick start
// (TestDemo).

// readmeSection returns the README's text under heading (a whole line,
// such as "## Install"), up to the next heading of that level or higher.
func readmeSection(t *testing.T, heading string) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	text := string(b)
	start := strings.Index(text, "\n"+heading+"\n")
	require.GreaterOrEqual(t, start, 0, "the README has no %q", heading)
	rest := text[start+len(heading)+2:]
	level := strings.Index(heading, " ")
	// The section ends at the next heading of its level or higher that is
	// not inside a code block (where "# " starts a shell comment).
	fenced, n := false, 0
	for _, line := range strings.SplitAfter(rest, "\n") {
		if strings.HasPrefix(line, "```") {
			fenced = !fenced
		}
		if h := strings.IndexByte(line, ' '); !fenced && h > 0 && h <= level && strings.Trim(line[:h], "#") == "" {
			return rest[:n]
		}
		n += len(line)
	}
	return rest
}

// codeBlocks returns the fenced code blocks of language lang in text.
func codeBlocks(text, lang string) []string {
	re := regexp.MustCompile("(?s)```" + lang + "\n(.*?)```")
	var blocks []string
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		blocks = append(blocks, m[1])
	}
	return blocks
}

// indentedCommands returns the lines of text indented by four spaces.
func indentedCommands(text string) []string {
	var cmds []string
	for _, line := range strings.Split(text, "\n") {
		if c, ok := strings.CutPrefix(line, "    "); ok && strings.TrimSpace(c) != "" {
			cmds = append(cmds, strings.TrimSpace(c))
		}
	}
	return cmds
}

// checkoutCopy copies the files of the checkout (tracked, and untracked
// ones git does not ignore) to a temporary directory: what a user has
// after git clone.
func checkoutCopy(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("git", "-C", "..", "ls-files", "--cached", "--others", "--exclude-standard").Output()
	require.NoError(t, err, "git ls-files")
	dst := t.TempDir()
	for _, f := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		b, err := os.ReadFile(filepath.Join("..", f))
		if os.IsNotExist(err) {
			continue // deleted in the working tree
		}
		require.NoError(t, err)
		require.NoError(t, os.MkdirAll(filepath.Join(dst, filepath.Dir(f)), 0o755))
		require.NoError(t, os.WriteFile(filepath.Join(dst, f), b, 0o644))
	}
	return dst
}

// TestReadmeInstall runs the README's install block as written, in a copy
// of the checkout, with a GOBIN of its own on the PATH, and checks that
// xcaddy.Dockerfile runs the same xcaddy line.
func TestReadmeInstall(t *testing.T) {
	skipShort(t)
	blocks := codeBlocks(readmeSection(t, "## Install"), "sh")
	require.Len(t, blocks, 1, "the Install section has one sh block")
	script := blocks[0]
	var xcaddyLine string
	for _, line := range strings.Split(script, "\n") {
		if strings.HasPrefix(line, "xcaddy build ") {
			xcaddyLine = line
		}
	}
	require.NotEmpty(t, xcaddyLine, "the install block builds with xcaddy")
	docker, err := os.ReadFile("../xcaddy.Dockerfile")
	require.NoError(t, err)
	assert.Contains(t, string(docker), "RUN "+xcaddyLine+"\n", "xcaddy.Dockerfile runs another xcaddy line than the README")

	dir := checkoutCopy(t)
	bin := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-e", "-x", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(append(cleanEnv(), goEnv(t)...), "GOBIN="+bin, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the README's install block failed:\n%s", out)
	assert.Contains(t, string(out), "http.handlers.whatsapp_media", "the xcaddy build lists the module")
	assert.Contains(t, string(out), "Valid configuration")
	assert.FileExists(t, filepath.Join(bin, "xcaddy"))
	mods, err := exec.Command(filepath.Join(dir, "caddy"), "list-modules").Output()
	require.NoError(t, err)
	for _, m := range []string{"http.handlers.whatsapp_media", "http.handlers.whatsapp_media.accounts.static",
		"http.handlers.whatsapp_media.accounts.introspect", "admin.api.whatsapp_media"} {
		assert.Contains(t, string(mods), m+"\n")
	}
}

// TestReadmeProductionConfig validates the README's production config
// with none of its environment set, as an operator's CI would: valid, and
// the placeholders that expand to nothing are warnings.
func TestReadmeProductionConfig(t *testing.T) {
	skipShort(t)
	blocks := codeBlocks(readmeSection(t, "### In production, in front of the app"), "caddy")
	require.Len(t, blocks, 1)
	cfg := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(cfg, []byte(blocks[0]), 0o600))
	var env []string
	for _, kv := range cleanEnv() {
		if !strings.HasPrefix(kv, "INTROSPECT_SECRET=") && !strings.HasPrefix(kv, "REDIS_URL=") {
			env = append(env, kv)
		}
	}
	cmd := exec.Command(caddyBinary(t), "validate", "--config", cfg, "--adapter", "caddyfile")
	cmd.Env = append(env, "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Contains(t, string(out), "Valid configuration")
	assert.Contains(t, string(out), "introspection header value expands to nothing")
	assert.Contains(t, string(out), `"header":"X-Introspect-Secret"`)
	assert.Contains(t, string(out), "purge_channel's Redis URL expands to nothing")
	assert.NotContains(t, string(out), "not formatted", "the README's config is formatted as Caddy expects")
}
