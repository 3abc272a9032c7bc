package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// TestEndToEndFormatChecks: every format sample through the built binary,
// in both modes, from curl (with the file before phoneNumberId too, which
// spools it), Node's fetch and Python's urllib: a file WhatsApp delivers
// gets a media id, one it cannot gets 422 MEDIA_NOT_DELIVERABLE and is
// completed at the emulator never (moov-last files included); the
// refusals are counted by rule on the admin endpoint's /metrics; and with
// format_checks off every file goes to Meta, as before.
func TestEndToEndFormatChecks(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	admin := "127.0.0.1:" + fixtures.FreePort(t)
	site := mediaBlock(graphURL, "path_prefix /unchecked/media\n\t\tformat_checks off") + "\n" +
		gatewayBlock(graphURL, startApp(t), "")("")
	p := startCaddyWith(t, "admin "+admin+"\n\tmetrics", site)
	clients, _ := filepath.Abs("testdata/clients")

	for _, s := range fixtures.FormatSamples {
		file := filepath.Join(fixtures.FormatsDir(), s.Name)
		rawHeaders := map[string]string{"Authorization": "Bearer " + apiToken, "X-Phone-Number-Id": phone, "Content-Type": s.Type}
		raw := map[string]any{"url": p.base + "/v2/media/upload", "method": "POST", "mode": "raw", "headers": rawHeaders, "file": file}
		form := map[string]any{"url": p.base + "/v2/media/upload", "method": "POST", "mode": "multipart",
			"headers": map[string]string{"Authorization": "Bearer " + apiToken}, "fields": map[string]string{"phoneNumberId": phone},
			"fileType": s.Type, "file": file}
		auth := []string{"-sS", "-X", "POST", p.base + "/v2/media/upload", "-H", "Authorization: Bearer " + apiToken, "-w", "\n%{http_code}"}
		sends := map[string]func() clientResult{
			"curl raw": func() clientResult {
				return curlResult(t, append(auth, "-H", "X-Phone-Number-Id: "+phone, "-H", "Content-Type: "+s.Type, "--data-binary", "@"+file)...)
			},
			"curl form": func() clientResult {
				return curlResult(t, append(auth, "-F", "phoneNumberId="+phone, "-F", "file=@"+file)...)
			},
			"curl form, file first": func() clientResult {
				return curlResult(t, append(auth, "-F", "file=@"+file+";type="+s.Type, "-F", "phoneNumberId="+phone)...)
			},
			"node fetch raw":  func() clientResult { return runClient(t, "node", filepath.Join(clients, "fetch.mjs"), jsonSpec(raw)) },
			"node fetch form": func() clientResult { return runClient(t, "node", filepath.Join(clients, "fetch.mjs"), jsonSpec(form)) },
			"python urllib raw": func() clientResult {
				return runClient(t, "python3", filepath.Join(clients, "urllib_client.py"), jsonSpec(raw))
			},
			"python urllib form": func() clientResult {
				return runClient(t, "python3", filepath.Join(clients, "urllib_client.py"), jsonSpec(form))
			},
		}
		for who, send := range sends {
			t.Run(s.Name+"/"+who, func(t *testing.T) {
				before := len(emu.Uploads())
				res := send()
				require.Empty(t, res.Error)
				var a struct {
					Success bool
					Error   string
					Message string
					Details struct{ Rule string }
					Data    struct{ MediaID, MimeType string }
				}
				require.NoError(t, json.Unmarshal([]byte(res.Body), &a), res.Body)
				if s.Rule == "" {
					require.Equal(t, 200, res.Status, res.Body)
					assert.Equal(t, s.Type, a.Data.MimeType)
					stored(t, emu, a.Data.MediaID)
					return
				}
				assert.Equal(t, 422, res.Status, res.Body)
				assert.Equal(t, "MEDIA_NOT_DELIVERABLE", a.Error)
				assert.Equal(t, s.Rule, a.Details.Rule)
				assert.Empty(t, completedSince(t, emu, before), "Meta completed a refused upload")
			})
		}
	}

	t.Run("refusals counted by rule", func(t *testing.T) {
		resp, err := http.Get("http://" + admin + "/metrics")
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		counts := map[string]int{}
		for _, s := range fixtures.FormatSamples {
			if s.Rule != "" {
				counts[s.Rule] += 7 // each sent seven ways
			}
		}
		for rule, n := range counts {
			assert.Contains(t, string(body), fmt.Sprintf("caddy_whatsapp_media_undeliverable_uploads_total{rule=%q} %d\n", rule, n))
		}
	})

	t.Run("format_checks off", func(t *testing.T) {
		file := filepath.Join(fixtures.FormatsDir(), "hevc-moov-last.mp4")
		res := curlResult(t, "-sS", "-X", "POST", p.base+"/unchecked/media/upload", "-H", "Authorization: Bearer "+apiToken,
			"-w", "\n%{http_code}", "-F", "phoneNumberId="+phone, "-F", "file=@"+file)
		assert.Equal(t, 200, res.Status, res.Body)
	})
}

func jsonSpec(v map[string]any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// curlResult runs curl with args ending in -w "\n%{http_code}".
func curlResult(t *testing.T, args ...string) clientResult {
	t.Helper()
	out := curl(t, args...)
	i := strings.LastIndexByte(out, '\n')
	var status int
	_, _ = fmt.Sscan(out[i+1:], &status)
	return clientResult{Status: status, Body: out[:i]}
}

// completedSince waits until the emulator has finished every request it
// got, and returns the media ids of the uploads it completed after the
// first before.
func completedSince(t *testing.T, emu *metaemu.Server, before int) []string {
	t.Helper()
	require.Eventually(t, func() bool { return emu.InFlight() == 0 }, 10*time.Second, time.Millisecond)
	var ids []string
	for _, u := range emu.Uploads()[before:] {
		if u.MediaID != "" {
			ids = append(ids, u.MediaID)
		}
	}
	return ids
}
