package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// TestCaddyMetricsAndPlaceholders checks the module's metrics on the admin
// endpoint and its placeholders in response headers.
func TestCaddyMetricsAndPlaceholders(t *testing.T) {
	skipShort(t)
	emu, graphURL := startEmulator(t)
	cfg := globalOptions("metrics") + fmt.Sprintf(`
%s {
	header >X-WA-Account {http.whatsapp_media.account}
	header >X-WA-User {http.auth.user.id}
	header >X-WA-Media {http.whatsapp_media.media_id}
	header >X-WA-Phone {http.whatsapp_media.phone_number_id}
	header >X-WA-Bytes {http.whatsapp_media.bytes}
	header >X-WA-Error {http.whatsapp_media.error}
	whatsapp_media {
		graph_url %s
		accounts static {
			%s
		}
	}
	reverse_proxy %s
}
`, baseURL, graphURL, account("acme", apiToken, "premium"), startApp(t))
	tester := startTester(t, cfg)

	req, _ := http.NewRequest(http.MethodPost, baseURL+"/v2/media/upload", strings.NewReader(string(fixtures.JPEG(4321))))
	req.Header.Set("Authorization", "Bearer "+apiToken)
	req.Header.Set("X-Phone-Number-Id", phone)
	req.Header.Set("Content-Type", "image/jpeg")
	resp := tester.AssertResponseCode(req, 200)
	resp.Body.Close()
	ups := emu.Uploads()
	require.Len(t, ups, 1)
	assert.Equal(t, "acme", resp.Header.Get("X-WA-Account"))
	assert.Equal(t, "acme", resp.Header.Get("X-WA-User"))
	assert.Equal(t, ups[0].MediaID, resp.Header.Get("X-WA-Media"))
	assert.Equal(t, phone, resp.Header.Get("X-WA-Phone"))
	assert.Equal(t, "4321", resp.Header.Get("X-WA-Bytes"))

	req, _ = http.NewRequest(http.MethodGet, baseURL+"/v2/media/"+ups[0].MediaID+"/download", nil)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp = tester.AssertResponseCode(req, 200)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.Equal(t, ups[0].MediaID, resp.Header.Get("X-WA-Media"))

	req, _ = http.NewRequest(http.MethodGet, baseURL+"/v2/media/1/download", nil)
	resp = tester.AssertResponseCode(req, 401)
	resp.Body.Close()
	assert.Equal(t, "UNAUTHORIZED", resp.Header.Get("X-WA-Error"))

	resp, err := tester.Client.Get("http://localhost:2999/metrics")
	require.NoError(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := string(body)
	for _, want := range []string{
		`caddy_whatsapp_media_requests_total{code="OK",route="upload",status="200"}`,
		`caddy_whatsapp_media_requests_total{code="OK",route="download",status="200"}`,
		`caddy_whatsapp_media_requests_total{code="UNAUTHORIZED",route="download",status="401"}`,
		`caddy_whatsapp_media_bytes_total{direction="upload"}`,
		`caddy_whatsapp_media_bytes_total{direction="download"}`,
		`caddy_whatsapp_media_transfers_in_flight{route="upload"} 0`,
		`caddy_whatsapp_media_upstream_duration_seconds_count{upstream="graph"}`,
		`caddy_whatsapp_media_upstream_duration_seconds_count{upstream="cdn"}`,
	} {
		assert.Contains(t, m, want)
	}
}
