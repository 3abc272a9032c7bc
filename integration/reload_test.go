package integration

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// TestEndToEndReloadMidTransfer reloads the config while a 100 MB upload
// and a 100 MB download are under way through the built binary: both
// must complete, byte for byte.
func TestEndToEndReloadMidTransfer(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	appAddr := startApp(t)
	adminAddr := "localhost:" + fixtures.FreePort(t)
	site := func(extra string) string {
		return fmt.Sprintf("%s\n", gatewayBlock(graphURL, appAddr, extra)(""))
	}
	p := startCaddyWith(t, "admin "+adminAddr, site(""))

	dir := t.TempDir()
	const size = 100_000_000
	src := filepath.Join(dir, "big.pdf")
	f, err := os.Create(src)
	require.NoError(t, err)
	_, _ = f.WriteString("%PDF-1.7\n")
	_, err = io.CopyN(f, rand.Reader, size-9)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	data, err := os.ReadFile(src)
	require.NoError(t, err)
	id, err := emu.AddMedia(phone, "application/pdf", data)
	require.NoError(t, err)
	want := fixtures.SHA256Hex(data)
	data = nil

	var wg sync.WaitGroup
	var upOut, dlErr string
	dst := filepath.Join(dir, "download.bin")
	wg.Add(2)
	go func() {
		defer wg.Done()
		upOut, _ = curlCode(t, "-sS", "--limit-rate", "30M", "-X", "POST", p.base+"/v2/media/upload",
			"-H", "Authorization: Bearer "+apiToken, "-H", "X-Phone-Number-Id: "+phone,
			"-H", "Content-Type: application/pdf", "--data-binary", "@"+src)
	}()
	go func() {
		defer wg.Done()
		out, code := curlCode(t, "-sS", "--limit-rate", "30M", p.base+"/v2/media/"+id+"/download",
			"-H", "Authorization: Bearer "+apiToken, "-o", dst)
		if code != 0 {
			dlErr = fmt.Sprintf("curl exit %d: %s", code, out)
		}
	}()

	time.Sleep(time.Second)
	newCfg := filepath.Join(t.TempDir(), "Caddyfile")
	require.NoError(t, os.WriteFile(newCfg, []byte(p.config("admin "+adminAddr, site("max_size 200MiB"))), 0o600))
	out, err := exec.Command(caddyBinary(t), "reload", "--config", newCfg, "--adapter", "caddyfile", "--address", adminAddr).CombinedOutput()
	require.NoError(t, err, "caddy reload: %s", out)
	wg.Wait()

	assert.Empty(t, dlErr)
	assert.Equal(t, want, fileSHA(t, dst), "the download broke across the reload")
	var a uploadAnswer
	require.NoError(t, json.Unmarshal([]byte(upOut), &a), upOut)
	require.True(t, a.Success, upOut)
	m, ok := emu.Media(a.Data.MediaID)
	require.True(t, ok)
	assert.Equal(t, want, m.SHA256, "the upload broke across the reload")
	p.stop(t)
	assert.Contains(t, p.logs.String(), "load complete", "no reload happened")
	assertNoSecrets(t, p.allLogs(t))
}
