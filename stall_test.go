package whatsappmedia

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

func shortStall(h *Handler) { h.StallTimeout = caddy.Duration(300 * time.Millisecond) }

func TestUploadMetaStopsReading(t *testing.T) {
	e := newEnv(t, shortStall, func(h *Handler) { h.MaxSize = 200 << 20 })
	// Meta takes the headers and then no byte of a body far larger than
	// the sockets' buffers.
	e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Hang})
	req := e.rawUpload(tokPremium, &patternReader{n: 40 << 20}, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "application/pdf"})
	req.ContentLength = 40 << 20
	start := time.Now()
	a := e.do(req)
	assert.Equal(t, 504, a.Status, a.Raw)
	assert.Equal(t, codeUpstreamTimeout, a.Error)
	assert.Less(t, time.Since(start), 10*time.Second)
	// The emulator's hanging handler cannot notice (it reads nothing), so
	// look at the gateway's side: no connection to Meta is left writing.
	require.Eventually(t, func() bool {
		http.DefaultClient.CloseIdleConnections()
		e.h.graph.transport.CloseIdleConnections()
		return countGoroutines("net/http.(*persistConn).writeLoop") == 0
	}, 5*time.Second, 20*time.Millisecond, "the request to Meta was not cancelled")
}

// countGoroutines counts the goroutines whose stack mentions fn.
func countGoroutines(fn string) int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, fn) {
			n++
		}
	}
	return n
}

func TestUploadClientStalls(t *testing.T) {
	for _, mode := range []string{"streamed", "spooled"} {
		t.Run(mode, func(t *testing.T) {
			e := newEnv(t, shortStall)
			pr, pw := io.Pipe()
			defer pw.Close()
			var head []byte
			var ct string
			if mode == "streamed" {
				req := e.rawUpload(tokPremium, pr, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"})
				head = fixtures.JPEG(100_000)
				go func() { _, _ = pw.Write(head) }() // then nothing more
				a := e.do(req)
				assert.Equal(t, 408, a.Status, a.Raw)
				assert.Equal(t, "REQUEST_TIMEOUT", a.Error)
				require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 5*time.Second, 10*time.Millisecond)
				assert.Empty(t, e.emu.Uploads()[0].MediaID)
				return
			}
			body, ct0 := buildForm(t, filePart("a.jpg", "image/jpeg", fixtures.JPEG(100_000)), field("phoneNumberId", phoneA))
			ct = ct0
			head = body.Bytes()[:50_000]
			req := e.rawUpload(tokPremium, pr, map[string]string{"Content-Type": ct})
			go func() { _, _ = pw.Write(head) }()
			a := e.do(req)
			assert.Equal(t, 408, a.Status, a.Raw)
			assert.Empty(t, e.emu.Requests())
			assert.Empty(t, dirEntries(t, e.h.SpoolDir))
		})
	}
}

func TestDownloadCDNStalls(t *testing.T) {
	e := newEnv(t, shortStall)
	id := e.media(fixtures.JPEG(200_000), "image/jpeg")
	before := testutil.ToFloat64(metrics.downloadAbort.WithLabelValues("stalled"))
	e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Slow, Delay: 5 * time.Second})
	resp := e.download(id, "", nil)
	require.Equal(t, 200, resp.StatusCode)
	start := time.Now()
	_, err := io.ReadAll(resp.Body)
	assert.Error(t, err, "a stalled download ended cleanly")
	assert.Less(t, time.Since(start), 4*time.Second)
	assert.Equal(t, before+1, testutil.ToFloat64(metrics.downloadAbort.WithLabelValues("stalled")))
}

func TestDownloadClientStopsReading(t *testing.T) {
	e := newEnv(t, shortStall)
	data := bytes.Repeat([]byte("x"), 16<<20)
	id := e.media(data, "application/pdf")
	before := testutil.ToFloat64(metrics.downloadAbort.WithLabelValues("stalled"))
	// A client with a small socket buffer, so that not reading soon
	// stops the flow (loopback buffers can otherwise hold many MB).
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(16 << 10)
			}
			return c, err
		},
	}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, 200, resp.StatusCode)
	// The client reads nothing more; once the sockets' buffers are full,
	// nothing moves, and the gateway gives up on both sides.
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.downloadAbort.WithLabelValues("stalled")) == before+1
	}, 10*time.Second, 20*time.Millisecond, "the stalled download was not broken off")
	require.Eventually(t, func() bool { return countGoroutines("whatsapp-media.copyVerified") == 0 },
		5*time.Second, 20*time.Millisecond)
	got, err := io.Copy(io.Discard, resp.Body)
	assert.Error(t, err)
	assert.Less(t, got, int64(len(data)))
}

// smallBufferClient reads through a socket with a small receive buffer,
// so that how fast it reads is how fast the server can write.
func smallBufferClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				_ = c.(*net.TCPConn).SetReadBuffer(8 << 10)
				_ = c.(*net.TCPConn).SetWriteBuffer(8 << 10)
			}
			return c, err
		},
	}}
}

func TestSlowSteadyClientsAreNotStalled(t *testing.T) {
	stall := func(h *Handler) { h.StallTimeout = caddy.Duration(400 * time.Millisecond) }
	t.Run("download", func(t *testing.T) {
		e := newEnv(t, stall)
		data := fixtures.JPEG(400_000)
		id := e.media(data, "image/jpeg")
		client := smallBufferClient()
		defer client.CloseIdleConnections()
		resp, err := client.Do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
		require.NoError(t, err)
		defer resp.Body.Close()
		var got bytes.Buffer
		buf := make([]byte, 8<<10)
		for {
			n, err := resp.Body.Read(buf) // 8 KiB every 50 ms: 160 KiB/s
			got.Write(buf[:n])
			if err != nil {
				assert.ErrorIs(t, err, io.EOF)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		assert.Equal(t, data, got.Bytes())
	})
	t.Run("upload", func(t *testing.T) {
		e := newEnv(t, stall)
		data := fixtures.JPEG(120_000)
		pr, pw := io.Pipe()
		go func() {
			for off := 0; off < len(data); off += 2 << 10 { // 2 KiB every 50 ms: 40 KiB/s
				_, _ = pw.Write(data[off:min(off+2<<10, len(data))])
				time.Sleep(50 * time.Millisecond)
			}
			pw.Close()
		}()
		a := e.do(e.rawUpload(tokPremium, pr, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}))
		e.checkStored(a, data, "image/jpeg")
	})
}

// TestUploadPreludeStalls: a client that stops before the transfer begins
// (in the form's part headers, before the first byte that tells the type)
// is cut off after stall_timeout like one that stalls mid-transfer.
func TestUploadPreludeStalls(t *testing.T) {
	form, ct := buildForm(t, field("phoneNumberId", phoneA), filePart("a.jpg", "image/jpeg", fixtures.JPEG(100_000)))
	for _, c := range []struct {
		name, head string
		body       []byte
	}{
		{"in the part headers", "Content-Type: " + ct + "\r\nContent-Length: " + strconv.Itoa(form.Len()) + "\r\n", form.Bytes()[:60]},
		{"before the first byte", "Content-Type: image/jpeg\r\nX-Phone-Number-Id: " + phoneA + "\r\nTransfer-Encoding: chunked\r\n", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, shortStall)
			conn := dialRaw(t, e)
			_, err := conn.Write(append([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "+tokPremium+"\r\n"+c.head+"\r\n"), c.body...))
			require.NoError(t, err)
			start := time.Now()
			_, a := conn.answer(t)
			assert.Equal(t, 408, a.Status, a.Raw)
			assert.Equal(t, codeRequestTimeout, a.Error)
			assert.Less(t, time.Since(start), 5*time.Second)
			assert.Empty(t, e.emu.Requests(), "Meta was asked")
		})
	}
}

// TestUploadPreludeCoversTheSpool: a spooled upload whose client stops
// after the file, in the rest of the form, is cut off too.
func TestUploadPreludeCoversTheSpool(t *testing.T) {
	e := newEnv(t, shortStall)
	form, ct := buildForm(t, filePart("a.jpg", "image/jpeg", fixtures.JPEG(10_000)), field("phoneNumberId", phoneA))
	cut := bytes.Index(form.Bytes(), []byte("phoneNumberId")) // the file is sent, the field's headers are not
	require.Positive(t, cut)
	conn := dialRaw(t, e)
	_, err := conn.Write(append([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer "+tokPremium+
		"\r\nContent-Type: "+ct+"\r\nContent-Length: "+strconv.Itoa(form.Len())+"\r\n\r\n"), form.Bytes()[:cut]...))
	require.NoError(t, err)
	_, a := conn.answer(t)
	assert.Equal(t, 408, a.Status, a.Raw)
	assert.Empty(t, e.emu.Requests())
	require.Eventually(t, func() bool { return spoolUsed(e) == 0 }, 5*time.Second, 5*time.Millisecond, "the reservation was kept")
}

// TestMetaRefusalToAPausedClient: Meta refuses mid-upload while the client
// has paused past the idle bound: the client hears Meta's refusal, not a
// 499 (the gateway moving the read deadline cancels the context too).
func TestMetaRefusalToAPausedClient(t *testing.T) {
	// stall_timeout 10 s: the idle bound (5 s) ends the wait for the
	// paused client's read before the stall guard would.
	e := newEnv(t, func(h *Handler) { h.StallTimeout = caddy.Duration(10 * time.Second) })
	e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 400, ContentType: "application/json",
		Body: []byte(`{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100}}`)})
	body := fixtures.JPEG(256 << 10)
	conn := dialRaw(t, e)
	_, err := fmt.Fprintf(conn, "POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: image/jpeg\r\nX-Phone-Number-Id: %s\r\nContent-Length: %d\r\n\r\n", tokPremium, phoneA, len(body))
	require.NoError(t, err)
	_, err = conn.Write(body[:64<<10]) // then a pause
	require.NoError(t, err)
	_, a := conn.answer(t)
	assert.Equal(t, 400, a.Status, a.Raw)
	assert.Equal(t, codeMetaAPIError, a.Error)
}
