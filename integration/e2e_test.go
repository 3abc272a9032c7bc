package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
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

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
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
	addr      string
	cmd       *exec.Cmd
	logs      *syncBuffer
	base      string
	accessLog string
	once      sync.Once
}

// config is the Caddyfile: debug logs, and an access log filtered as the
// README says (the tests scan both for secrets), around site.
func (p *caddyProcess) config(admin, site string) string {
	return fmt.Sprintf(`{
	%s
	auto_https off
	persist_config off
	log {
		level DEBUG
	}
}

http://%s {
	log {
		output file %s
		format filter {
			wrap json
			request>headers>X-Api-Token delete
		}
	}
%s
}
`, admin, p.addr, p.accessLog, site)
}

// allLogs returns the process's logs and its access log.
func (p *caddyProcess) allLogs(t *testing.T) string {
	t.Helper()
	access, err := os.ReadFile(p.accessLog)
	require.NoError(t, err)
	return p.logs.String() + "\n" + string(access)
}

// assertNoSecrets checks that no token, Meta token or Authorization value
// reached any log line.
func assertNoSecrets(t *testing.T, logs string) {
	t.Helper()
	for _, secret := range []string{apiToken, metaToken, "Bearer "} {
		assert.NotContains(t, logs, secret)
	}
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
	return startCaddyWith(t, "admin off", body(""))
}

// startCaddyWith is startCaddy with a global admin option.
func startCaddyWith(t *testing.T, admin, site string) *caddyProcess {
	t.Helper()
	bin := caddyBinary(t)
	port := fixtures.FreePort(t)
	addr := "127.0.0.1:" + port
	dir := t.TempDir()
	p := &caddyProcess{addr: addr, accessLog: filepath.Join(dir, "access.log"), base: "http://" + addr}
	cfg := p.config(admin, site)
	path := filepath.Join(dir, "Caddyfile")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	logs := &syncBuffer{}
	cmd := exec.Command(bin, "run", "--config", path, "--adapter", "caddyfile")
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
	require.NoError(t, cmd.Start())
	p.cmd, p.logs = cmd, logs
	t.Cleanup(func() {
		p.stop(t)
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

// stop ends the process gracefully (SIGTERM), once.
func (p *caddyProcess) stop(t *testing.T) {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-done
		}
	})
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
	return func(string) string { return mediaBlock(graphURL, extra) + "\n\treverse_proxy " + appAddr }
}

// mediaBlock is the whatsapp_media directive of gatewayBlock, with the
// extra options, for a site that has another before or after it.
func mediaBlock(graphURL, extra string) string {
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
	}`, graphURL, extra, fixtures.SHA256Hex([]byte(apiToken)), phone)
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
		assert.Equal(t, fixtures.SHA256Hex(photo), m.SHA256)
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

	t.Run("x-api-token and a refusal", func(t *testing.T) {
		out := curl(t, "-sS", "-X", "POST", p.base+"/v2/media/upload",
			"-H", "X-API-Token: "+apiToken,
			"-H", "X-Phone-Number-Id: 999",
			"--data-binary", "@"+path)
		assert.Contains(t, out, `"error":"FORBIDDEN"`)
	})

	// Stop Caddy so that every log line is written, then scan them all.
	p.stop(t)
	logs := p.allLogs(t)
	assertNoSecrets(t, logs)
	assert.Contains(t, logs, `"user_id":"acme"`, "the access log does not name the account")
	assert.Contains(t, logs, `"status":403`)
}

// curlCode runs curl and returns its output and exit code (curl's codes
// say what went wrong: 18 is a partial file).
func curlCode(t *testing.T, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", args...).Output()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), ee.ExitCode()
	}
	require.NoError(t, err)
	return string(out), 0
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return fixtures.SHA256Hex(b)
}

// TestEndToEndSeedDownload runs the public docs' download example, with
// the host and token swapped, against the built binary, then a resume of
// a broken download with curl -C -.
func TestEndToEndSeedDownload(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	p := startCaddy(t, gatewayBlock(graphURL, startApp(t), ""))

	doc := make([]byte, 3_000_000)
	_, _ = rand.Read(doc)
	copy(doc, "%PDF-1.7")
	id, err := emu.AddMedia(phone, "application/pdf", doc)
	require.NoError(t, err)
	dir := t.TempDir()

	t.Run("seed example", func(t *testing.T) {
		out := filepath.Join(dir, "download.bin")
		headers := filepath.Join(dir, "headers.txt")
		curl(t, "-sS", "-L", p.base+"/v2/media/"+id+"/download?disposition=attachment",
			"-H", "Authorization: Bearer "+apiToken,
			"-o", out, "-D", headers)
		assert.Equal(t, fixtures.SHA256Hex(doc), fileSHA(t, out))
		h, err := os.ReadFile(headers)
		require.NoError(t, err)
		hs := strings.ToLower(string(h))
		assert.Contains(t, hs, "http/1.1 200 ok")
		assert.Contains(t, hs, "content-type: application/pdf\r\n")
		assert.Contains(t, hs, "content-length: 3000000\r\n")
		assert.Contains(t, hs, `content-disposition: attachment; filename="`+id+`.pdf"`)
		assert.Contains(t, hs, `etag: "`+fixtures.SHA256Hex(doc)+`"`)
		assert.Contains(t, hs, "repr-digest: sha-256=:")
	})

	t.Run("unknown media", func(t *testing.T) {
		out := curl(t, "-sS", p.base+"/v2/media/1234567890/download", "-H", "Authorization: Bearer "+apiToken)
		assert.Contains(t, out, `"success":false,"error":"NOT_FOUND","message":"Media URL not found"`)
	})

	t.Run("curl -C - resumes a broken download", func(t *testing.T) {
		out := filepath.Join(dir, "resumed.bin")
		emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.CutBody, AfterBytes: 1_200_000, Times: 1})
		_, code := curlCode(t, "-sS", p.base+"/v2/media/"+id+"/download", "-H", "Authorization: Bearer "+apiToken, "-o", out)
		assert.Equal(t, 18, code, "curl must see a partial file, not a complete one")
		fi, err := os.Stat(out)
		require.NoError(t, err)
		require.Less(t, fi.Size(), int64(len(doc)))
		_, code = curlCode(t, "-sS", "-C", "-", p.base+"/v2/media/"+id+"/download", "-H", "Authorization: Bearer "+apiToken, "-o", out)
		assert.Equal(t, 0, code)
		assert.Equal(t, fixtures.SHA256Hex(doc), fileSHA(t, out))
		cdn := 0
		for _, r := range emu.Requests() {
			if r.Route == "cdn" && r.Header.Get("Range") != "" {
				cdn++
				assert.Equal(t, fmt.Sprintf("bytes=%d-%d", fi.Size(), len(doc)-1), r.Header.Get("Range"))
			}
		}
		assert.Equal(t, 1, cdn, "the resume did not reach the CDN as a range")
	})

	p.stop(t)
	assertNoSecrets(t, p.allLogs(t))
}

// TestEndToEnd100MB uploads a 100 MB document through the built binary
// with curl and downloads it again, comparing hashes.
func TestEndToEnd100MB(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	p := startCaddy(t, gatewayBlock(graphURL, startApp(t), ""))
	dir := t.TempDir()
	src := filepath.Join(dir, "big.pdf")
	f, err := os.Create(src)
	require.NoError(t, err)
	_, err = f.WriteString("%PDF-1.7\n")
	require.NoError(t, err)
	_, err = io.CopyN(f, rand.Reader, 100_000_000-9)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	want := fileSHA(t, src)

	out := curl(t, "-sS", "-X", "POST", p.base+"/v2/media/upload",
		"-H", "Authorization: Bearer "+apiToken,
		"-H", "X-Phone-Number-Id: "+phone,
		"-H", "X-Filename: big.pdf",
		"-H", "Content-Type: application/pdf",
		"--data-binary", "@"+src)
	var a uploadAnswer
	require.NoError(t, json.Unmarshal([]byte(out), &a), out)
	require.True(t, a.Success, out)
	m, ok := emu.Media(a.Data.MediaID)
	require.True(t, ok)
	assert.Equal(t, want, m.SHA256)
	assert.Equal(t, int64(100_000_000), m.Size)

	dst := filepath.Join(dir, "download.bin")
	curl(t, "-sS", "-L", p.base+"/v2/media/"+a.Data.MediaID+"/download?disposition=attachment",
		"-H", "Authorization: Bearer "+apiToken, "-o", dst)
	assert.Equal(t, want, fileSHA(t, dst))
}

func TestEndToEndHashToken(t *testing.T) {
	skipShort(t)
	bin := caddyBinary(t)
	out, err := exec.Command(bin, "whatsapp-media", "hash-token", "--plaintext", apiToken).Output()
	require.NoError(t, err)
	assert.Equal(t, fixtures.SHA256Hex([]byte(apiToken))+"\n", string(out))
	cmd := exec.Command(bin, "whatsapp-media", "hash-token")
	cmd.Stdin = strings.NewReader(apiToken + "\n")
	out, err = cmd.Output()
	require.NoError(t, err)
	assert.Equal(t, fixtures.SHA256Hex([]byte(apiToken))+"\n", string(out))
}
