package integration

import (
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
)

// TestEndToEndRefuseEarly: what Meta would refuse for its size or its
// emptiness never reaches Meta, and near misses of the media routes never
// reach the app, through the built binary, driven by curl.
func TestEndToEndRefuseEarly(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	var appHits atomic.Int32
	app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		appHits.Add(1)
		_, _ = w.Write([]byte("app:" + r.URL.Path))
	}))
	t.Cleanup(app.Close)
	p := startCaddy(t, gatewayBlock(graphURL, app.Listener.Addr().String(), ""))
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, data, 0o600))
		return path
	}
	upload := func(args ...string) string {
		return curl(t, append([]string{"-sS", "-X", "POST", p.base + "/v2/media/upload",
			"-H", "Authorization: Bearer " + apiToken, "-H", "X-Phone-Number-Id: " + phone,
			"-w", "\nstatus=%{http_code} uploaded=%{size_upload}"}, args...)...)
	}

	t.Run("a 20 MB JPEG is refused before a byte is sent", func(t *testing.T) {
		jpeg := write("big.jpg", fixtures.JPEG(20<<20))
		before := len(emu.Requests())
		out := upload("-H", "Content-Type: image/jpeg", "--data-binary", "@"+jpeg)
		assert.Contains(t, out, `"error":"PAYLOAD_TOO_LARGE"`)
		assert.Contains(t, out, "image/jpeg may be at most 5.0 MiB")
		assert.Contains(t, out, "status=413 uploaded=0")
		assert.Len(t, emu.Requests(), before, "no request at Meta")
	})

	t.Run("a chunked 20 MB MP4 is cut at the ceiling", func(t *testing.T) {
		mp4 := write("big.mp4", append(fixtures.Sample("video/mp4"), make([]byte, 20<<20)...))
		emu.Reset()
		out := upload("-H", "Content-Type: video/mp4", "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+mp4)
		assert.Contains(t, out, `"error":"PAYLOAD_TOO_LARGE"`)
		assert.Contains(t, out, "video/mp4 may be at most 16 MiB")
		require.Eventually(t, func() bool { return len(emu.Uploads()) == 1 }, 10*time.Second, 10*time.Millisecond)
		up := emu.Uploads()[0]
		assert.Empty(t, up.MediaID, "Meta stored nothing")
		assert.Less(t, up.BodyBytes, int64(17<<20), "the request to Meta ended at the ceiling")
	})

	t.Run("an empty chunked body", func(t *testing.T) {
		before := len(emu.Requests())
		out := upload("-H", "Content-Type: image/jpeg", "-H", "Transfer-Encoding: chunked", "--data-binary", "@"+write("empty.jpg", nil))
		assert.Contains(t, out, `"error":"VALIDATION_ERROR"`)
		assert.Contains(t, out, "status=400")
		assert.Len(t, emu.Requests(), before)
	})

	t.Run("near misses are answered, not passed on", func(t *testing.T) {
		photo := write("photo.jpg", fixtures.JPEG(10_000))
		for _, path := range []string{"/v2/media/upload/", "/V2/MEDIA/UPLOAD", "//v2/media/upload", "/v2/media/upload;x"} {
			out := curl(t, "-sS", "--path-as-is", "-X", "POST", p.base+path, "-H", "Authorization: Bearer "+apiToken,
				"-F", "phoneNumberId="+phone, "-F", "file=@"+photo+";type=image/jpeg", "-w", "\nstatus=%{http_code}")
			assert.Contains(t, out, `"error":"NOT_FOUND"`, path)
			assert.Contains(t, out, "POST /v2/media/upload", path)
			assert.Contains(t, out, "status=404", path)
		}
		out := curl(t, "-sS", "--path-as-is", p.base+"/v2/media/123/download/", "-H", "Authorization: Bearer "+apiToken, "-w", "\nstatus=%{http_code}")
		assert.Contains(t, out, "GET /v2/media/{mediaId}/download")
		assert.Zero(t, appHits.Load(), "a near miss reached the app")
		assert.True(t, strings.HasPrefix(curl(t, "-sS", p.base+"/v2/media/uploads"), "app:"), "other paths still pass on")
	})
}
