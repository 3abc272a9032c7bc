package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddytest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

const httpPort = "9080"

// baseURL is where the caddytest configs serve.
const baseURL = "http://localhost:" + httpPort

// globalOptions is the global block every caddytest config needs, with
// extra options added.
func globalOptions(extra string) string {
	return "{\n\tadmin localhost:2999\n\thttp_port " + httpPort + "\n\tauto_https off\n\tskip_install_trust\n\t" + extra + "\n}\n"
}

// account is a static account block with the test's Meta token and phone
// number.
func account(name, token, plan string) string {
	return fmt.Sprintf("account %s {\n\ttoken %s\n\tplan %s\n\tmeta_token %s\n\tphone_numbers %s\n}\n",
		name, token, plan, metaToken, phone)
}

// startTester starts Caddy in process with a Caddyfile config.
func startTester(t *testing.T, cfg string) *caddytest.Tester {
	tester := caddytest.NewTester(t)
	tester.InitServer(cfg, "caddyfile")
	return tester
}

func caddyfile(graphURL, appAddr, extra string) string {
	return globalOptions("") + fmt.Sprintf(`
%s {
	whatsapp_media {
		graph_url %s
		%s
		accounts static {
			%s
			%s
		}
	}
	reverse_proxy %s
}
`, baseURL, graphURL, extra, account("acme", apiToken, "premium"), account("dev", devToken, "developer"), appAddr)
}

func TestCaddyUploadAndPassThrough(t *testing.T) {
	skipShort(t)
	emu, graphURL := startEmulator(t)
	tester := startTester(t, caddyfile(graphURL, startApp(t), ""))

	t.Run("other paths reach the app", func(t *testing.T) {
		resp, body := tester.AssertGetResponse(baseURL+"/v2/messages", 200, "app:/v2/messages")
		assert.Equal(t, "app", resp.Header.Get("X-Served-By"))
		_ = body
	})

	t.Run("multipart upload", func(t *testing.T) {
		data := fixtures.JPEG(256 << 10)
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		require.NoError(t, mw.WriteField("phoneNumberId", phone))
		fw, err := mw.CreateFormFile("file", "photo.jpg")
		require.NoError(t, err)
		_, _ = fw.Write(data)
		require.NoError(t, mw.Close())
		req, _ := http.NewRequest(http.MethodPost, baseURL+"/v2/media/upload", &buf)
		req.Header.Set("Content-Type", mw.FormDataContentType())
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp := tester.AssertResponseCode(req, 200)
		var out struct {
			Success bool `json:"success"`
			Data    struct {
				MediaID string `json:"mediaId"`
			} `json:"data"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&out))
		resp.Body.Close()
		got, m := stored(t, emu, out.Data.MediaID)
		assert.Equal(t, data, got)
		assert.Equal(t, "image/jpeg", m.MimeType)
	})

	t.Run("refusal without contacting Meta", func(t *testing.T) {
		before := len(emu.Requests())
		req, _ := http.NewRequest(http.MethodPost, baseURL+"/v2/media/upload", strings.NewReader("x"))
		req.Header.Set("X-API-Token", devToken)
		req.Header.Set("X-Phone-Number-Id", phone)
		_, body := tester.AssertResponse(req, 403, `{"success":false,"error":"DEVELOPER_PLAN_REQUIRED","message":"API access requires a Premium or Enterprise plan"}`+"\n")
		_ = body
		assert.Len(t, emu.Requests(), before)
	})
}

// TestCaddyExpectContinueTooLarge checks that a client announcing a body
// larger than max_size with Expect: 100-continue gets 413 at once and is
// never asked for the body.
func TestCaddyExpectContinueTooLarge(t *testing.T) {
	skipShort(t)
	emu, graphURL := startEmulator(t)
	startTester(t, caddyfile(graphURL, startApp(t), "max_size 1MiB"))

	conn, err := net.DialTimeout("tcp", "127.0.0.1:"+httpPort, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = fmt.Fprintf(conn, "POST /v2/media/upload HTTP/1.1\r\nHost: localhost:%s\r\nAuthorization: Bearer %s\r\n"+
		"X-Phone-Number-Id: %s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\nExpect: 100-continue\r\n\r\n",
		httpPort, apiToken, phone, 2<<20)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	assert.Equal(t, 413, resp.StatusCode, "expected 413 before any 100 Continue")
	assert.Contains(t, string(body), `"error":"PAYLOAD_TOO_LARGE"`)
	assert.Empty(t, emu.Requests())
}

func TestCaddyDownload(t *testing.T) {
	skipShort(t)
	emu, graphURL := startEmulator(t)
	tester := startTester(t, caddyfile(graphURL, startApp(t), ""))
	data := fixtures.JPEG(200_000)
	id, err := emu.AddMedia(phone, "image/jpeg", data)
	require.NoError(t, err)

	req, _ := http.NewRequest(http.MethodGet, baseURL+"/v2/media/"+id+"/download?disposition=attachment", nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, body := tester.AssertResponse(req, 200, string(data))
	assert.Equal(t, `attachment; filename="`+id+`.jpg"`, resp.Header.Get("Content-Disposition"))
	assert.Equal(t, "200000", resp.Header.Get("Content-Length"))
	_ = body

	req, _ = http.NewRequest(http.MethodGet, baseURL+"/v2/media/"+id+"/download", nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("Range", "bytes=1000-1999")
	resp, _ = tester.AssertResponse(req, 206, string(data[1000:2000]))
	assert.Equal(t, "bytes 1000-1999/200000", resp.Header.Get("Content-Range"))

	// A corrupt CDN answer never ends as a clean 200 through Caddy either.
	emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Corrupt, AfterBytes: 10, Times: 1})
	req, _ = http.NewRequest(http.MethodGet, baseURL+"/v2/media/"+id+"/download", nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	r, err := tester.Client.Do(req)
	require.NoError(t, err)
	got, err := io.ReadAll(r.Body)
	r.Body.Close()
	assert.Error(t, err)
	assert.Less(t, len(got), len(data))
}
