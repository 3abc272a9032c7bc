package integration

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// TestEndToEndURLUploads: uploads from a URL through the built binary,
// from curl, Node's fetch and Python's urllib. Every origin is on
// loopback: 127.0.0.1, which one gateway allows (url_fetch_allow) and
// another does not, and 127.0.0.2, which neither does.
func TestEndToEndURLUploads(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	photo := fixtures.Sample("image/jpeg")
	exe := append([]byte("MZ\x90\x00"), make([]byte, 4000)...)
	exe[0x3C] = 0x80
	copy(exe[0x80:], "PE\x00\x00\x4c\x01")
	var hits atomic.Int32
	var origin *httptest.Server
	origin = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		case "/to-refused":
			http.Redirect(w, r, "http://127.0.0.2:"+r.URL.Query().Get("port")+"/photo.jpg", http.StatusFound)
		case "/to-photo":
			http.Redirect(w, r, origin.URL+"/photo.jpg", http.StatusFound)
		case "/huge.jpg":
			w.Header().Set("Content-Type", "image/jpeg")
			w.Header().Set("Content-Length", strconv.Itoa(6<<20))
			_, _ = w.Write(photo)
		case "/setup.jpg":
			w.Header().Set("Content-Type", "image/jpeg")
			_, _ = w.Write(exe)
		default:
			w.Header().Set("Content-Type", "image/jpeg")
			w.Header().Set("Content-Disposition", `inline; filename="beach day.jpg"`)
			_, _ = w.Write(photo)
		}
	}))
	t.Cleanup(origin.Close)
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	require.NoError(t, err)
	var refusedHits atomic.Int32
	refused := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { refusedHits.Add(1) }))
	refused.Listener = ln
	refused.Start()
	t.Cleanup(refused.Close)
	_, originPort, _ := net.SplitHostPort(origin.Listener.Addr().String())
	_, refusedPort, _ := net.SplitHostPort(ln.Addr().String())

	site := mediaBlock(graphURL, "path_prefix /strict/media") + "\n" +
		gatewayBlock(graphURL, startApp(t), "url_fetch_allow 127.0.0.1/32")("")
	p := startCaddy(t, func(string) string { return site })
	clients, _ := filepath.Abs("testdata/clients")
	send := func(t *testing.T, who, path string, body map[string]string) clientResult {
		t.Helper()
		url := p.base + path
		headers := map[string]string{"Authorization": "Bearer " + apiToken}
		switch who {
		case "curl":
			b, _ := json.Marshal(body)
			return curlResult(t, "-sS", "-X", "POST", url, "-H", "Authorization: Bearer "+apiToken,
				"-H", "Content-Type: application/json", "--data-binary", string(b), "-w", "\n%{http_code}")
		case "node":
			return runClient(t, "node", filepath.Join(clients, "fetch.mjs"),
				jsonSpec(map[string]any{"url": url, "method": "POST", "mode": "json", "headers": headers, "json": body}))
		default:
			return runClient(t, "python3", filepath.Join(clients, "urllib_client.py"),
				jsonSpec(map[string]any{"url": url, "method": "POST", "mode": "json", "headers": headers, "json": body}))
		}
	}
	var answer struct {
		Error   string
		Message string
		Details struct{ Status int }
		Data    struct {
			MediaID, MimeType string
			Size              int
		}
	}
	for _, who := range []string{"curl", "node", "python"} {
		t.Run(who+": an allowed origin's file arrives whole, with its name and type", func(t *testing.T) {
			res := send(t, who, "/v2/media/upload", map[string]string{"phoneNumberId": phone, "url": origin.URL + "/photo.jpg"})
			require.Equal(t, 200, res.Status, res.Body)
			require.NoError(t, json.Unmarshal([]byte(res.Body), &answer))
			got, m := stored(t, emu, answer.Data.MediaID)
			assert.True(t, bytes.Equal(photo, got), "the bytes differ")
			assert.Equal(t, "image/jpeg", m.MimeType)
			ups := emu.Uploads()
			assert.Equal(t, "beach day.jpg", ups[len(ups)-1].FileName)
		})
	}
	cases := []struct {
		name, path, url string
		status          int
		code            string
	}{
		{"127.0.0.2, not allowed", "/v2/media/upload", "http://127.0.0.2:" + refusedPort + "/photo.jpg", 403, "URL_FORBIDDEN"},
		{"a redirect to a refused address", "/v2/media/upload", origin.URL + "/to-refused?port=" + refusedPort, 403, "URL_FORBIDDEN"},
		{"ftp", "/v2/media/upload", "ftp://127.0.0.1:" + originPort + "/photo.jpg", 400, "URL_INVALID"},
		{"user info", "/v2/media/upload", "http://me:secret@127.0.0.1:" + originPort + "/photo.jpg", 400, "URL_INVALID"},
		{"an origin 404", "/v2/media/upload", origin.URL + "/missing", 502, "URL_FETCH_FAILED"},
		{"declared too large", "/v2/media/upload", origin.URL + "/huge.jpg", 413, "PAYLOAD_TOO_LARGE"},
		{"an executable served as image/jpeg", "/v2/media/upload", origin.URL + "/setup.jpg", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"strict: 127.0.0.1", "/strict/media/upload", "http://127.0.0.1:" + originPort + "/photo.jpg", 403, "URL_FORBIDDEN"},
		{"strict: localhost", "/strict/media/upload", "http://localhost:" + originPort + "/photo.jpg", 403, "URL_FORBIDDEN"},
		{"strict: [::1]", "/strict/media/upload", "http://[::1]:" + originPort + "/photo.jpg", 403, "URL_FORBIDDEN"},
		{"strict: [::ffff:127.0.0.1]", "/strict/media/upload", "http://[::ffff:127.0.0.1]:" + originPort + "/photo.jpg", 403, "URL_FORBIDDEN"},
	}
	for _, c := range cases {
		for _, who := range []string{"curl", "node", "python"} {
			t.Run(who+": "+c.name, func(t *testing.T) {
				metaBefore, originBefore := len(emu.Requests()), hits.Load()
				res := send(t, who, c.path, map[string]string{"phoneNumberId": phone, "url": c.url})
				require.Empty(t, res.Error)
				assert.Equal(t, c.status, res.Status, res.Body)
				require.NoError(t, json.Unmarshal([]byte(res.Body), &answer), res.Body)
				assert.Equal(t, c.code, answer.Error)
				assert.Len(t, emu.Requests(), metaBefore, "a request reached Meta")
				if strings.HasPrefix(c.name, "strict") {
					assert.Equal(t, originBefore, hits.Load(), "the origin saw a request")
				}
				if c.status == 502 {
					assert.Equal(t, 404, answer.Details.Status, "the origin's status in details")
				}
			})
		}
	}
	assert.Zero(t, refusedHits.Load(), "127.0.0.2 saw a request")
	t.Run("a redirect to an allowed address is followed", func(t *testing.T) {
		res := send(t, "curl", "/v2/media/upload", map[string]string{"phoneNumberId": phone, "url": origin.URL + "/to-photo", "filename": "mine.jpg"})
		assert.Equal(t, 200, res.Status, res.Body)
		ups := emu.Uploads()
		assert.Equal(t, "mine.jpg", ups[len(ups)-1].FileName)
	})
}
