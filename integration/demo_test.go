package integration

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// listeners returns the local addresses, as /proc/net/tcp{,6} write them
// (hex IP), of the sockets listening on port.
func listeners(t *testing.T, port string) []string {
	t.Helper()
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	suffix := fmt.Sprintf(":%04X", p)
	var addrs []string
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(t, err)
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) > 3 && fields[3] == "0A" && strings.HasSuffix(fields[1], suffix) {
				addrs = append(addrs, strings.TrimSuffix(fields[1], suffix))
			}
		}
	}
	return addrs
}

// startDemo runs the README's quick-start command as written, at the root
// of the checkout, with args added, and waits for its printed help. It runs
// in a process group of its own, so that the demo that `go run` starts is
// stopped with it.
func startDemo(t *testing.T, args ...string) (*exec.Cmd, *syncBuffer) {
	t.Helper()
	quick := indentedCommands(readmeSection(t, "## Quick start"))
	require.NotEmpty(t, quick)
	require.Equal(t, "go run ./cmd/caddy demo", quick[0], "the README's first command")
	cmd := exec.Command("sh", append([]string{"-c", quick[0] + ` "$@"`, "sh"}, args...)...)
	cmd.Dir = ".."
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A new HOME for Caddy's files, but Go's caches where they are.
	cmd.Env = append(os.Environ(), goEnv(t)...)
	cmd.Env = append(cmd.Env, "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", out.String())
		}
	})
	// go run links the binary first (the packages are compiled already,
	// for caddyBinary).
	caddyBinary(t)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "Press Ctrl-C to stop.") },
		3*time.Minute, 50*time.Millisecond, "the demo did not start")
	return cmd, out
}

// TestDemo runs the README's first command as a new user would, on free
// ports: the gateway listens on loopback only, every command it prints
// works, and the admin endpoint has the purge endpoint and metrics.
func TestDemo(t *testing.T) {
	skipShort(t)
	port, adminPort := fixtures.FreePort(t), fixtures.FreePort(t)
	_, out := startDemo(t, "--listen", "localhost:"+port, "--admin", "localhost:"+adminPort)

	assert.Equal(t, []string{"0100007F"}, listeners(t, port), "the gateway must listen on 127.0.0.1 only")
	assert.NotContains(t, out.String(), "not formatted")
	assert.NotContains(t, out.String(), "beyond loopback")

	// The printed commands, run as printed, in a directory of their own.
	photo := regexp.MustCompile(`sample photo\s+(\S+)`).FindStringSubmatch(out.String())
	require.Len(t, photo, 2)
	sample := regexp.MustCompile(`sample mediaId\s+(\d+)`).FindStringSubmatch(out.String())
	require.Len(t, sample, 2, "the demo names a media id that exists")
	dir := t.TempDir()
	commands := printedCommands(t, out.String())
	uploads := 0
	for _, cmd := range commands {
		if strings.Contains(cmd, "/upload") {
			uploads++
		}
	}
	assert.Equal(t, 3, uploads, "multipart, raw and from a URL")
	for _, cmd := range commands {
		res := runShell(t, dir, cmd)
		switch {
		case strings.Contains(cmd, "/upload"):
			assert.Contains(t, res, `"success":true`, cmd)
		case strings.Contains(cmd, "/download"):
			got, err := os.ReadFile(filepath.Join(dir, "photo-"+sample[1]+".jpg"))
			require.NoError(t, err, cmd)
			want, err := os.ReadFile(photo[1])
			require.NoError(t, err)
			assert.Equal(t, want, got, "the download is not the sample photo")
		case strings.Contains(cmd, "/purge"):
			assert.JSONEq(t, `{"purged": 0, "caches": 0}`, res, cmd)
		case strings.Contains(cmd, "/metrics"):
			assert.Contains(t, res, `caddy_whatsapp_media_requests_total{code="OK",route="upload",status="200"} 3`, cmd)
		}
	}

	// 127.0.0.1 works as well as localhost.
	resp, err := http.Get("http://127.0.0.1:" + port + "/v2/messages")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Contains(t, string(body), "the AvenPing app stand-in")
}

// printedCommands returns the curl commands the demo printed, each joined
// into one line.
func printedCommands(t *testing.T, out string) []string {
	t.Helper()
	var cmds []string
	sc := bufio.NewScanner(strings.NewReader(out))
	var cur strings.Builder
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if cur.Len() == 0 && !strings.HasPrefix(line, "curl ") {
			continue
		}
		cur.WriteString(strings.TrimSuffix(line, `\`) + " ")
		if !strings.HasSuffix(line, `\`) {
			cmds = append(cmds, cur.String())
			cur.Reset()
		}
	}
	require.Len(t, cmds, 6, "upload three ways, download, purge, metrics")
	return cmds
}

// runShell runs cmd with sh in dir and returns its standard output; it
// must succeed.
func runShell(t *testing.T, dir, cmd string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := exec.CommandContext(ctx, "sh", "-c", cmd)
	c.Dir = dir
	out, err := c.Output()
	require.NoError(t, err, cmd)
	return string(bytes.TrimSpace(out))
}

// TestDemoPortTaken: a second demo on a port in use fails at once, naming
// the address, instead of sharing the port (Caddy binds with SO_REUSEPORT).
func TestDemoPortTaken(t *testing.T) {
	skipShort(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	taken := ln.Addr().String()
	free := "127.0.0.1:" + fixtures.FreePort(t)
	for _, c := range []struct{ flag, args []string }{
		{[]string{"--listen", taken}, []string{"--listen", taken, "--admin", "off"}},
		{[]string{"--admin", taken}, []string{"--listen", free, "--admin", taken}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, caddyBinary(t), append([]string{"demo"}, c.args...)...)
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		cancel()
		require.Error(t, err, "%s", out)
		assert.Contains(t, string(out), strings.Join(c.flag, " "), "the error names the address")
		assert.NotContains(t, string(out), "Press Ctrl-C", "nothing started")
	}
}

// goEnv pins Go's module and build caches (and GOPATH) to this process's,
// for a go command run with another HOME.
func goEnv(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOPATH", "GOMODCACHE", "GOCACHE").Output()
	require.NoError(t, err)
	v := strings.Split(strings.TrimSpace(string(out)), "\n")
	require.Len(t, v, 3)
	return []string{"GOPATH=" + v[0], "GOMODCACHE=" + v[1], "GOCACHE=" + v[2]}
}
