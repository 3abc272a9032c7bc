package whatsappmedia

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// media stores data at the emulator as uploaded by phoneA.
func (e *env) media(data []byte, mimeType string) string {
	e.t.Helper()
	id, err := e.emu.AddMedia(phoneA, mimeType, data)
	require.NoError(e.t, err)
	return id
}

func (e *env) download(id, query string, hdr map[string]string) *http.Response {
	e.t.Helper()
	return e.downloadMethod(http.MethodGet, id, query, hdr)
}

func (e *env) downloadMethod(method, id, query string, hdr map[string]string) *http.Response {
	e.t.Helper()
	u := e.url("/v2/media/" + id + "/download")
	if query != "" {
		u += "?" + query
	}
	req, err := http.NewRequest(method, u, nil)
	require.NoError(e.t, err)
	req.Header.Set("Authorization", "Bearer "+tokPremium)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t testing.TB, resp *http.Response) []byte {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return b
}

func (e *env) routeRequests(route string) []metaemu.Request {
	var out []metaemu.Request
	for _, r := range e.emu.Requests() {
		if r.Route == route {
			out = append(out, r)
		}
	}
	return out
}

func TestDownload(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(300_000)
	id := e.media(data, "image/jpeg")
	sum := sha256.Sum256(data)

	resp := e.download(id, "", map[string]string{"Cookie": "s=1", "X-Api-Token": "x", "Accept-Encoding": "gzip"})
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, data, readAll(t, resp))
	assert.Equal(t, "image/jpeg", resp.Header.Get("Content-Type"))
	assert.Equal(t, "300000", resp.Header.Get("Content-Length"))
	assert.Equal(t, `inline; filename="`+id+`.jpg"`, resp.Header.Get("Content-Disposition"))
	assert.Equal(t, `"`+hex.EncodeToString(sum[:])+`"`, resp.Header.Get("ETag"))
	assert.Equal(t, "sha-256=:"+base64.StdEncoding.EncodeToString(sum[:])+":", resp.Header.Get("Repr-Digest"))
	assert.Equal(t, "bytes", resp.Header.Get("Accept-Ranges"))
	assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))

	// Two steps at Meta: metadata with the Meta token, then the CDN with
	// the token and our User-Agent; nothing of the caller's.
	for _, r := range append(e.routeRequests("media"), e.routeRequests("cdn")...) {
		assert.Equal(t, "Bearer "+metaToken, r.Header.Get("Authorization"), r.Route)
		assert.Equal(t, userAgent, r.Header.Get("User-Agent"), r.Route)
		assert.Empty(t, r.Header.Get("Cookie"), r.Route)
		assert.Empty(t, r.Header.Get("X-Api-Token"), r.Route)
	}
	require.Len(t, e.routeRequests("cdn"), 1)
	assert.Equal(t, "identity", e.routeRequests("cdn")[0].Header.Get("Accept-Encoding"))

	resp = e.download(id, "disposition=attachment", nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, `attachment; filename="`+id+`.jpg"`, resp.Header.Get("Content-Disposition"))
	assert.Equal(t, data, readAll(t, resp))
}

func TestDownloadFileSizeAsNumber(t *testing.T) {
	e := newEnvWith(t, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA}}, FileSizeAsNumber: true})
	data := []byte("%PDF-1.4 hello")
	id := e.media(data, "application/pdf")
	resp := e.download(id, "disposition=attachment", nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, data, readAll(t, resp))
	assert.Equal(t, `attachment; filename="`+id+`.pdf"`, resp.Header.Get("Content-Disposition"))
	assert.Equal(t, "14", resp.Header.Get("Content-Length"))
}

func TestDownloadValidation(t *testing.T) {
	e := newEnv(t)
	id := e.media(fixtures.JPEG(100), "image/jpeg")
	for _, p := range []string{"abc", "12.3", "12%2F34", "12%2f34", "12/34", "%2E%2E", "..", "12%3F", "12%23", "12%20", "١٢٣", "%D9%A1", strings.Repeat("1", 33), "-1", "+1"} {
		req, _ := http.NewRequest(http.MethodGet, e.url("/v2/media/")+p+"/download", nil)
		req.Header.Set("Authorization", "Bearer "+tokPremium)
		a := e.do(req)
		assert.Equal(t, 400, a.Status, p)
		assert.Equal(t, codeValidation, a.Error, p)
	}
	for _, q := range []string{"disposition=download", "disposition=", "disposition=inline&disposition=attachment", "disposition=INLINE", "phoneNumberId=abc", "a=%zz"} {
		a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download?"+q), tokPremium))
		assert.Equal(t, 400, a.Status, q)
		assert.Equal(t, codeValidation, a.Error, q)
	}
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download?phoneNumberId="+phoneOther), tokPremium))
	assert.Equal(t, 403, a.Status)
	assert.Equal(t, codeForbidden, a.Error)
	a = e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokDeveloper))
	assert.Equal(t, 403, a.Status)
	assert.Equal(t, codeDeveloperPlan, a.Error)
	assert.Empty(t, e.emu.Requests(), "Meta was contacted")
}

func mustReq(t testing.TB, method, u, token string) *http.Request {
	req, err := http.NewRequest(method, u, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+token)
	return req
}

// TestDownloadPhoneNumberID: a download's phoneNumberId must be one of the
// account's, and never goes to Graph, which refuses it for the media a
// customer sent (docs/meta.md).
func TestDownloadPhoneNumberID(t *testing.T) {
	e := newEnv(t, func(h *Handler) { off := caddy.Duration(0); h.MediaCacheTTL = &off })
	data := fixtures.JPEG(100)
	customer, err := e.emu.AddCustomerMedia(phoneA, "image/jpeg", data)
	require.NoError(t, err)
	uploaded := e.media(data, "image/jpeg")
	for _, id := range []string{customer, uploaded} {
		for _, q := range []string{"", "phoneNumberId=" + phoneA, "phoneNumberId=" + phoneB} {
			resp := e.download(id, q, nil)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, 200, resp.StatusCode, "%s %s: %s", id, q, body)
			assert.Equal(t, data, body)
		}
	}
	for _, r := range e.routeRequests("media") {
		assert.Empty(t, r.Query, "phone_number_id went to Graph")
	}
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+customer+"/download?phoneNumberId="+phoneOther), tokPremium))
	assert.Equal(t, 403, a.Status)
	assert.Equal(t, codeForbidden, a.Error)
}

// TestDownloadNotFoundWithoutSubcode: Graph's "does not exist" is code 100
// of type GraphMethodException; subcodes are deprecated.
func TestDownloadNotFoundWithoutSubcode(t *testing.T) {
	clk := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	e := newEnvWith(t, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA, phoneB}}, NoSubcodes: true,
		Now: func() time.Time { return clk }})
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/123456/download"), tokPremium))
	assert.Equal(t, 404, a.Status, a.Raw)
	assert.Equal(t, codeNotFound, a.Error)
	assert.Equal(t, "Media URL not found", a.Message)
	assert.NotContains(t, string(a.Details), "error_subcode")
}

// TestMetaRateLimits: Graph's and the CDN's 429 are a 429 with Retry-After
// (Meta's own, its usage header's estimate, or the default), also for a
// rate-limit code that came with another status; Meta's 503 keeps its 502
// with a Retry-After.
func TestMetaRateLimits(t *testing.T) {
	e := newEnv(t)
	id := e.media(fixtures.JPEG(100), "image/jpeg")
	check := func(a answer, want string) {
		t.Helper()
		assert.Equal(t, 429, a.Status, a.Raw)
		assert.Equal(t, codeMetaAPIError, a.Error)
		assert.Equal(t, want, a.Header.Get("Retry-After"))
	}
	e.emu.Inject(metaemu.RateLimitFault("media", 1))
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
	check(a, "60")
	assert.Contains(t, string(a.Details), `"code":80007`)

	e.emu.Inject(metaemu.RateLimitFault("upload", 1))
	check(e.do(e.rawUpload(tokPremium, bytes.NewReader(fixtures.JPEG(64<<10)),
		map[string]string{"Content-Type": "image/jpeg", "X-Phone-Number-Id": phoneA})), "60")

	e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Answer, Status: 429, Times: 1, Body: []byte("slow down"),
		Header: http.Header{"Retry-After": {"7"}}})
	check(e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download?x=1"), tokPremium)), "7")

	e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 400, Times: 1, ContentType: "application/json",
		Body:   []byte(`{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","code":4}}`),
		Header: http.Header{"X-Business-Use-Case-Usage": {`{"1029384756":[{"type":"whatsapp","estimated_time_to_regain_access":2}]}`}}})
	check(e.do(e.rawUpload(tokPremium, bytes.NewReader(fixtures.JPEG(100)),
		map[string]string{"Content-Type": "image/jpeg", "X-Phone-Number-Id": phoneA})), "120")

	e.emu.Inject(metaemu.Fault{Route: "media", Kind: metaemu.Answer, Status: 429, Times: 1, Body: []byte("<html>Too Many Requests</html>")})
	check(e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+e.media(fixtures.JPEG(100), "image/jpeg")+"/download"), tokPremium)), "60")
	e.emu.Inject(metaemu.Fault{Route: "media", Kind: metaemu.Answer, Status: 503, Times: 1, Body: []byte("down")})
	a = e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+e.media(fixtures.JPEG(100), "image/jpeg")+"/download"), tokPremium))
	assert.Equal(t, 502, a.Status, a.Raw)
	assert.Equal(t, "60", a.Header.Get("Retry-After"), "a 503 that is not Meta's JSON")

	e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 503, Times: 1, ContentType: "application/json",
		Body: []byte(`{"error":{"message":"Service temporarily unavailable","type":"OAuthException","code":2,"is_transient":true}}`)})
	a = e.do(e.rawUpload(tokPremium, bytes.NewReader(fixtures.JPEG(100)),
		map[string]string{"Content-Type": "image/jpeg", "X-Phone-Number-Id": phoneA}))
	assert.Equal(t, 502, a.Status, a.Raw)
	assert.Equal(t, "60", a.Header.Get("Retry-After"))
}

func TestDownloadNotFound(t *testing.T) {
	e := newEnv(t)
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/123456/download"), tokPremium))
	assert.Equal(t, 404, a.Status)
	assert.Equal(t, codeNotFound, a.Error)
	assert.Equal(t, "Media URL not found", a.Message)
	assert.Contains(t, string(a.Details), `"error_subcode":33`)

	e.emu.Inject(metaemu.Fault{Route: "media", Kind: metaemu.Answer, Status: 200, Times: 1, ContentType: "application/json",
		Body: []byte(`{"messaging_product":"whatsapp","mime_type":"image/jpeg","id":"123456"}`)})
	a = e.do(mustReq(t, http.MethodGet, e.url("/v2/media/123456/download"), tokPremium))
	assert.Equal(t, 404, a.Status)
	assert.Equal(t, "Media URL not found", a.Message)

	e.emu.Inject(metaemu.Fault{Route: "media", Kind: metaemu.Answer, Status: 401, ContentType: "application/json",
		Body: []byte(`{"error":{"message":"Error validating access token","type":"OAuthException","code":190,"fbtrace_id":"X"}}`)})
	a = e.do(mustReq(t, http.MethodGet, e.url("/v2/media/123456/download"), tokPremium))
	assert.Equal(t, 401, a.Status)
	assert.Equal(t, codeMetaAPIError, a.Error)
}

func TestDownloadStaleURL(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(50_000)
	id := e.media(data, "image/jpeg")

	e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Answer, Status: 404, Times: 1})
	resp := e.download(id, "", nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, data, readAll(t, resp))
	assert.Len(t, e.routeRequests("media"), 2, "a fresh URL was not fetched")
	assert.Len(t, e.routeRequests("cdn"), 2)

	e.emu.Reset()
	e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Answer, Status: 403, Times: 2})
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
	assert.Equal(t, 404, a.Status)
	assert.Equal(t, codeNotFound, a.Error)
	assert.Len(t, e.routeRequests("media"), 1, "the URL came from the media cache, then one fresh answer")
	assert.Len(t, e.routeRequests("cdn"), 2, "more than one retry")

	// Gone at the CDN even for a fresh URL: the cache forgot the media.
	e.emu.Reset()
	resp = e.download(id, "", nil)
	require.Equal(t, 200, resp.StatusCode)
	readAll(t, resp)
	assert.Len(t, e.routeRequests("media"), 1, "Graph is asked again")
}

func TestDownloadExpiredURL(t *testing.T) {
	// URLs that expire at once: every CDN request fails, as a stale URL.
	e := newEnvWith(t, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneA}}, URLTTL: -time.Minute})
	id := e.media(fixtures.JPEG(100), "image/jpeg")
	a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
	assert.Equal(t, 404, a.Status)
	assert.Len(t, e.routeRequests("cdn"), 2)
}

func TestDownloadHostAllowList(t *testing.T) {
	t.Run("url off the list", func(t *testing.T) {
		// The emulator hands out URLs on "localhost", not graph_url's
		// 127.0.0.1: the token must not go there.
		e := newEnv(t)
		e.emu.SetCDNBase("http://localhost:" + e.emuPort())
		id := e.media(fixtures.JPEG(100), "image/jpeg")
		a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
		assert.Equal(t, 502, a.Status)
		assert.Equal(t, codeUpstreamError, a.Error)
		assert.Empty(t, e.routeRequests("cdn"))
	})
	t.Run("redirect off the list", func(t *testing.T) {
		e := newEnv(t)
		id := e.media(fixtures.JPEG(100), "image/jpeg")
		e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Redirect, Times: 1,
			Location: "http://localhost:" + e.emuPort() + metaemu.CDNPath + "?mid=" + id})
		a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
		assert.Equal(t, 502, a.Status)
		assert.Equal(t, codeUpstreamError, a.Error)
		cdn := e.routeRequests("cdn")
		require.Len(t, cdn, 1, "the redirect was followed")
		assert.NotEqual(t, "localhost", strings.Split(cdn[0].Host, ":")[0])
	})
	t.Run("https required off the graph host", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { h.MediaHosts = []string{"localhost"} })
		e.emu.SetCDNBase("http://localhost:" + e.emuPort())
		id := e.media(fixtures.JPEG(100), "image/jpeg")
		a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
		assert.Equal(t, 502, a.Status)
		assert.Empty(t, e.routeRequests("cdn"))
	})
	t.Run("redirect within the list keeps the token", func(t *testing.T) {
		e := newEnv(t)
		data := fixtures.JPEG(1000)
		id := e.media(data, "image/jpeg")
		e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Redirect, Times: 1})
		resp := e.download(id, "", nil)
		require.Equal(t, 200, resp.StatusCode)
		assert.Equal(t, data, readAll(t, resp))
		cdn := e.routeRequests("cdn")
		require.Len(t, cdn, 2)
		assert.Equal(t, "Bearer "+metaToken, cdn[1].Header.Get("Authorization"))
	})
}

func TestDownloadHead(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(70_000)
	id := e.media(data, "image/jpeg")
	resp := e.downloadMethod(http.MethodHead, id, "disposition=attachment", nil)
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "70000", resp.Header.Get("Content-Length"))
	assert.Equal(t, "image/jpeg", resp.Header.Get("Content-Type"))
	assert.Equal(t, `attachment; filename="`+id+`.jpg"`, resp.Header.Get("Content-Disposition"))
	assert.NotEmpty(t, resp.Header.Get("ETag"))
	assert.NotEmpty(t, resp.Header.Get("Repr-Digest"))
	assert.Empty(t, e.routeRequests("cdn"), "HEAD downloaded the bytes")

	resp = e.downloadMethod(http.MethodHead, id, "", map[string]string{"Range": "bytes=10-19"})
	assert.Equal(t, 206, resp.StatusCode)
	assert.Equal(t, "10", resp.Header.Get("Content-Length"))
	assert.Equal(t, "bytes 10-19/70000", resp.Header.Get("Content-Range"))
	assert.Empty(t, e.routeRequests("cdn"))
}

func TestDownloadConditional(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(10_000)
	id := e.media(data, "image/jpeg")
	etag := `"` + fixtures.SHA256Hex(data) + `"`
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		resp := e.download(id, "", map[string]string{"If-None-Match": inm})
		assert.Equal(t, 304, resp.StatusCode, inm)
		assert.Equal(t, etag, resp.Header.Get("ETag"))
		assert.Empty(t, readAll(t, resp))
	}
	assert.Empty(t, e.routeRequests("cdn"), "304 touched the CDN")
	resp := e.download(id, "", map[string]string{"If-None-Match": `"other"`})
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, data, readAll(t, resp))
}

func TestDownloadRange(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(100_000)
	id := e.media(data, "image/jpeg")
	etag := `"` + fixtures.SHA256Hex(data) + `"`
	cases := []struct {
		rng, ifRange string
		status       int
		body         []byte
		cr           string
	}{
		{"bytes=0-99", "", 206, data[:100], "bytes 0-99/100000"},
		{"bytes=99990-", "", 206, data[99990:], "bytes 99990-99999/100000"},
		{"bytes=-10", "", 206, data[99990:], "bytes 99990-99999/100000"},
		{"bytes=99990-200000", "", 206, data[99990:], "bytes 99990-99999/100000"},
		{"bytes=500-600", etag, 206, data[500:601], "bytes 500-600/100000"},
		{"bytes=500-600", `"stale"`, 200, data, ""},
		{"bytes=500-600", "Wed, 21 Oct 2015 07:28:00 GMT", 200, data, ""},
		{"bytes=100000-", "", 416, nil, "bytes */100000"},
		{"bytes=0-1,5-6", "", 416, nil, "bytes */100000"},
		{"bytes=5-1", "", 416, nil, "bytes */100000"},
		// RFC 9110: a unit is case-insensitive, one the server does not
		// know is ignored, and positions past the end are clamped.
		{"BYTES=0-10", "", 206, data[:11], "bytes 0-10/100000"},
		{"bytes=0-99999999999999999999", "", 206, data, "bytes 0-99999/100000"},
		{"bytes=-99999999999999999999", "", 206, data, "bytes 0-99999/100000"},
		{"pages=1-2", "", 200, data, ""},
		{"items=0-1", "", 200, data, ""},
		{"bytes=-0", "", 416, nil, "bytes */100000"},
		{"bytes=99999999999999999999-", "", 416, nil, "bytes */100000"},
	}
	for _, c := range cases {
		t.Run(c.rng+" "+c.ifRange, func(t *testing.T) {
			hdr := map[string]string{"Range": c.rng}
			if c.ifRange != "" {
				hdr["If-Range"] = c.ifRange
			}
			resp := e.download(id, "", hdr)
			require.Equal(t, c.status, resp.StatusCode)
			assert.Equal(t, c.cr, resp.Header.Get("Content-Range"))
			body := readAll(t, resp)
			if c.status == 416 {
				assert.Contains(t, string(body), `"success":false`)
				return
			}
			assert.True(t, bytes.Equal(c.body, body), "body differs")
		})
	}
}

func TestDownloadIntegrity(t *testing.T) {
	data := fixtures.JPEG(500_000)
	cases := []struct {
		name   string
		fault  metaemu.Fault
		reason string
	}{
		{"connection dropped mid-body", metaemu.Fault{Route: "cdn", Kind: metaemu.CutBody, AfterBytes: 200_000, Times: 1}, "cdn_read"},
		{"connection dropped before the last byte", metaemu.Fault{Route: "cdn", Kind: metaemu.CutBody, AfterBytes: 499_999, Times: 1}, "cdn_read"},
		{"corrupt first byte", metaemu.Fault{Route: "cdn", Kind: metaemu.Corrupt, AfterBytes: 0, Times: 1}, "digest_mismatch"},
		{"corrupt last byte", metaemu.Fault{Route: "cdn", Kind: metaemu.Corrupt, AfterBytes: 499_999, Times: 1}, "digest_mismatch"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			id := e.media(data, "image/jpeg")
			before := testutil.ToFloat64(metrics.downloadAbort.WithLabelValues(c.reason))
			e.emu.Inject(c.fault)
			resp := e.download(id, "", nil)
			require.Equal(t, 200, resp.StatusCode)
			got, err := io.ReadAll(resp.Body)
			require.Error(t, err, "a broken transfer ended cleanly")
			assert.Less(t, len(got), len(data), "the client got the full length")
			assert.Equal(t, before+1, testutil.ToFloat64(metrics.downloadAbort.WithLabelValues(c.reason)))
		})
	}
}

func TestDownloadClientAbortCancelsCDN(t *testing.T) {
	e := newEnv(t)
	id := e.media(fixtures.JPEG(2<<20), "image/jpeg")
	e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Slow, Delay: 50 * time.Millisecond})
	req := mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, err = io.ReadFull(resp.Body, make([]byte, 1000))
	require.NoError(t, err)
	resp.Body.Close() // the client goes away
	require.Eventually(t, func() bool {
		cdn := e.routeRequests("cdn")
		return len(cdn) == 1 && cdn[0].Cancelled && e.emu.InFlight() == 0
	}, time.Second, 5*time.Millisecond, "the CDN request was not cancelled within a second")
}

func (e *env) emuPort() string {
	return strconv.Itoa(e.emuSrv.Listener.Addr().(*net.TCPAddr).Port)
}

func mustURL(t testing.TB, s string) *url.URL {
	u, err := url.Parse(s)
	require.NoError(t, err)
	return u
}

func TestDownloadRangeIgnoredByCDN(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(100_000)
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

func TestCopyVerified(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789"), 20_000)
	sum := sha256.Sum256(data)
	var w bytes.Buffer
	n, reason, err := copyVerified(&w, bytes.NewReader(data), int64(len(data)), sum[:], nil)
	require.NoError(t, err)
	assert.Empty(t, reason)
	assert.Equal(t, int64(len(data)), n)
	assert.Equal(t, data, w.Bytes())

	w.Reset()
	_, reason, _ = copyVerified(&w, bytes.NewReader(data), int64(len(data))+1, nil, nil)
	assert.Equal(t, "truncated", reason)
	assert.Less(t, w.Len(), len(data), "a short body was written in full")

	w.Reset()
	_, reason, _ = copyVerified(&w, bytes.NewReader(data), int64(len(data))-1, nil, nil)
	assert.Equal(t, "too_long", reason)
	assert.Less(t, w.Len(), len(data))

	w.Reset()
	bad := sha256.Sum256([]byte("x"))
	_, reason, _ = copyVerified(&w, bytes.NewReader(data), int64(len(data)), bad[:], nil)
	assert.Equal(t, "digest_mismatch", reason)
	assert.Less(t, w.Len(), len(data))
}

// TestCopyVerifiedPipelined drives the hasher goroutine through many
// chunks of uneven sizes: under -race, a buffer read into while the hasher
// still reads it shows as a race, and as a wrong digest without it.
func TestCopyVerifiedPipelined(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	data := make([]byte, 3<<20+17)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	for name, src := range map[string]func() io.Reader{
		"whole":   func() io.Reader { return bytes.NewReader(data) },
		"halves":  func() io.Reader { return iotest.HalfReader(bytes.NewReader(data)) },
		"bytes":   func() io.Reader { return io.LimitReader(iotest.OneByteReader(bytes.NewReader(data)), 200_000) },
		"eofdata": func() io.Reader { return iotest.DataErrReader(bytes.NewReader(data)) },
	} {
		t.Run(name, func(t *testing.T) {
			want := data
			if name == "bytes" {
				want = data[:200_000]
			}
			wantSum := sha256.Sum256(want)
			var w bytes.Buffer
			n, reason, err := copyVerified(&w, src(), int64(len(want)), wantSum[:], nil)
			require.NoError(t, err)
			require.Empty(t, reason)
			assert.Equal(t, int64(len(want)), n)
			assert.True(t, bytes.Equal(want, w.Bytes()), "the bytes written differ from the source")
		})
	}

	t.Run("corrupt middle", func(t *testing.T) {
		bad := bytes.Clone(data)
		bad[len(bad)/2] ^= 1
		var w bytes.Buffer
		n, reason, _ := copyVerified(&w, bytes.NewReader(bad), int64(len(bad)), sum[:], nil)
		assert.Equal(t, "digest_mismatch", reason)
		assert.Less(t, n, int64(len(bad)), "a corrupt body was written in full")
	})

	t.Run("client fails", func(t *testing.T) {
		w := &failAfter{n: 1 << 20}
		n, reason, err := copyVerified(w, bytes.NewReader(data), int64(len(data)), sum[:], nil)
		assert.Equal(t, "client_write", reason)
		assert.Error(t, err)
		assert.LessOrEqual(t, n, int64(1<<20))
	})
}

// failAfter is a writer that fails once n bytes were written.
type failAfter struct{ n int }

func (f *failAfter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		m := f.n
		f.n = 0
		return m, errors.New("client went away")
	}
	f.n -= len(p)
	return len(p), nil
}

// TestDownloadServedSafely: what Meta calls the media's type is served
// only when it is a sane media type, and only images, audio, video and PDF
// may show inline; anything else is an attachment, sandboxed.
func TestDownloadServedSafely(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		metaType, ctype, disposition string
		sandboxed                    bool
	}{
		{"image/jpeg", "image/jpeg", "inline", false},
		{"video/mp4", "video/mp4", "inline", false},
		{"audio/ogg", "audio/ogg", "inline", false},
		{"application/pdf", "application/pdf", "inline", false},
		{"text/html", "text/html", "attachment", true},
		{"image/svg+xml", "image/svg+xml", "attachment", true},
		{"text/plain", "text/plain", "attachment", true},
		{"application/xhtml+xml", "application/xhtml+xml", "attachment", true},
		{strings.Repeat("a", 200_000), "application/octet-stream", "attachment", true},
		{"not a type", "application/octet-stream", "attachment", true},
	} {
		id, err := e.emu.AddMedia(phoneA, c.metaType, []byte("<html><script>alert(1)</script></html>"))
		require.NoError(t, err)
		resp := e.download(id, "disposition=inline", nil)
		resp.Body.Close()
		name := c.metaType[:min(len(c.metaType), 30)]
		require.Equal(t, 200, resp.StatusCode, name)
		assert.Equal(t, c.ctype, resp.Header.Get("Content-Type"), name)
		assert.True(t, strings.HasPrefix(resp.Header.Get("Content-Disposition"), c.disposition+";"), "%s: %s", name, resp.Header.Get("Content-Disposition"))
		if c.sandboxed {
			assert.Equal(t, "sandbox", resp.Header.Get("Content-Security-Policy"), name)
		} else {
			assert.Empty(t, resp.Header.Get("Content-Security-Policy"), name)
		}
		assert.Equal(t, "nosniff", resp.Header.Get("X-Content-Type-Options"))
	}
}
