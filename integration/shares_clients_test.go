package integration

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// TestClientsHearTooManyTransfers: the client matrix for 429: with
// max_transfers_per_account 1 and one upload of the account in progress
// (a raw socket that keeps sending a byte a second), every client's upload
// of 1 MB and 8 MB gets the JSON answer with Retry-After, from curl with
// and without Expect, Node's fetch, Python's urllib, Go's client and a raw
// socket.
func TestClientsHearTooManyTransfers(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	p := startCaddy(t, gatewayBlock(graphURL, startApp(t), "max_transfers_per_account 1"))

	// The upload that holds the account's one transfer.
	conn, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer conn.Close()
	head := fmt.Sprintf("POST /v2/media/upload HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nContent-Type: image/jpeg\r\n"+
		"X-Phone-Number-Id: %s\r\nContent-Length: %d\r\n\r\n", p.addr, apiToken, phone, 4<<20)
	_, err = conn.Write(append([]byte(head), fixtures.JPEG(64<<10)...))
	require.NoError(t, err)
	defer trickle(conn, time.Second, 1)()
	require.Eventually(t, func() bool { return emu.InFlight() == 1 }, 10*time.Second, 5*time.Millisecond,
		"the held upload reached Meta")

	rf := refusal{"429 too many transfers", "POST", uploadPath, "raw",
		map[string]string{"Authorization": "Bearer " + apiToken, "Content-Type": "image/jpeg", "X-Phone-Number-Id": phone},
		nil, "", 429, "TOO_MANY_TRANSFERS"}
	clients, _ := filepath.Abs("testdata/clients")
	dir := t.TempDir()
	client := &http.Client{Timeout: 60 * time.Second}
	defer client.CloseIdleConnections()
	for _, size := range []int{1 << 20, 8 << 20} {
		file := bodyFile(t, dir, size)
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		t.Run(strconv.Itoa(size>>20)+" MB", func(t *testing.T) {
			rf.check(t, "curl with Expect", curlClient(t, p.base, file, rf, size, true))
			rf.check(t, "curl without Expect", curlClient(t, p.base, file, rf, size, false))
			spec := specFor(p.base, file, rf, size)
			for who, res := range map[string]clientResult{
				"node fetch":    runClient(t, "node", filepath.Join(clients, "fetch.mjs"), spec),
				"python urllib": runClient(t, "python3", filepath.Join(clients, "urllib_client.py"), spec),
				"go":            goClient(t, client, p.base, rf, data),
			} {
				if rf.check(t, who, res) {
					assert.Equal(t, "5", res.RetryAfter, who)
				}
			}
			rf.check(t, "raw", rawClient(t, p.addr, rf, data))
		})
	}
	// The held upload is still the one in progress at Meta.
	assert.Equal(t, 1, emu.InFlight())
}

// trickle writes n zero bytes to conn every period, for at most 5
// minutes, until the function it returns is called (and returns).
func trickle(conn net.Conn, every time.Duration, n int) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); {
			select {
			case <-quit:
				return
			case <-tick.C:
				if _, err := conn.Write(make([]byte, n)); err != nil {
					return
				}
			}
		}
	}()
	return func() { close(quit); <-done }
}

// TestClientsHearSpoolFullMidSpool: a file sent before phoneNumberId is
// spooled, 1 MiB of spool_budget at a time; with another upload's file
// holding 3 of the 4 MiB, a client's 3 MB file is cut off at its second
// MiB with 503 SPOOL_FULL, and curl with and without Expect, Node's fetch
// and Python's urllib all get the JSON answer.
func TestClientsHearSpoolFullMidSpool(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	_, graphURL := startEmulator(t)
	spool := t.TempDir()
	p := startCaddy(t, gatewayBlock(graphURL, startApp(t), "max_size 4MiB\n\t\tspool_budget 4MiB\n\t\tspool_dir "+spool))

	conn, err := net.Dial("tcp", p.addr)
	require.NoError(t, err)
	defer conn.Close()
	const boundary = "heldboundary"
	part := "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"held.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n"
	head := fmt.Sprintf("POST /v2/media/upload HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: multipart/form-data; boundary=%s\r\nContent-Length: %d\r\n\r\n", p.addr, apiToken, boundary, 4<<20)
	_, err = conn.Write(append([]byte(head+part), fixtures.JPEG(5<<19)...)) // 2.5 MiB: 3 MiB reserved
	require.NoError(t, err)
	defer trickle(conn, 250*time.Millisecond, 2<<10)() // 8 KiB a second, above spool_min_rate
	// The spool file is unlinked once created: found among the process's
	// open files.
	fds := fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)
	require.Eventually(t, func() bool {
		entries, _ := os.ReadDir(fds)
		for _, e := range entries {
			target, _ := os.Readlink(filepath.Join(fds, e.Name()))
			if info, err := os.Stat(filepath.Join(fds, e.Name())); err == nil && strings.HasPrefix(target, spool) &&
				info.Size() >= 5<<19 {
				return true
			}
		}
		return false
	}, 10*time.Second, 5*time.Millisecond, "the held upload spooled its 2.5 MiB")

	rf := refusal{"503 spool full", "POST", uploadPath, "multipart", map[string]string{"Authorization": "Bearer " + apiToken},
		nil, "image/jpeg", 503, "SPOOL_FULL"}
	file := bodyFile(t, t.TempDir(), 3<<20)
	clients, _ := filepath.Abs("testdata/clients")
	curlFileFirst := func(expect string) clientResult {
		return curlResult(t, "-sS", "-X", "POST", p.base+"/v2/media/upload", "-H", "Authorization: Bearer "+apiToken,
			"-H", "Expect:"+expect, "-F", "file=@"+file+";type=image/jpeg", "-F", "phoneNumberId="+phone, "-w", "\n%{http_code}")
	}
	spec := jsonSpec(map[string]any{"url": p.base + "/v2/media/upload", "method": "POST", "mode": "multipart",
		"headers": rf.header, "after": map[string]string{"phoneNumberId": phone}, "fileType": "image/jpeg", "file": file})
	for who, res := range map[string]clientResult{
		"curl with Expect":    curlFileFirst(" 100-continue"),
		"curl without Expect": curlFileFirst(""),
		"node fetch":          runClient(t, "node", filepath.Join(clients, "fetch.mjs"), spec),
		"python urllib":       runClient(t, "python3", filepath.Join(clients, "urllib_client.py"), spec),
	} {
		rf.check(t, who, res)
	}
}
