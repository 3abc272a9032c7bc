package whatsappmedia

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// TestFaultMatrix drives each upstream fault through the handler: the
// answer is the documented status and code, the request to Meta ends (the
// emulator has nothing in flight), no spool file is left, and (checked by
// newEnv) no goroutine outlives the test.
func TestFaultMatrix(t *testing.T) {
	fast := func(h *Handler) {
		h.ResponseTimeout = caddy.Duration(300 * time.Millisecond)
		h.StallTimeout = caddy.Duration(300 * time.Millisecond)
	}
	big := fixtures.JPEG(2 << 20)
	upload := func(e *env) answer {
		return e.do(e.rawUpload(tokPremium, bytes.NewReader(big), map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}))
	}
	uploadSpooled := func(e *env) answer {
		return e.do(e.formUpload(tokPremium, filePart("a.jpg", "image/jpeg", big), field("phoneNumberId", phoneA)))
	}
	download := func(e *env) answer {
		id, err := e.emu.AddMedia(phoneA, "image/jpeg", big)
		require.NoError(t, err)
		return e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
	}
	cases := []struct {
		name   string
		fault  metaemu.Fault
		send   func(*env) answer
		status int
		code   string
	}{
		{"meta hangs", metaemu.Fault{Route: "upload", Kind: metaemu.Hang}, upload, 504, codeUpstreamTimeout},
		{"meta hangs, spooled", metaemu.Fault{Route: "upload", Kind: metaemu.Hang}, uploadSpooled, 504, codeUpstreamTimeout},
		{"meta resets mid-upload", metaemu.Fault{Route: "upload", Kind: metaemu.Reset, AfterBytes: 1 << 20}, upload, 502, codeUpstreamError},
		{"meta resets, spooled", metaemu.Fault{Route: "upload", Kind: metaemu.Reset, AfterBytes: 1 << 20}, uploadSpooled, 502, codeUpstreamError},
		{"meta answers html", metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 500, ContentType: "text/html", Body: []byte("<html>Internal</html>")}, upload, 502, codeUpstreamError},
		{"meta answers garbage", metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 400, ContentType: "application/json", Body: []byte("\x00\x01{{{")}, upload, 502, codeUpstreamError},
		{"meta answers a 20 MB error", metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 400, ContentType: "application/json",
			Body: []byte(`{"error":{"message":"` + strings.Repeat("x", 20<<20) + `"}}`)}, upload, 502, codeUpstreamError},
		{"meta 5xx json", metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 500, ContentType: "application/json",
			Body: []byte(`{"error":{"message":"An unknown error occurred","type":"OAuthException","code":131000,"fbtrace_id":"T"}}`)}, upload, 502, codeMetaAPIError},
		{"metadata hangs", metaemu.Fault{Route: "media", Kind: metaemu.Hang}, download, 504, codeUpstreamTimeout},
		{"metadata garbage", metaemu.Fault{Route: "media", Kind: metaemu.Answer, Status: 200, Body: []byte("not json")}, download, 502, codeUpstreamError},
		{"cdn hangs", metaemu.Fault{Route: "cdn", Kind: metaemu.Hang}, download, 504, codeUpstreamTimeout},
		{"cdn resets before answering", metaemu.Fault{Route: "cdn", Kind: metaemu.Reset}, download, 502, codeUpstreamError},
		{"cdn 500", metaemu.Fault{Route: "cdn", Kind: metaemu.Answer, Status: 500}, download, 502, codeUpstreamError},
		{"cdn redirects off the list", metaemu.Fault{Route: "cdn", Kind: metaemu.Redirect, Location: "https://evil.example/x"}, download, 502, codeUpstreamError},
		{"cdn redirect loop", metaemu.Fault{Route: "cdn", Kind: metaemu.Redirect}, download, 502, codeUpstreamError},
		{"url stale twice", metaemu.Fault{Route: "cdn", Kind: metaemu.Answer, Status: 404}, download, 404, codeNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, fast, func(h *Handler) { h.MaxSize = 200 << 20 })
			e.emu.Inject(c.fault)
			start := time.Now()
			a := c.send(e)
			assert.Equal(t, c.status, a.Status, a.Raw[:min(len(a.Raw), 300)])
			assert.Equal(t, c.code, a.Error)
			assert.Less(t, time.Since(start), 10*time.Second)
			assert.NotContains(t, a.Raw, "127.0.0.1", "an internal address leaked to the client")
			assert.Less(t, len(a.Raw), 64<<10, "an upstream body was passed on unbounded")
			_ = e.emu.Close() // release the emulator's hanging handlers
			require.Eventually(t, func() bool { return e.emu.InFlight() == 0 }, 5*time.Second, 10*time.Millisecond)
			assert.Empty(t, dirEntries(t, e.h.SpoolDir), "a spool file was left behind")
		})
	}
}

func TestHostList(t *testing.T) {
	l, err := newHostList(DefaultMediaHosts, mustURL(t, "https://graph.facebook.com"))
	require.NoError(t, err)
	for u, want := range map[string]bool{
		"https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1": true,
		"https://scontent.xx.fbcdn.net/v/t1":                               true,
		"https://mmg.whatsapp.net/d/f/x.enc":                               true,
		"https://graph.facebook.com/v23.0/1":                               true,
		"https://LOOKASIDE.FBSBX.COM/x":                                    true,
		"http://lookaside.fbsbx.com/x":                                     false,
		"https://fbcdn.net/x":                                              false,
		"https://evilfbcdn.net/x":                                          false,
		"https://fbcdn.net.evil.com/x":                                     false,
		"https://user@lookaside.fbsbx.com/x":                               false,
		"ftp://lookaside.fbsbx.com/x":                                      false,
		"https://169.254.169.254/latest":                                   false,
		"https://localhost/x":                                              false,
		// Ports: 443 only, but graph_url's own.
		"https://lookaside.fbsbx.com:443/x":  true,
		"https://lookaside.fbsbx.com:8443/x": false,
		"https://lookaside.fbsbx.com:22/x":   false,
		"https://graph.facebook.com:8443/x":  false,
	} {
		assert.Equal(t, want, l.allows(mustURL(t, u)), u)
	}
	for _, bad := range []string{"*", "*.com", "a/b", "*.*.x.com", "", "host:443"} {
		_, err := newHostList([]string{bad}, nil)
		assert.Error(t, err, bad)
	}
}

// TestHostListGraphPort: graph_url's host is allowed on graph_url's port
// (an emulator's), and only there; other hosts on 443.
func TestHostListGraphPort(t *testing.T) {
	l, err := newHostList(DefaultMediaHosts, mustURL(t, "http://127.0.0.1:8081"))
	require.NoError(t, err)
	for u, want := range map[string]bool{
		"http://127.0.0.1:8081/cdn":         true,
		"http://127.0.0.1:8082/cdn":         false,
		"http://127.0.0.1/cdn":              false,
		"https://127.0.0.1:8081/cdn":        true,
		"https://lookaside.fbsbx.com/x":     true,
		"http://lookaside.fbsbx.com:8081/x": false,
	} {
		assert.Equal(t, want, l.allows(mustURL(t, u)), u)
	}
}
