package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// processStats reads a Caddy process's goroutines (admin pprof), open
// files and resident memory.
type processStats struct {
	goroutines, fds int
	rssKiB          int64
}

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

func readStats(t *testing.T, pid int, admin string) processStats {
	t.Helper()
	var s processStats
	resp, err := http.Get("http://" + admin + "/debug/pprof/goroutine?debug=1")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := goroutineTotal.FindSubmatch(b)
	require.NotNil(t, m, "no goroutine count from the admin endpoint")
	s.goroutines, _ = strconv.Atoi(string(m[1]))
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	require.NoError(t, err)
	s.fds = len(fds)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, line := range strings.Split(string(status), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			s.rssKiB, _ = strconv.ParseInt(strings.Fields(line)[1], 10, 64)
		}
	}
	return s
}

// TestSoak drives thousands of mixed requests (good, refused, aborted,
// faulted) through the built binary at 50-way concurrency, then checks
// that goroutines, open files and memory come back to their level after a
// warm-up, and that no spool file is left. Bounded by count and time.
func TestSoak(t *testing.T) {
	skipShort(t)
	const (
		workers  = 50
		requests = 3000
		limit    = 120 * time.Second
	)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	appAddr := startApp(t)
	admin := "localhost:" + fixtures.FreePort(t)
	spool := t.TempDir()
	p := startCaddyWith(t, "admin "+admin, gatewayBlock(graphURL, appAddr,
		"spool_dir "+spool+"\n\t\tresponse_timeout 2s\n\t\tstall_timeout 2s")(""))

	small := fixtures.JPEG(64 << 10)
	mediaID, err := emu.AddMedia(phone, "image/jpeg", fixtures.JPEG(256<<10))
	require.NoError(t, err)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()

	do := func(req *http.Request) int {
		req.Header.Set("Authorization", "Bearer "+apiToken)
		resp, err := client.Do(req)
		if err != nil {
			return -1
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	raw := func(ctx context.Context, body io.Reader, phoneID string) *http.Request {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/v2/media/upload", body)
		req.Header.Set("X-Phone-Number-Id", phoneID)
		req.Header.Set("Content-Type", "image/jpeg")
		return req
	}
	kinds := []func(i int) int{
		func(int) int { return do(raw(context.Background(), bytes.NewReader(small), phone)) }, // good, streamed
		func(int) int { // good, spooled (file before phoneNumberId)
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			fw, _ := mw.CreateFormFile("file", "a.jpg")
			_, _ = fw.Write(small)
			_ = mw.WriteField("phoneNumberId", phone)
			_ = mw.Close()
			req, _ := http.NewRequest(http.MethodPost, p.base+"/v2/media/upload", &buf)
			req.Header.Set("Content-Type", mw.FormDataContentType())
			return do(req)
		},
		func(int) int { // good download
			req, _ := http.NewRequest(http.MethodGet, p.base+"/v2/media/"+mediaID+"/download", nil)
			return do(req)
		},
		func(int) int { return do(raw(context.Background(), bytes.NewReader(small), "999")) }, // refused 403
		func(int) int { // refused 401
			req, _ := http.NewRequest(http.MethodGet, p.base+"/v2/media/"+mediaID+"/download", nil)
			resp, err := client.Do(req)
			if err != nil {
				return -1
			}
			resp.Body.Close()
			return resp.StatusCode
		},
		func(int) int { // aborted mid-upload
			ctx, cancel := context.WithCancel(context.Background())
			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write(small[:32<<10])
				cancel()
				pw.CloseWithError(io.ErrClosedPipe)
			}()
			return do(raw(ctx, pr, phone))
		},
		func(int) int { // aborted mid-download
			req, _ := http.NewRequest(http.MethodGet, p.base+"/v2/media/"+mediaID+"/download", nil)
			req.Header.Set("Authorization", "Bearer "+apiToken)
			resp, err := client.Do(req)
			if err != nil {
				return -1
			}
			_, _ = io.CopyN(io.Discard, resp.Body, 10<<10)
			resp.Body.Close()
			return resp.StatusCode
		},
		func(i int) int { // faulted upstream
			faults := []metaemu.Fault{
				{Route: "upload", Kind: metaemu.Answer, Status: 500, Times: 1},
				{Route: "upload", Kind: metaemu.Reset, AfterBytes: 16 << 10, Times: 1},
				{Route: "cdn", Kind: metaemu.Corrupt, AfterBytes: 100, Times: 1},
				{Route: "cdn", Kind: metaemu.CutBody, AfterBytes: 50 << 10, Times: 1},
				{Route: "upload", Kind: metaemu.Hang, Times: 1},
			}
			f := faults[i%len(faults)]
			emu.Inject(f)
			if f.Route == "cdn" {
				req, _ := http.NewRequest(http.MethodGet, p.base+"/v2/media/"+mediaID+"/download", nil)
				return do(req)
			}
			return do(raw(context.Background(), bytes.NewReader(small), phone))
		},
	}

	run := func(n int, pick func(int) int) map[int]int {
		var next atomic.Int64
		var mu sync.Mutex
		counts := map[int]int{}
		deadline := time.Now().Add(limit)
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					i := int(next.Add(1))
					if i > n {
						return
					}
					st := pick(i)
					mu.Lock()
					counts[st]++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		return counts
	}
	settle := func() {
		client.CloseIdleConnections()
		time.Sleep(500 * time.Millisecond)
	}

	// Warm up with good requests at full concurrency, then take the level.
	run(200, func(i int) int { return kinds[i%3](i) })
	settle()
	base := readStats(t, p.cmd.Process.Pid, admin)

	start := time.Now()
	counts := run(requests, func(i int) int { return kinds[i%len(kinds)](i) })
	emu.ClearFaults()
	t.Logf("soak: %d requests in %v, statuses %v", requests, time.Since(start).Round(time.Millisecond), counts)
	assert.Positive(t, counts[200])
	assert.Positive(t, counts[403])
	assert.Positive(t, counts[401])
	assert.Zero(t, counts[500], "the gateway answered 500")

	var after processStats
	require.Eventually(t, func() bool {
		settle()
		after = readStats(t, p.cmd.Process.Pid, admin)
		return after.goroutines <= base.goroutines+10 && after.fds <= base.fds+5
	}, 30*time.Second, time.Second, "goroutines or open files did not come back: before %+v", base)
	t.Logf("before: %d goroutines, %d fds, %d MiB RSS; after: %d goroutines, %d fds, %d MiB RSS",
		base.goroutines, base.fds, base.rssKiB>>10, after.goroutines, after.fds, after.rssKiB>>10)
	assert.Less(t, after.rssKiB-base.rssKiB, int64(64<<10), "resident memory grew by more than 64 MiB")
	left, err := os.ReadDir(spool)
	require.NoError(t, err)
	assert.Empty(t, left, "spool files left behind")
	leftFiles, _ := filepath.Glob(filepath.Join(os.TempDir(), "whatsapp-media-*.upload"))
	assert.Empty(t, leftFiles)
}
