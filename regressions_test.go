package whatsappmedia

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/metaemu"
)

func TestDownloadRangeIgnoredByCDN(t *testing.T) {
	e := newEnv(t)
	data := jpegBytes(100_000)
	id := e.media(data, "image/jpeg")
	for _, rng := range []struct {
		h          string
		start, end int
	}{{"bytes=0-99", 0, 99}, {"bytes=5000-5999", 5000, 5999}, {"bytes=99990-", 99990, 99999}} {
		e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.IgnoreRange, Times: 1})
		resp := e.download(id, "", map[string]string{"Range": rng.h})
		require.Equal(t, 206, resp.StatusCode)
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err, rng.h)
		assert.Equal(t, data[rng.start:rng.end+1], body, rng.h)
	}
}

func TestIntrospectEmptyAnswersFailClosed(t *testing.T) {
	app := newFakeApp(t)
	s := newIntrospect(t, app, nil)
	for _, ans := range []string{"null", "{}", `{"error":"db down"}`, `[]`} {
		app.set("tok", ans)
		_, err := s.Lookup(context.Background(), "tok")
		require.Error(t, err, ans)
		assert.NotErrorIs(t, err, ErrUnknownToken, "%s read as a revoked token", ans)
	}
}

func TestIntrospectPurgeAllRacesLoad(t *testing.T) {
	app := newFakeApp(t)
	app.set("tok", activeAnswer("u", time.Time{}))
	gate := make(chan struct{})
	app.mu.Lock()
	app.gate = gate
	app.mu.Unlock()
	s := newIntrospect(t, app, nil)
	done := make(chan error, 1)
	go func() {
		_, err := s.Lookup(context.Background(), "tok")
		done <- err
	}()
	require.Eventually(t, func() bool { return app.calls.Load() == 1 }, 5*time.Second, time.Millisecond)
	// The token is revoked and everything purged while the first answer
	// (still "active") is on its way.
	app.set("tok", map[string]any{"active": false})
	purgeIntrospectCaches("")
	app.mu.Lock()
	app.gate = nil
	app.mu.Unlock()
	close(gate)
	assert.ErrorIs(t, <-done, ErrUnknownToken, "an answer from before the purge was used")
	_, err := s.Lookup(context.Background(), "tok")
	assert.ErrorIs(t, err, ErrUnknownToken, "an answer from before the purge was cached")
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
		data := jpegBytes(400_000)
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
		data := jpegBytes(120_000)
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
