package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// TestClientsHearNotDeliverable: the client matrix for 422: an HEVC video
// of 1 MB and 15 MB, its moov first (refused early, the rest of the body
// drained so that the client hears the answer) or last (refused at the
// file's end), in both modes, from curl with and without Expect, Node's
// fetch, Python's urllib, Go's client and a raw socket. Every client gets
// the JSON; Meta completes nothing.
func TestClientsHearNotDeliverable(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	p := startCaddy(t, gatewayBlock(graphURL, startApp(t), ""))
	dir := t.TempDir()
	clients, _ := filepath.Abs("testdata/clients")
	raw := map[string]string{"Authorization": "Bearer " + apiToken, "Content-Type": "video/mp4", "X-Phone-Number-Id": phone}
	form := map[string]string{"Authorization": "Bearer " + apiToken}
	refused := []refusal{
		{"raw", "POST", uploadPath, "raw", raw, nil, "", 422, "MEDIA_NOT_DELIVERABLE"},
		{"multipart", "POST", uploadPath, "multipart", form, map[string]string{"phoneNumberId": phone}, "video/mp4", 422, "MEDIA_NOT_DELIVERABLE"},
	}
	client := &http.Client{Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	for _, size := range []int{1 << 20, 15 << 20} {
		for _, moovFirst := range []bool{true, false} {
			data, err := fixtures.PaddedVideo("hevc.mp4", size, moovFirst)
			require.NoError(t, err)
			file := filepath.Join(dir, fmt.Sprintf("hevc-%d-%v.mp4", size, moovFirst))
			require.NoError(t, os.WriteFile(file, data, 0o600))
			for _, rf := range refused {
				t.Run(fmt.Sprintf("%d MB, moov first %v, %s", size>>20, moovFirst, rf.name), func(t *testing.T) {
					before := len(emu.Uploads())
					rf.check(t, "curl with Expect", curlClient(t, p.base, file, rf, size, true))
					rf.check(t, "curl without Expect", curlClient(t, p.base, file, rf, size, false))
					spec := specFor(p.base, file, rf, size)
					rf.check(t, "node fetch", runClient(t, "node", filepath.Join(clients, "fetch.mjs"), spec))
					rf.check(t, "python urllib", runClient(t, "python3", filepath.Join(clients, "urllib_client.py"), spec))
					rf.check(t, "go", goClient(t, client, p.base, rf, data))
					rf.check(t, "raw", rawClient(t, p.addr, rf, data))
					assert.Empty(t, completedSince(t, emu, before), "Meta completed a refused upload")
				})
			}
		}
	}
}
