package integration

import (
	"crypto/sha256"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// TestEndToEndMetaAsItIs drives the built binary against an emulator that
// behaves as docs/meta.md says Graph does: no subcodes, customer media
// that refuses phone_number_id, media ids that expire, rate limits.
func TestEndToEndMetaAsItIs(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	// The emulator's clock, moved by the test while the emulator serves.
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	emu, err := metaemu.New(metaemu.Config{Tokens: map[string][]string{metaToken: {phone}}, NoSubcodes: true, Now: clock})
	require.NoError(t, err)
	srv := httptest.NewServer(emu)
	t.Cleanup(func() { _ = emu.Close(); srv.Close() })
	p := startCaddy(t, gatewayBlock(srv.URL, startApp(t), "media_cache_ttl 0"))
	auth := []string{"-H", "Authorization: Bearer " + apiToken}

	t.Run("a customer's photo with and without phoneNumberId", func(t *testing.T) {
		photo := fixtures.JPEG(300_000)
		id, err := emu.AddCustomerMedia(phone, "image/jpeg", photo)
		require.NoError(t, err)
		dst := filepath.Join(t.TempDir(), "photo.jpg")
		for _, q := range []string{"", "?phoneNumberId=" + phone} {
			out := curl(t, append(auth, "-sS", "-o", dst, "-w", "%{http_code}", p.base+"/v2/media/"+id+"/download"+q)...)
			assert.Equal(t, "200", out, q)
			got, err := os.ReadFile(dst)
			require.NoError(t, err)
			assert.Equal(t, sha256.Sum256(photo), sha256.Sum256(got), "not byte-exact %s", q)
		}
		out := curl(t, append(auth, "-sS", "-w", "\n%{http_code}", p.base+"/v2/media/"+id+"/download?phoneNumberId="+otherPhone)...)
		assert.True(t, strings.HasSuffix(out, "403"), out)
		for _, r := range emu.Requests() {
			assert.NotContains(t, r.Query, "phone_number_id", "Graph was sent phone_number_id")
		}
	})

	t.Run("renamed types arrive as Meta names them in both modes", func(t *testing.T) {
		dir := t.TempDir()
		for _, c := range []struct{ sample, declared, want string }{
			{"sample.ogg", "audio/opus", "audio/ogg"},
			{"sample.3gp", "video/3gp", "video/3gpp"},
		} {
			src := filepath.Join("..", "testdata", "samples", c.sample)
			data, err := os.ReadFile(src)
			require.NoError(t, err)
			file := filepath.Join(dir, c.sample)
			require.NoError(t, os.WriteFile(file, data, 0o600))
			for _, mode := range [][]string{
				{"-H", "X-Phone-Number-Id: " + phone, "-H", "Content-Type: " + c.declared, "--data-binary", "@" + file},
				{"-F", "phoneNumberId=" + phone, "-F", "file=@" + file + ";type=" + c.declared},
			} {
				out := curl(t, append(append(auth, "-sS", "-X", "POST", p.base+"/v2/media/upload"), mode...)...)
				assert.Contains(t, out, `"mimeType":"`+c.want+`"`, out)
				ups := emu.Uploads()
				require.NotEmpty(t, ups)
				last := ups[len(ups)-1]
				assert.Equal(t, c.want, last.FileType, "the file part's type at Meta")
				assert.Equal(t, c.want, last.Fields["type"])
				assert.NotEmpty(t, last.MediaID, "Meta refused it")
			}
		}
	})

	t.Run("unknown and expired ids without a subcode are 404", func(t *testing.T) {
		id, err := emu.AddCustomerMedia(phone, "image/jpeg", fixtures.JPEG(100))
		require.NoError(t, err)
		now.Add(int64(metaemu.WebhookLifetime + time.Minute))
		for _, mid := range []string{"123456", id} {
			out := curl(t, append(auth, "-sS", "-w", "\n%{http_code}", p.base+"/v2/media/"+mid+"/download")...)
			assert.Contains(t, out, `"error":"NOT_FOUND"`, mid)
			assert.Contains(t, out, `"message":"Media URL not found"`, mid)
			assert.True(t, strings.HasSuffix(out, "404"), out)
		}
	})

	t.Run("Graph's 429 is a 429 with Retry-After heard by every client", func(t *testing.T) {
		data := fixtures.JPEG(4 << 20)
		file := filepath.Join(t.TempDir(), "photo.jpg")
		require.NoError(t, os.WriteFile(file, data, 0o600))
		rf := refusal{name: "rate limited", method: "POST", path: uploadPath, mode: "multipart",
			header: map[string]string{"Authorization": "Bearer " + apiToken}, fields: map[string]string{"phoneNumberId": phone},
			fileType: "image/jpeg", status: 429, code: "META_API_ERROR"}
		clients := filepath.Join("testdata", "clients")
		for name, run := range map[string]func() clientResult{
			"go": func() clientResult { return goClient(t, http.DefaultClient, p.base, rf, data) },
			"node fetch": func() clientResult {
				return runClient(t, "node", filepath.Join(clients, "fetch.mjs"), specFor(p.base, file, rf, 0))
			},
			"python urllib": func() clientResult {
				return runClient(t, "python3", filepath.Join(clients, "urllib_client.py"), specFor(p.base, file, rf, 0))
			},
		} {
			emu.Inject(metaemu.RateLimitFault("upload", 1))
			res := run()
			if rf.check(t, name, res) {
				assert.Equal(t, "60", res.RetryAfter, name)
			}
		}
		emu.Inject(metaemu.RateLimitFault("media", 1))
		id, err := emu.AddMedia(phone, "image/jpeg", fixtures.JPEG(100))
		require.NoError(t, err)
		out := curl(t, append(auth, "-sS", "-D", "-", p.base+"/v2/media/"+id+"/download")...)
		assert.Contains(t, out, "HTTP/1.1 429")
		assert.Contains(t, out, "Retry-After: 60")
	})
}
