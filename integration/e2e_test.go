package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// caddyBinary builds ./cmd/caddy once per test run.
func caddyBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "whatsapp-media-e2e-*")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "caddy")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/caddy")
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binPath != "" {
		_ = os.RemoveAll(filepath.Dir(binPath))
	}
	os.Exit(code)
}

// caddyProcess is a running Caddy binary.
type caddyProcess struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	base string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startCaddy runs the built binary with a Caddyfile whose site block is
// body, on a free loopback port, and waits until it listens.
func startCaddy(t *testing.T, body func(addr string) string) *caddyProcess {
	t.Helper()
	bin := caddyBinary(t)
	port := freePort(t)
	addr := "127.0.0.1:" + port
	cfg := fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n\tpersist_config off\n}\n\nhttp://%s {\n%s\n}\n", addr, body(addr))
	path := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	require.NoError(t, cmd.Start())
	p := &caddyProcess{cmd: cmd, logs: logs, base: "http://" + addr}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("caddy logs:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return p
		}
		if time.Now().After(deadline) {
			t.Fatalf("caddy did not start listening on %s:\n%s", addr, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// curl runs curl with args and returns its standard output.
func curl(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", args...).Output()
	require.NoError(t, err, "curl %s", strings.Join(args, " "))
	return string(out)
}

type uploadAnswer struct {
	Success bool   `json:"success"`
	Error   string `json:"error"`
	Data    struct {
		MediaID  string `json:"mediaId"`
		MimeType string `json:"mimeType"`
		Size     int64  `json:"size"`
	} `json:"data"`
}

func gatewayBlock(graphURL, appAddr, extra string) func(string) string {
	return func(string) string {
		return fmt.Sprintf(`	whatsapp_media {
		graph_url %s
		%s
		accounts static {
			account acme {
				token_sha256  %s
				plan          premium
				meta_token    {env.E2E_META_TOKEN}
				phone_numbers %s
			}
		}
	}
	reverse_proxy %s`, graphURL, extra, sha256Hex([]byte(apiToken)), phone, appAddr)
	}
}

// TestEndToEndSeedUploads runs the public docs' two upload examples, with
// the host and token swapped, against the built binary, and checks what
// Meta received byte for byte.
func TestEndToEndSeedUploads(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	p := startCaddy(t, gatewayBlock(graphURL, startApp(t), "max_size 4MiB"))

	photo := make([]byte, 1_500_000)
	_, _ = rand.Read(photo)
	copy(photo, []byte{0xFF, 0xD8, 0xFF, 0xE0})
	path := filepath.Join(t.TempDir(), "photo.jpg")
	require.NoError(t, os.WriteFile(path, photo, 0o600))

	check := func(t *testing.T, out string) {
		t.Helper()
		var a uploadAnswer
		require.NoError(t, json.Unmarshal([]byte(out), &a), out)
		require.True(t, a.Success, out)
		assert.Equal(t, "image/jpeg", a.Data.MimeType)
		assert.Equal(t, int64(len(photo)), a.Data.Size)
		got, m := stored(t, emu, a.Data.MediaID)
		assert.True(t, bytes.Equal(photo, got), "Meta stored different bytes")
		assert.Equal(t, sha256Hex(photo), m.SHA256)
		assert.Equal(t, "image/jpeg", m.MimeType)
		ups := emu.Uploads()
		up := ups[len(ups)-1]
		assert.Equal(t, a.Data.MediaID, up.MediaID)
		assert.Equal(t, "photo.jpg", up.FileName)
		assert.Equal(t, "image/jpeg", up.FileType)
		assert.Equal(t, map[string]string{"messaging_product": "whatsapp", "type": "image/jpeg"}, up.Fields)
		assert.Equal(t, "Bearer "+metaToken, up.Header.Get("Authorization"))
		assert.Contains(t, up.Header.Get("User-Agent"), "caddy-whatsapp-media/")
		for _, h := range []string{"X-Api-Token", "X-Phone-Number-Id", "X-Filename", "Expect", "Cookie"} {
			assert.Empty(t, up.Header.Get(h), h)
		}
		if up.ContentLength >= 0 {
			assert.Equal(t, up.ContentLength, up.BodyBytes)
		}
	}

	t.Run("mode A multipart", func(t *testing.T) {
		out := curl(t, "-sS", "-X", "POST", p.base+"/v2/media/upload",
			"-H", "Authorization: Bearer "+apiToken,
			"-F", "phoneNumberId="+phone,
			"-F", "file=@"+path+";type=image/jpeg")
		check(t, out)
	})

	t.Run("mode B raw body", func(t *testing.T) {
		out := curl(t, "-sS", "-X", "POST", p.base+"/v2/media/upload",
			"-H", "Authorization: Bearer "+apiToken,
			"-H", "X-Phone-Number-Id: "+phone,
			"-H", "X-Filename: photo.jpg",
			"-H", "Content-Type: image/jpeg",
			"--data-binary", "@"+path)
		check(t, out)
		up := emu.Uploads()[len(emu.Uploads())-1]
		assert.Positive(t, up.ContentLength, "a known length must reach Meta as Content-Length")
	})

	t.Run("too large is refused before upload", func(t *testing.T) {
		big := filepath.Join(t.TempDir(), "big.pdf")
		require.NoError(t, os.WriteFile(big, bytes.Repeat([]byte("%PDF"), 5<<20/4+1), 0o600))
		before := len(emu.Requests())
		out := curl(t, "-sS", "-X", "POST", p.base+"/v2/media/upload",
			"-H", "Authorization: Bearer "+apiToken,
			"-H", "X-Phone-Number-Id: "+phone,
			"-H", "Content-Type: application/pdf",
			"--data-binary", "@"+big,
			"-w", "\nstatus=%{http_code} uploaded=%{size_upload}")
		assert.Contains(t, out, `"error":"PAYLOAD_TOO_LARGE"`)
		// curl sends Expect: 100-continue for a body this size; the
		// gateway answers from the headers and curl never uploads.
		assert.Contains(t, out, "status=413 uploaded=0")
		assert.Len(t, emu.Requests(), before)
	})

	t.Run("other routes reach the app", func(t *testing.T) {
		out := curl(t, "-sS", p.base+"/v2/messages")
		assert.Equal(t, "app:/v2/messages", out)
	})

	assert.NotContains(t, p.logs.String(), metaToken)
	assert.NotContains(t, p.logs.String(), apiToken)
}
