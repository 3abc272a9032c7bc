package whatsappmedia

import (
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// origin is a loopback server that serves files for uploads from a URL,
// and counts the requests it saw.
type origin struct {
	*httptest.Server
	hits atomic.Int32
	last atomic.Pointer[http.Request]
}

// startOrigin serves handler on addr (127.0.0.1:0 when empty).
func startOrigin(t *testing.T, addr string, handler http.HandlerFunc) *origin {
	t.Helper()
	o := &origin{}
	o.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.hits.Add(1)
		o.last.Store(r.Clone(r.Context()))
		handler(w, r)
	}))
	if addr != "" {
		ln, err := net.Listen("tcp", addr)
		require.NoError(t, err)
		o.Listener = ln
	}
	o.Start()
	t.Cleanup(o.Close)
	return o
}

// serveFile answers with data, its type and, if given, a disposition.
func serveFile(data []byte, typ, disposition string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", typ)
		if disposition != "" {
			w.Header().Set("Content-Disposition", disposition)
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		_, _ = w.Write(data)
	}
}

func (e *env) urlUpload(body any, hdr map[string]string) answer {
	e.t.Helper()
	b, err := json.Marshal(body)
	require.NoError(e.t, err)
	h := map[string]string{"Content-Type": "application/json"}
	for k, v := range hdr {
		h[k] = v
	}
	return e.do(e.rawUpload(tokPremium, bytes.NewReader(b), h))
}

func allowLoopback(h *Handler) { h.URLFetchAllow = []string{"127.0.0.1/32"} }

func TestURLUpload(t *testing.T) {
	jpeg := fixtures.Sample("image/jpeg")
	t.Run("the origin's type, and the URL's last segment as the name", func(t *testing.T) {
		e := newEnv(t, allowLoopback)
		o := startOrigin(t, "", serveFile(jpeg, "image/jpeg", ""))
		a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/photos/sea%20side.jpg?sig=abc"}, nil)
		up := e.checkStored(a, jpeg, "image/jpeg")
		assert.Equal(t, "sea side.jpg", up.FileName)
		req := o.last.Load()
		require.NotNil(t, req)
		assert.Equal(t, "/photos/sea%20side.jpg", req.URL.EscapedPath())
		assert.Equal(t, "sig=abc", req.URL.RawQuery)
		for _, hdr := range []string{"Authorization", "Cookie", "X-Api-Token", "X-Phone-Number-Id"} {
			assert.Empty(t, req.Header.Values(hdr), "%s reached the origin", hdr)
		}
	})
	t.Run("type and filename given, the origin's disposition", func(t *testing.T) {
		e := newEnv(t, allowLoopback)
		o := startOrigin(t, "", serveFile(jpeg, "application/octet-stream", `attachment; filename="from-origin.jpg"`))
		a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/x"}, nil)
		assert.Equal(t, "from-origin.jpg", e.checkStored(a, jpeg, "image/jpeg").FileName)
		e.emu.Reset()
		a = e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/x", "type": "image", "filename": "../mine.jpg"}, nil)
		assert.Equal(t, "mine.jpg", e.checkStored(a, jpeg, "image/jpeg").FileName)
	})
	t.Run("the phone number in the header", func(t *testing.T) {
		e := newEnv(t, allowLoopback)
		o := startOrigin(t, "", serveFile(jpeg, "image/jpeg", ""))
		a := e.urlUpload(map[string]string{"url": o.URL + "/a.jpg"}, map[string]string{"X-Phone-Number-Id": phoneA})
		e.checkStored(a, jpeg, "image/jpeg")
	})
	t.Run("chunked, without a length", func(t *testing.T) {
		e := newEnv(t, allowLoopback)
		o := startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/jpeg")
			_, _ = w.Write(jpeg[:100])
			http.NewResponseController(w).Flush()
			_, _ = w.Write(jpeg[100:])
		})
		a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/a.jpg"}, nil)
		e.checkStored(a, jpeg, "image/jpeg")
	})
}

func TestURLUploadRefusals(t *testing.T) {
	jpeg := fixtures.Sample("image/jpeg")
	exe := append([]byte("MZ\x90\x00"), make([]byte, 4000)...)
	copy(exe[0x3C:], []byte{0x80})
	copy(exe[0x80:], "PE\x00\x00\x4c\x01")
	e := newEnv(t, allowLoopback)
	files := startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			http.NotFound(w, r)
		case "/exe":
			serveFile(exe, "image/jpeg", "")(w, r)
		case "/huge":
			w.Header().Set("Content-Type", "image/jpeg")
			w.Header().Set("Content-Length", strconv.Itoa(6<<20))
			_, _ = w.Write(jpeg) // the rest never comes: the length alone refuses it
		case "/empty":
			serveFile(nil, "image/jpeg", "")(w, r)
		case "/partial":
			w.Header().Set("Content-Range", "bytes 0-99/"+strconv.Itoa(len(jpeg)))
			w.Header().Set("Content-Type", "image/jpeg")
			w.WriteHeader(http.StatusPartialContent)
			_, _ = w.Write(jpeg[:100])
		case "/nothing":
			w.WriteHeader(http.StatusNoContent)
		case "/close", "/cut", "/short":
			// Hijacked, to write what net/http's server never would.
			conn, bw, _ := http.NewResponseController(w).Hijack()
			defer conn.Close()
			switch r.URL.Path {
			case "/close":
				_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n")
				_, _ = bw.Write(jpeg[:len(jpeg)/2])
			case "/cut":
				_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nTransfer-Encoding: chunked\r\n\r\n")
				_, _ = bw.WriteString(strconv.FormatInt(int64(len(jpeg)), 16) + "\r\n")
				_, _ = bw.Write(jpeg[:len(jpeg)/2])
			default:
				_, _ = bw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: " + strconv.Itoa(len(jpeg)) + "\r\n\r\n")
				_, _ = bw.Write(jpeg[:len(jpeg)/2])
			}
			_ = bw.Flush()
		default:
			serveFile(jpeg, "image/jpeg", "")(w, r)
		}
	})
	refused := startOrigin(t, "127.0.0.2:0", serveFile(jpeg, "image/jpeg", ""))
	_, refusedPort, _ := net.SplitHostPort(refused.Listener.Addr().String())
	redirects := func(n int, to string) *origin {
		var o *origin
		o = startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) {
			hop, _ := strconv.Atoi(r.URL.Query().Get("hop"))
			if hop < n {
				http.Redirect(w, r, o.URL+"/r?hop="+strconv.Itoa(hop+1), http.StatusFound)
				return
			}
			http.Redirect(w, r, to, http.StatusFound)
		})
		return o
	}
	_, filesPort, _ := net.SplitHostPort(files.Listener.Addr().String())
	cases := []struct {
		name, url string
		status    int
		code      string
	}{
		{"ftp", "ftp://127.0.0.1/a.jpg", 400, codeURLInvalid},
		{"file", "file:///etc/passwd", 400, codeURLInvalid},
		{"user info", "http://user:pass@127.0.0.1:" + refusedPort + "/a.jpg", 400, codeURLInvalid},
		{"no host", "http:///a.jpg", 400, codeURLInvalid},
		{"relative", "/a.jpg", 400, codeURLInvalid},
		{"not a URL", "http://[::1", 400, codeURLInvalid},
		{"loopback not allowed", "http://127.0.0.2:" + refusedPort + "/a.jpg", 403, codeURLForbidden},
		{"IPv4-mapped loopback", "http://[::ffff:127.0.0.2]:" + refusedPort + "/a.jpg", 403, codeURLForbidden},
		{"unspecified", "http://0.0.0.0:" + refusedPort + "/a.jpg", 403, codeURLForbidden},
		{"redirect to a refused address", redirects(0, "http://127.0.0.2:"+refusedPort+"/a.jpg").URL + "/r", 403, codeURLForbidden},
		{"redirect to another scheme", redirects(0, "ftp://127.0.0.1/a.jpg").URL + "/r", 403, codeURLForbidden},
		{"four redirects", redirects(3, files.URL+"/a.jpg").URL + "/r", 502, codeURLFetchFailed},
		{"an origin 206", files.URL + "/partial", 502, codeURLFetchFailed},
		{"an origin 204", files.URL + "/nothing", 502, codeURLFetchFailed},
		{"delimited by the close", files.URL + "/close", 502, codeURLFetchFailed},
		{"origin 404", files.URL + "/missing", 502, codeURLFetchFailed},
		{"declared too large", files.URL + "/huge", 413, codePayloadTooLarge},
		{"an executable served as image/jpeg", files.URL + "/exe", 415, codeUnsupportedType},
		{"empty", files.URL + "/empty", 400, codeValidation},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.emu.Reset()
			a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": c.url}, nil)
			assert.Equal(t, c.status, a.Status, a.Raw)
			assert.Equal(t, c.code, a.Error, a.Raw)
			assert.Empty(t, e.emu.Requests(), "a request reached Meta")
		})
	}
	// An answer cut short is found out while it streams: Meta may have
	// had the start of the upload, and completes nothing.
	for _, path := range []string{"/short", "/cut"} {
		t.Run("cut short: "+path, func(t *testing.T) {
			e := newEnv(t, allowLoopback)
			a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": files.URL + path}, nil)
			assert.Equal(t, 502, a.Status, a.Raw)
			assert.Equal(t, codeURLFetchFailed, a.Error)
			assert.Empty(t, settledUploads(t, e), "Meta completed an upload")
		})
	}
	assert.Zero(t, refused.hits.Load(), "a refused origin saw a request")
	t.Run("a bad type is refused before the fetch", func(t *testing.T) {
		before := files.hits.Load()
		for typ, status := range map[string]int{"picture": 400, "image/gif": 415} {
			a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": files.URL + "/a.jpg", "type": typ}, nil)
			assert.Equal(t, status, a.Status, a.Raw)
		}
		assert.Equal(t, before, files.hits.Load())
	})
	t.Run("no Referer after a redirect", func(t *testing.T) {
		target := startOrigin(t, "", serveFile(jpeg, "image/jpeg", ""))
		o := startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, target.URL+"/a.jpg", http.StatusFound)
		})
		e.emu.Reset()
		e.checkStored(e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/?sig=secret"}, nil), jpeg, "image/jpeg")
		assert.Empty(t, target.last.Load().Header.Get("Referer"))
	})
	t.Run("without the allow, loopback however named", func(t *testing.T) {
		strict := newEnv(t)
		before := files.hits.Load()
		for _, host := range []string{"127.0.0.1", "localhost", "[::1]", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]"} {
			a := strict.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": "http://" + host + ":" + filesPort + "/a.jpg"}, nil)
			assert.Equal(t, 403, a.Status, "%s: %s", host, a.Raw)
			assert.Equal(t, codeURLForbidden, a.Error, host)
		}
		assert.Equal(t, before, files.hits.Load(), "the origin saw a request")
		assert.Empty(t, strict.emu.Requests(), "a request reached Meta")
	})
	t.Run("three redirects are followed", func(t *testing.T) {
		e.emu.Reset()
		a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": redirects(2, files.URL+"/a.jpg").URL + "/r"}, nil)
		e.checkStored(a, jpeg, "image/jpeg")
	})
	t.Run("the origin's status in details", func(t *testing.T) {
		a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": files.URL + "/missing"}, nil)
		assert.JSONEq(t, `{"status":404}`, string(a.Details))
	})
	t.Run("refusals counted by reason", func(t *testing.T) {
		before := testutil.ToFloat64(metrics.urlRefusals.WithLabelValues("loopback"))
		e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": "http://127.0.0.2:" + refusedPort + "/"}, nil)
		assert.Equal(t, before+1, testutil.ToFloat64(metrics.urlRefusals.WithLabelValues("loopback")))
	})
	for name, body := range map[string]string{
		"not JSON":         `{"url": `,
		"no phone number":  `{"url": "` + files.URL + `/a.jpg"}`,
		"an unknown phone": `{"phoneNumberId": "999", "url": "` + files.URL + `/a.jpg"}`,
		"two phones":       `{"phoneNumberId": "` + phoneB + `", "url": "` + files.URL + `/a.jpg"}`,
		"a bad type":       `{"phoneNumberId": "` + phoneA + `", "url": "` + files.URL + `/a.jpg", "type": "picture"}`,
		"too long":         `{"phoneNumberId": "` + phoneA + `", "url": "` + files.URL + `/` + strings.Repeat("a", 17<<10) + `"}`,
	} {
		t.Run(name, func(t *testing.T) {
			hdr := map[string]string{"Content-Type": "application/json"}
			if name == "two phones" {
				hdr["X-Phone-Number-Id"] = phoneA
			}
			a := e.do(e.rawUpload(tokPremium, strings.NewReader(body), hdr))
			assert.Contains(t, []int{400, 403}, a.Status, a.Raw)
			assert.NotEmpty(t, a.Message)
		})
	}
}

// An origin that sends its headers, then stops before the bytes that
// tell the file's type: 504 once stall_timeout passes.
func TestURLUploadOriginStallsBeforeItsHead(t *testing.T) {
	e := newEnv(t, allowLoopback, shortStall)
	o := startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10000") // no type: the bytes must tell it
		_, _ = w.Write(fixtures.JPEG(100))
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	})
	a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/blob"}, nil)
	assert.Equal(t, 504, a.Status, a.Raw)
	assert.Equal(t, codeUpstreamTimeout, a.Error)
	assert.Empty(t, e.emu.Requests())
}

// An origin that stops sending: 504 once stall_timeout passes, and Meta
// completes nothing.
func TestURLUploadOriginStalls(t *testing.T) {
	e := newEnv(t, allowLoopback, shortStall)
	release := make(chan struct{})
	o := startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("Content-Length", "100000")
		_, _ = w.Write(fixtures.JPEG(10000))
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	defer close(release)
	a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/slow.jpg"}, nil)
	assert.Equal(t, 504, a.Status, a.Raw)
	assert.Equal(t, codeUpstreamTimeout, a.Error)
	assert.Empty(t, settledUploads(t, e))
}

func TestURLUploadsOff(t *testing.T) {
	off := false
	e := newEnv(t, allowLoopback, func(h *Handler) { h.URLUploads = &off })
	o := startOrigin(t, "", serveFile(fixtures.Sample("image/jpeg"), "image/jpeg", ""))
	a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/a.jpg"}, map[string]string{"X-Phone-Number-Id": phoneA})
	assert.Equal(t, 415, a.Status, a.Raw)
	assert.Zero(t, o.hits.Load())
}

// An origin that does not answer within response_timeout: 504.
func TestURLUploadOriginSlowToAnswer(t *testing.T) {
	e := newEnv(t, allowLoopback, func(h *Handler) { h.ResponseTimeout = caddy.Duration(300 * time.Millisecond) })
	o := startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": o.URL + "/late.jpg"}, nil)
	assert.Equal(t, 504, a.Status, a.Raw)
	assert.Equal(t, codeUpstreamTimeout, a.Error)
	assert.Empty(t, e.emu.Requests())
}

// A URL's query (a presigned URL's signature) is a credential of the
// caller's: it reaches no log line, whatever the fetch's failure.
func TestURLUploadLogsNoQuery(t *testing.T) {
	e := newEnv(t, allowLoopback)
	core, logs := observer.New(zap.DebugLevel)
	e.h.logger = zap.New(core)
	refused := startOrigin(t, "127.0.0.2:0", serveFile(nil, "image/jpeg", ""))
	files := startOrigin(t, "", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/to-refused" {
			http.Redirect(w, r, refused.URL+"/x?X-Amz-Signature=secret2", http.StatusFound)
			return
		}
		http.NotFound(w, r)
	})
	closed := startOrigin(t, "", nil)
	closed.Close() // nothing listens there now
	for _, u := range []string{refused.URL + "/a.jpg?X-Amz-Signature=secret1", files.URL + "/to-refused?X-Amz-Signature=secret1",
		files.URL + "/missing?X-Amz-Signature=secret1", closed.URL + "/a.jpg?X-Amz-Signature=secret1"} {
		a := e.urlUpload(map[string]string{"phoneNumberId": phoneA, "url": u}, nil)
		assert.Contains(t, []int{403, 502}, a.Status, a.Raw)
		assert.NotContains(t, a.Raw, "secret")
	}
	require.NotEmpty(t, logs.All())
	for _, line := range logEntries(logs) {
		assert.NotContains(t, line, "secret", line)
	}
}
