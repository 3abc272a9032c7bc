package whatsappmedia

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// patternReader yields n bytes that begin like a PDF, without allocating.
type patternReader struct {
	n, off int64
}

func (p *patternReader) Read(b []byte) (int, error) {
	if p.off >= p.n {
		return 0, io.EOF
	}
	if left := p.n - p.off; int64(len(b)) > left {
		b = b[:left]
	}
	for i := range b {
		b[i] = byte('a' + (p.off+int64(i))%26)
	}
	if p.off == 0 && len(b) >= 5 {
		copy(b, "%PDF-")
	}
	p.off += int64(len(b))
	return len(b), nil
}

// multipartStream streams a curl-shaped multipart body (phoneNumberId,
// then the file) of a file of n bytes.
func multipartStream(n int64) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		_ = mw.WriteField("phoneNumberId", phoneA)
		fw, _ := mw.CreateFormFile("file", "doc.pdf")
		buf := make([]byte, 64<<10)
		_, _ = io.CopyBuffer(fw, &patternReader{n: n}, buf)
		pw.CloseWithError(mw.Close())
	}()
	return pr, mw.FormDataContentType()
}

func benchEnv(b *testing.B) *env {
	return newEnvWith(b, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA}}, DiscardUploads: true},
		func(h *Handler) { h.MaxSize = 200 << 20 })
}

func uploadOnce(tb testing.TB, e *env, mode string, n int64) {
	var req *http.Request
	if mode == "raw" {
		req = e.rawUpload(tokPremium, &patternReader{n: n}, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "application/pdf"})
		req.ContentLength = n
	} else {
		body, ct := multipartStream(n)
		req = e.rawUpload(tokPremium, body, map[string]string{"Content-Type": ct})
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(tb, 200, resp.StatusCode)
}

// measure runs once to warm the connection pools, then b.N times, each
// run moving n bytes.
func measure(b *testing.B, n int64, once func()) {
	once()
	b.SetBytes(n)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		once()
	}
}

// BenchmarkUpload measures whole uploads (client, gateway and emulator in
// one process). B/op must stay the same order from 1 MB to 100 MB: the
// gateway holds no file in memory.
//
//	go test -run '^$' -bench BenchmarkUpload -benchmem .
func BenchmarkUpload(b *testing.B) {
	for _, mode := range []string{"raw", "multipart"} {
		for _, n := range []int64{1 << 20, 100 << 20} {
			b.Run(mode+"-"+strconv.FormatInt(n>>20, 10)+"MB", func(b *testing.B) {
				e := benchEnv(b)
				measure(b, n, func() { uploadOnce(b, e, mode, n) })
			})
		}
	}
}

// allocatedPerRun runs once to warm up, then returns the bytes the process
// allocated per run over three more.
func allocatedPerRun(once func()) uint64 {
	once()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const runs = 3
	for i := 0; i < runs; i++ {
		once()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / runs
}

// TestUploadAllocationsIndependentOfSize compares the bytes allocated by
// whole 1 MB and 64 MB uploads. Allocation counts, unlike timings, do not
// depend on how busy the machine is.
func TestUploadAllocationsIndependentOfSize(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 130 MB")
	}
	e := newEnvWith(t, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA}}, Discard: true})
	allocated := func(mode string, n int64) uint64 {
		return allocatedPerRun(func() { uploadOnce(t, e, mode, n) })
	}
	for _, mode := range []string{"raw", "multipart"} {
		small, large := allocated(mode, 1<<20), allocated(mode, 64<<20)
		t.Logf("%s: %d bytes allocated per 1 MiB upload, %d per 64 MiB upload", mode, small, large)
		// The file is 64x larger; what is allocated must not be.
		require.Less(t, large, 2*small+(1<<20), "%s upload allocations grow with the file size", mode)
	}
}

// bigMedia stores n pattern bytes at the emulator (on disk) and returns
// the media id.
func bigMedia(tb testing.TB, e *env, n int64) string {
	tb.Helper()
	data, err := io.ReadAll(&patternReader{n: n})
	require.NoError(tb, err)
	id, err := e.emu.AddMedia(phoneA, "application/pdf", data)
	require.NoError(tb, err)
	return id
}

func downloadOnce(tb testing.TB, e *env, id string, n int64) {
	req, err := http.NewRequest(http.MethodGet, e.url("/v2/media/"+id+"/download"), nil)
	require.NoError(tb, err)
	req.Header.Set("Authorization", "Bearer "+tokPremium)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	got, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.NoError(tb, err)
	require.Equal(tb, 200, resp.StatusCode)
	require.Equal(tb, n, got)
}

// BenchmarkDownload measures whole downloads (client, gateway, emulator
// serving from disk, in one process). B/op stays the same order from
// 1 MB to 100 MB.
//
//	go test -run '^$' -bench BenchmarkDownload -benchmem .
func BenchmarkDownload(b *testing.B) {
	for _, n := range []int64{1 << 20, 100 << 20} {
		b.Run(strconv.FormatInt(n>>20, 10)+"MB", func(b *testing.B) {
			e := newEnv(b)
			id := bigMedia(b, e, n)
			measure(b, n, func() { downloadOnce(b, e, id, n) })
		})
	}
}

// TestDownloadAllocationsIndependentOfSize compares the bytes allocated by
// whole 1 MiB and 64 MiB downloads.
func TestDownloadAllocationsIndependentOfSize(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MB")
	}
	e := newEnv(t)
	allocated := func(n int64) uint64 {
		id := bigMedia(t, e, n)
		return allocatedPerRun(func() { downloadOnce(t, e, id, n) })
	}
	small, large := allocated(1<<20), allocated(64<<20)
	t.Logf("%d bytes allocated per 1 MiB download, %d per 64 MiB download", small, large)
	require.Less(t, large, 2*small+(1<<20), "download allocations grow with the file size")
}

// discardMeta is a RoundTripper standing in for Meta's upload endpoint: it
// reads the request body to its end and answers a media id, so that a
// benchmark measures the gateway's parsing and re-encoding alone.
type discardMeta struct{}

func (discardMeta) RoundTrip(r *http.Request) (*http.Response, error) {
	_, err := io.Copy(io.Discard, r.Body)
	r.Body.Close()
	if err != nil {
		return nil, err
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(`{"id":"1"}`)), Request: r}, nil
}

// BenchmarkMultipartReencode measures mode A's re-encoding alone: the
// client's form parsed, the file part re-framed as Meta's form, no
// network on either side.
//
//	go test -run '^$' -bench BenchmarkMultipartReencode -benchmem .
func BenchmarkMultipartReencode(b *testing.B) {
	for _, n := range []int64{1 << 20, 100 << 20} {
		b.Run(strconv.FormatInt(n>>20, 10)+"MB", func(b *testing.B) {
			e := benchEnv(b)
			e.h.graph.client = &http.Client{Transport: discardMeta{}}
			measure(b, n, func() {
				body, ct := multipartStream(n)
				req := httptest.NewRequest(http.MethodPost, "/v2/media/upload", body)
				req.Header.Set("Content-Type", ct)
				req.Header.Set("Authorization", "Bearer "+tokPremium)
				req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), nil, nil)
				w := httptest.NewRecorder()
				require.NoError(b, e.h.ServeHTTP(w, req, nil))
				require.Equal(b, 200, w.Code, w.Body.String())
			})
		})
	}
}

// tlsEnv is a benchEnv whose emulator speaks TLS, with HTTP/2 offered,
// and whose transport to it speaks HTTP/2 or only HTTP/1.1: Meta's Graph
// API and CDN offer both.
func tlsEnv(b *testing.B, h2 bool) *env {
	e := benchEnv(b)
	e.emuSrv.Close()
	e.emuSrv = httptest.NewUnstartedServer(e.emu)
	e.emuSrv.EnableHTTP2 = true
	e.emuSrv.StartTLS()
	e.emu.SetCDNBase(e.emuSrv.URL)
	e.h.graph.base = e.emuSrv.URL + "/" + e.h.GraphVersion
	graph, err := url.Parse(e.emuSrv.URL)
	require.NoError(b, err)
	// The allow-list matches graph_url's port: the new server's.
	e.h.graph.hosts, err = newHostList(e.h.MediaHosts, graph)
	require.NoError(b, err)
	t := e.h.graph.transport
	t.TLSClientConfig = e.emuSrv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	if h2 {
		t.Protocols.SetHTTP2(true)
	}
	return e
}

// BenchmarkMetaProtocol compares HTTP/1.1 and HTTP/2 to Meta (the
// emulator over TLS) for 100 MB uploads and downloads, one at a time and
// eight at once (HTTP/2 puts those on one connection).
//
//	go test -run '^$' -bench BenchmarkMetaProtocol -benchmem .
func BenchmarkMetaProtocol(b *testing.B) {
	const n = 100 << 20
	for _, conc := range []int{1, 8} {
		for _, proto := range []string{"h1", "h2"} {
			name := proto + "-x" + strconv.Itoa(conc)
			b.Run("upload-"+name, func(b *testing.B) {
				e := tlsEnv(b, proto == "h2")
				measure(b, n*int64(conc), func() { inParallel(conc, func() { uploadOnce(b, e, "raw", n) }) })
			})
			b.Run("download-"+name, func(b *testing.B) {
				e := tlsEnv(b, proto == "h2")
				id := bigMedia(b, e, n)
				measure(b, n*int64(conc), func() { inParallel(conc, func() { downloadOnce(b, e, id, n) }) })
			})
		}
	}
}

// inParallel runs fn n times at once and waits for all.
func inParallel(n int, fn func()) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn()
		}()
	}
	wg.Wait()
}

// BenchmarkTransportBuffers compares the transport's buffers to Meta at
// net/http's 4 KiB default and at 64 KiB: the write buffer for uploads,
// the read buffer for downloads.
//
//	go test -run '^$' -bench BenchmarkTransportBuffers -benchmem .
func BenchmarkTransportBuffers(b *testing.B) {
	const n = 100 << 20
	for _, op := range []string{"raw", "multipart", "download"} {
		for _, size := range []int{4 << 10, 64 << 10} {
			kind := "write"
			if op == "download" {
				kind = "read"
			}
			b.Run(op+"-"+kind+strconv.Itoa(size>>10)+"KiB", func(b *testing.B) {
				e := benchEnv(b)
				var id string
				if op == "download" {
					e.h.graph.transport.ReadBufferSize = size
					id = bigMedia(b, e, n)
				} else {
					e.h.graph.transport.WriteBufferSize = size
				}
				once := func() {
					if op == "download" {
						downloadOnce(b, e, id, n)
					} else {
						uploadOnce(b, e, op, n)
					}
				}
				w0, r0 := syscallCounts()
				measure(b, n, once)
				b.StopTimer()
				// The whole process's syscalls (client, gateway and
				// emulator; only the gateway's change between variants)
				// over the warm-up run and the b.N measured ones.
				w1, r1 := syscallCounts()
				b.ReportMetric(float64(w1-w0)/float64(b.N+1), "writes/op")
				b.ReportMetric(float64(r1-r0)/float64(b.N+1), "reads/op")
			})
		}
	}
}

// syscallCounts returns the read and write syscalls this process has made
// (/proc/self/io), or zeros where that file is missing.
func syscallCounts() (writes, reads int64) {
	b, _ := os.ReadFile("/proc/self/io")
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscw":
			writes = n
		case "syscr":
			reads = n
		}
	}
	return writes, reads
}

// videoUploadOnce uploads video as a raw body (with its length) or a
// curl-shaped form (without), and checks the answer.
func videoUploadOnce(tb testing.TB, e *env, mode string, video []byte) {
	var req *http.Request
	if mode == "raw" {
		req = e.rawUpload(tokPremium, bytes.NewReader(video), map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "video/mp4"})
	} else {
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		go func() {
			_ = mw.WriteField("phoneNumberId", phoneA)
			fw, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Disposition": {`form-data; name="file"; filename="clip.mp4"`},
				"Content-Type": {"video/mp4"}})
			_, _ = fw.Write(video)
			pw.CloseWithError(mw.Close())
		}()
		req = e.rawUpload(tokPremium, pr, map[string]string{"Content-Type": mw.FormDataContentType()})
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(tb, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	require.Equal(tb, 200, resp.StatusCode)
}

// BenchmarkUploadVideo measures whole uploads of an H.264 video whose
// moov comes last, with format_checks on and off: the probe's share of an
// upload, and B/op and allocs/op alike at 1 MB and 16 MB. The server CPU
// of the built gateway is measured by go run ./bench -ops probe.
//
//	go test -run '^$' -bench BenchmarkUploadVideo -benchmem .
func BenchmarkUploadVideo(b *testing.B) {
	for _, n := range []int{1_000_000, 16_000_000} {
		video, err := fixtures.Video(n)
		require.NoError(b, err)
		for _, checks := range []bool{true, false} {
			for _, mode := range []string{"raw", "multipart"} {
				name := fmt.Sprintf("%dMB-%s-checks-%v", n/1_000_000, mode, map[bool]string{true: "on", false: "off"}[checks])
				b.Run(name, func(b *testing.B) {
					e := newEnvWith(b, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA}}, DiscardUploads: true},
						func(h *Handler) { h.FormatChecks = &checks })
					measure(b, int64(n), func() { videoUploadOnce(b, e, mode, video) })
				})
			}
		}
	}
}

// TestFormatChecksAllocationsIndependentOfSize: with the probe on, a 16 MB
// video upload allocates no more than a 1 MB one (the probe's state is
// fixed; it is written the bytes the transport reads, never copies them).
func TestFormatChecksAllocationsIndependentOfSize(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 100 MB")
	}
	e := newEnvWith(t, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA}}, Discard: true})
	for _, mode := range []string{"raw", "multipart"} {
		small, err := fixtures.Video(1_000_000)
		require.NoError(t, err)
		large, err := fixtures.Video(16_000_000)
		require.NoError(t, err)
		s := allocatedPerRun(func() { videoUploadOnce(t, e, mode, small) })
		l := allocatedPerRun(func() { videoUploadOnce(t, e, mode, large) })
		t.Logf("%s: %d bytes allocated per 1 MB video upload, %d per 16 MB", mode, s, l)
		require.Less(t, l, 2*s+(1<<20), "%s video upload allocations grow with the file size", mode)
	}
}
