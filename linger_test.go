package whatsappmedia

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

func TestLingerMode(t *testing.T) {
	h := &Handler{MaxSize: 1 << 20}
	req := func(cl int64, hdr ...string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "/v2/media/upload", strings.NewReader("x"))
		r.ContentLength = cl
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		return r
	}
	unread := &watchedBody{}
	cases := []struct {
		name string
		r    *http.Request
		b    *watchedBody
		want lingerMode
	}{
		{"no body", req(0), nil, lingerNone},
		{"read to its end", req(10), &watchedBody{read: true, n: 10, err: io.EOF}, lingerNone},
		{"a read failed (stall guard, client gone)", req(10), &watchedBody{read: true, err: errors.New("i/o timeout")}, lingerClose},
		{"Expect: 100-continue, never read", req(10, "Expect", "100-continue"), unread, lingerDrain},
		{"Expect: 100-continue, declared beyond the bound", req(1<<20+lingerExtra+1, "Expect", "100-continue"), unread, lingerClose},
		{"Expect: 100-continue, read", req(10, "Expect", "100-Continue"), &watchedBody{read: true, n: 4}, lingerDrain},
		{"declared beyond max_size + 16 MiB", req(1<<20 + lingerExtra + 1), unread, lingerClose},
		{"declared at the bound", req(1<<20 + lingerExtra), unread, lingerDrain},
		{"chunked", req(-1), unread, lingerDrain},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, h.lingerMode(c.r, c.b))
		})
	}
}

// rawConn is a client connection that writes a whole request before it
// reads, as most HTTP libraries do.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func dialRaw(t *testing.T, e *env) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

// send writes a request with the given header lines and body; a
// Content-Length is added unless a Transfer-Encoding line is given.
func (c *rawConn) send(t *testing.T, head string, body []byte) {
	t.Helper()
	if !strings.Contains(head, "Transfer-Encoding") {
		head += fmt.Sprintf("Content-Length: %d\r\n", len(body))
	}
	_, err := c.Write(append([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\n"+head+"\r\n"), body...))
	require.NoError(t, err, "the gateway stopped reading before the client had written its body")
}

// answer reads one answer and decodes its envelope.
func (c *rawConn) answer(t *testing.T) (*http.Response, answer) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, nil)
	require.NoError(t, err)
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	a := answer{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	require.NoError(t, json.Unmarshal(raw, &a), "body: %s", raw)
	return resp, a
}

// closed reports whether the gateway closed the connection within d.
func (c *rawConn) closed(d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.br.ReadByte()
	return err != nil && !errors.Is(err, os.ErrDeadlineExceeded)
}

func TestRefusalDrainsTheBody(t *testing.T) {
	e := newEnv(t)
	form, ct := buildForm(t, field("phoneNumberId", phoneA), filePart("a.jpg", "image/jpeg", fixtures.JPEG(8<<20)))
	for _, c := range []struct {
		name, head string
		status     int
		code       string
	}{
		{"unknown token", "Authorization: Bearer wrong\r\nContent-Type: " + ct + "\r\n", 401, codeUnauthorized},
		{"Meta refuses mid-upload", "Authorization: Bearer " + tokPremium + "\r\nContent-Type: " + ct + "\r\n", 400, codeMetaAPIError},
	} {
		t.Run(c.name, func(t *testing.T) {
			e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 400, ContentType: "application/json",
				Body: []byte(`{"error":{"message":"(#100) Invalid parameter","code":100}}`), Times: 1})
			defer e.emu.ClearFaults()
			before := testutil.ToFloat64(metrics.drained)
			conn := dialRaw(t, e)
			conn.send(t, c.head, form.Bytes())
			resp, a := conn.answer(t)
			assert.Equal(t, c.status, a.Status, a.Raw)
			assert.Equal(t, c.code, a.Error)
			// Drained, then closed: a refused client pays a connection
			// for each refused body (issue 30).
			assert.True(t, resp.Close, "a drained connection closes after its answer")
			assert.True(t, conn.closed(5*time.Second), "the drained connection was kept")
			drained := testutil.ToFloat64(metrics.drained) - before
			assert.Positive(t, drained)
			assert.LessOrEqual(t, drained, float64(form.Len()))
		})
	}
}

func TestRefusalClosesWithoutReading(t *testing.T) {
	e := newEnv(t, func(h *Handler) { h.MaxSize = 1 << 20 })
	for _, c := range []struct{ name, head string }{
		{"declared beyond max_size + 16 MiB", "Content-Length: 10737418240\r\n"},
		{"declared beyond, with Expect: 100-continue", "Expect: 100-continue\r\nContent-Length: 10737418240\r\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := testutil.ToFloat64(metrics.drained)
			conn := dialRaw(t, e)
			_, err := conn.Write([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong\r\n" + c.head + "\r\n"))
			require.NoError(t, err)
			resp, a := conn.answer(t)
			assert.Equal(t, 401, a.Status)
			assert.True(t, resp.Close, "Connection: close")
			assert.True(t, conn.closed(5*time.Second), "the gateway waited for a body it does not want")
			assert.Zero(t, testutil.ToFloat64(metrics.drained)-before)
		})
	}
}

func TestRefusalDrainBounds(t *testing.T) {
	t.Run("bytes: max_size + 16 MiB in all", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { h.MaxSize = 1 << 20 })
		before := testutil.ToFloat64(metrics.drained)
		conn := dialRaw(t, e)
		_, err := conn.Write([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong\r\n" +
			"Content-Type: image/jpeg\r\nX-Phone-Number-Id: " + phoneA + "\r\nTransfer-Encoding: chunked\r\n\r\n"))
		require.NoError(t, err)
		// A client that never stops sending: 64 MiB in 64 KiB chunks, or
		// until the gateway breaks the connection.
		done := make(chan struct{})
		go func() {
			defer close(done)
			chunk := append([]byte(fmt.Sprintf("%x\r\n", 64<<10)), append(bytes.Repeat([]byte{'x'}, 64<<10), "\r\n"...)...)
			for i := 0; i < 1024; i++ {
				if _, err := conn.Write(chunk); err != nil {
					return
				}
			}
		}()
		_, a := conn.answer(t)
		assert.Equal(t, 401, a.Status)
		assert.True(t, conn.closed(10*time.Second), "the connection stays open past the bound")
		<-done
		drained := testutil.ToFloat64(metrics.drained) - before
		assert.InDelta(t, float64(1<<20+lingerExtra), drained, float64(copyBufferSize), "drained %v bytes", drained)
	})

	t.Run("idle: min(stall_timeout, 5s) without a byte", func(t *testing.T) {
		e := newEnv(t, shortStall)
		conn := dialRaw(t, e)
		_, err := conn.Write([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong\r\n" +
			"Content-Type: image/jpeg\r\nX-Phone-Number-Id: " + phoneA + "\r\nContent-Length: 8388608\r\n\r\n"))
		require.NoError(t, err)
		_, err = conn.Write(fixtures.JPEG(1 << 20)) // then nothing more
		require.NoError(t, err)
		_, a := conn.answer(t)
		assert.Equal(t, 401, a.Status)
		assert.True(t, conn.closed(5*time.Second), "a client that stopped sending holds the connection")
	})
}

// TestRefusalExpectContinue: a client that asked to be told to go on and
// was refused hears the answer with Connection: close, whether it keeps
// waiting or, its wait over, sends its body anyway (Go's client does
// after a second): that body is drained, not met with a reset.
func TestRefusalExpectContinue(t *testing.T) {
	e := newEnv(t, shortStall)
	head := "POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer wrong\r\nContent-Type: image/jpeg\r\n" +
		"X-Phone-Number-Id: " + phoneA + "\r\nExpect: 100-continue\r\nContent-Length: 4194304\r\n\r\n"
	t.Run("the client keeps waiting", func(t *testing.T) {
		conn := dialRaw(t, e)
		_, err := conn.Write([]byte(head))
		require.NoError(t, err)
		resp, a := conn.answer(t)
		assert.Equal(t, 401, a.Status)
		assert.True(t, resp.Close)
		assert.True(t, conn.closed(5*time.Second), "held past the idle bound")
	})
	t.Run("the client sends its body after its wait", func(t *testing.T) {
		before := testutil.ToFloat64(metrics.drained)
		conn := dialRaw(t, e)
		_, err := conn.Write([]byte(head))
		require.NoError(t, err)
		resp, a := conn.answer(t)
		assert.Equal(t, 401, a.Status)
		assert.True(t, resp.Close)
		_, err = conn.Write(fixtures.JPEG(4 << 20)) // as a client whose wait ran out before the answer came
		require.NoError(t, err, "the body was met with a reset")
		assert.True(t, conn.closed(5*time.Second))
		assert.Equal(t, float64(4<<20), testutil.ToFloat64(metrics.drained)-before)
	})
}

// TestRefusalSlowClientMetaRefuses: Meta refuses an upload half-way while
// a slow but steady client is still sending (slower than the transport's
// 32 KiB buffer fills within the idle bound): the client still writes its
// whole body, and reads Meta's refusal.
func TestRefusalSlowClientMetaRefuses(t *testing.T) {
	e := newEnv(t, shortStall) // idle bound 300 ms
	e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 400, ContentType: "application/json",
		Body: []byte(`{"error":{"message":"(#100) Invalid parameter","code":100}}`)})
	body := fixtures.JPEG(64 << 10)
	conn := dialRaw(t, e)
	_, err := fmt.Fprintf(conn, "POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: image/jpeg\r\nX-Phone-Number-Id: %s\r\nContent-Length: %d\r\n\r\n", tokPremium, phoneA, len(body))
	require.NoError(t, err)
	for off := 0; off < len(body); off += 2 << 10 { // 2 KiB every 100 ms: 20 KiB/s
		_, err := conn.Write(body[off:min(off+2<<10, len(body))])
		require.NoError(t, err, "the gateway broke the connection at %d bytes", off)
		time.Sleep(100 * time.Millisecond)
	}
	_, a := conn.answer(t)
	assert.Equal(t, 400, a.Status, a.Raw)
	assert.Equal(t, codeMetaAPIError, a.Error)
}

// TestDrainCap: past max_draining drains in progress, a refusal is
// answered with Connection: close and its body is not read; drains are
// not transfers in flight, and have a gauge of their own.
func TestDrainCap(t *testing.T) {
	e := newEnv(t, func(h *Handler) { h.MaxDraining = 1 })
	body := fixtures.JPEG(256 << 10)
	head := "Authorization: Bearer wrong\r\nContent-Type: image/jpeg\r\nX-Phone-Number-Id: " + phoneA + "\r\n" +
		"Content-Length: " + fmt.Sprint(len(body)) + "\r\n"
	// The first refused body trickles: its drain holds the one place.
	first := dialRaw(t, e)
	_, err := first.Write([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\n" + head + "\r\n" + string(body[:1000])))
	require.NoError(t, err)
	_, a := first.answer(t)
	require.Equal(t, 401, a.Status)
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.draining) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Zero(t, testutil.ToFloat64(metrics.inFlight.WithLabelValues("upload")), "a drain counted as a transfer")

	refusedBefore := testutil.ToFloat64(metrics.drainsRefused)
	second := dialRaw(t, e)
	_, err = second.Write([]byte("POST /v2/media/upload HTTP/1.1\r\nHost: gw\r\n" + head + "\r\n"))
	require.NoError(t, err)
	resp, a := second.answer(t)
	assert.Equal(t, 401, a.Status)
	assert.True(t, resp.Close)
	assert.True(t, second.closed(5*time.Second), "a refusal past max_draining was drained")
	assert.Equal(t, 1.0, testutil.ToFloat64(metrics.drainsRefused)-refusedBefore)

	_, err = first.Write(body[1000:])
	require.NoError(t, err)
	assert.True(t, first.closed(5*time.Second))
	require.Eventually(t, func() bool { return testutil.ToFloat64(metrics.draining) == 0 }, 5*time.Second, 5*time.Millisecond)
}
