package whatsappmedia

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// ceilingTypes are the types whose ceiling is below the default max_size,
// so that the gateway enforces it.
var ceilingTypes = []string{
	"image/jpeg", "image/png", "image/webp", "video/mp4", "video/3gpp", "video/3gp",
	"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg", "audio/opus",
}

// signatureOf is the least of a file of type typ: the mandatory leading
// bytes of its format, where it has them (media.Contradicts).
func signatureOf(typ string) []byte {
	switch typ {
	case "image/jpeg":
		return []byte{0xFF, 0xD8, 0xFF}
	case "image/png":
		return []byte("\x89PNG\r\n\x1a\n")
	case "image/webp":
		return []byte("RIFF\x00\x00\x00\x00WEBP")
	case "video/mp4":
		return []byte("\x00\x00\x00\x18ftypisom")
	case "application/pdf":
		return []byte("%PDF-1.7\n")
	}
	return nil
}

// rawSized is a mode B upload of n bytes: its type's signature, then
// zeros (nothing for the declared type to be contradicted by), with a
// Content-Length, whose reads are tracked.
func (e *env) rawSized(typ string, n int64) (*http.Request, *readTracker) {
	body := &readTracker{r: io.LimitReader(io.MultiReader(bytes.NewReader(signatureOf(typ)), zeros{}), n)}
	req := e.rawUpload(tokPremium, body, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": typ})
	req.ContentLength = n
	return req, body
}

func TestTypeCeilings(t *testing.T) {
	e := newEnv(t, func(h *Handler) { h.MaxSize = 200 << 20 })
	t.Run("known length over the ceiling: 413 before a byte is read", func(t *testing.T) {
		for _, typ := range ceilingTypes {
			req, body := e.rawSized(typ, media.Ceiling(typ)+1)
			rec := e.serveDirect(req)
			assert.Equal(t, 413, rec.Code, typ)
			assert.Contains(t, rec.Body.String(), codePayloadTooLarge, typ)
			assert.Contains(t, rec.Body.String(), media.MetaName(typ), "the message names the type (by the name Meta takes)")
			assert.Contains(t, rec.Body.String(), humanize.IBytes(uint64(media.Ceiling(typ))), "and its ceiling")
			assert.False(t, body.read.Load(), typ)
		}
		assert.Empty(t, e.emu.Requests())
	})
	t.Run("exactly the ceiling is accepted", func(t *testing.T) {
		for _, typ := range []string{"image/webp", "image/jpeg", "video/mp4"} {
			e.emu.Reset()
			req, _ := e.rawSized(typ, media.Ceiling(typ))
			a := e.do(req)
			assert.Equal(t, 200, a.Status, "%s: %s", typ, a.Raw)
			assert.Equal(t, media.Ceiling(typ), a.Data.Size)
		}
	})
	t.Run("unknown length: cut at the ceiling", func(t *testing.T) {
		for _, typ := range []string{"image/webp", "image/jpeg"} {
			e.emu.Reset()
			req, _ := e.rawSized(typ, media.Ceiling(typ)+1)
			req.ContentLength = -1
			a := e.do(req)
			assert.Equal(t, 413, a.Status, a.Raw)
			assert.Contains(t, a.Message, typ)
			require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 5*time.Second, 10*time.Millisecond)
			up := e.emu.Uploads()[0]
			assert.Empty(t, up.MediaID, "Meta must not store it")
			assert.LessOrEqual(t, up.BodyBytes, media.Ceiling(typ)+64<<10, "the request to Meta was cut near the ceiling")
		}
	})
	t.Run("multipart streamed and spooled", func(t *testing.T) {
		big := fixtures.JPEG(5<<20 + 1)
		for name, parts := range map[string][]formPart{
			"streamed": {field("phoneNumberId", phoneA), filePart("a.jpg", "image/jpeg", big)},
			"spooled":  {filePart("a.jpg", "image/jpeg", big), field("phoneNumberId", phoneA)},
		} {
			e.emu.Reset()
			a := e.do(e.formUpload(tokPremium, parts...))
			assert.Equal(t, 413, a.Status, "%s: %s", name, a.Raw)
			assert.Contains(t, a.Message, "image/jpeg", name)
			for _, up := range e.emu.Uploads() {
				assert.Empty(t, up.MediaID, name)
			}
		}
		assert.Empty(t, dirEntries(t, e.h.SpoolDir))
	})
	t.Run("max_size below the ceiling answers as max_size", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { h.MaxSize = 1 << 20 })
		req, _ := e.rawSized("video/mp4", 2<<20)
		rec := e.serveDirect(req)
		assert.Equal(t, 413, rec.Code)
		assert.Contains(t, rec.Body.String(), errTooLarge.Message)
	})
	t.Run("disable_type_ceilings leaves the size to Meta", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { h.DisableTypeCeilings = true })
		req, _ := e.rawSized("image/webp", 500<<10+1)
		a := e.do(req)
		assert.Equal(t, 400, a.Status)
		assert.Equal(t, codeMetaAPIError, a.Error, "Meta's own File Too Large")
	})
}

func TestEmptyFiles(t *testing.T) {
	e := newEnv(t)
	chunked := func(hdr map[string]string) *http.Request {
		req := e.rawUpload(tokPremium, io.MultiReader(), hdr)
		req.ContentLength = -1
		return req
	}
	cases := map[string]*http.Request{
		"raw, Content-Length 0":       e.rawUpload(tokPremium, http.NoBody, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}),
		"raw, chunked, typed":         chunked(map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}),
		"raw, chunked, untyped":       chunked(map[string]string{"X-Phone-Number-Id": phoneA}),
		"multipart streamed":          e.formUpload(tokPremium, field("phoneNumberId", phoneA), filePart("a.jpg", "image/jpeg", nil)),
		"multipart streamed, no type": e.formUpload(tokPremium, field("phoneNumberId", phoneA), filePart("a", "", nil)),
		"multipart spooled":           e.formUpload(tokPremium, filePart("a.jpg", "image/jpeg", nil), field("phoneNumberId", phoneA)),
		"multipart spooled, no type":  e.formUpload(tokPremium, filePart("a", "", nil), field("phoneNumberId", phoneA)),
	}
	for name, req := range cases {
		a := e.do(req)
		assert.Equal(t, 400, a.Status, "%s: %s", name, a.Raw)
		assert.Equal(t, codeValidation, a.Error, name)
		assert.Equal(t, errEmptyFile.Message, a.Message, name)
	}
	assert.Empty(t, e.emu.Requests(), "nothing reaches Meta")
	assert.Empty(t, dirEntries(t, e.h.SpoolDir))
}

// TestSpoolBudget: spooling uploads reserve their bytes as they arrive,
// within spool_budget and each account's spool_share; a trickling one is
// cut off below spool_min_rate.
func TestSpoolBudget(t *testing.T) {
	e := newEnv(t, func(h *Handler) { h.MaxSize = 4 << 20; h.SpoolBudget = 8 << 20; h.SpoolShare = 4 << 20 })
	fileFirst := func(n int) (*bytes.Buffer, string) {
		return buildForm(t, filePart("a.jpg", "image/jpeg", fixtures.JPEG(n)), field("phoneNumberId", phoneA))
	}
	// A trickling upload of unknown length holds what it sent (a first
	// chunk), not max_size.
	pr, pw := io.Pipe()
	form, ct := fileFirst(100_000)
	first := make(chan answer, 1)
	go func() { first <- e.do(e.rawUpload(tokPremium, pr, map[string]string{"Content-Type": ct})) }()
	_, err := pw.Write(form.Bytes()[:50_000])
	require.NoError(t, err)
	require.Eventually(t, func() bool { return spoolUsed(e) == spoolChunk }, 5*time.Second, 5*time.Millisecond)

	// The same account's second upload fits its share only in part: it is
	// refused when it would pass it, having reserved as it went.
	before := testutil.ToFloat64(metrics.spoolFull)
	big, bct := fileFirst(3_500_000)
	a := e.do(e.rawUpload(tokPremium, bytes.NewReader(big.Bytes()), map[string]string{"Content-Type": bct}))
	assert.Equal(t, 503, a.Status, a.Raw)
	assert.Equal(t, codeSpoolFull, a.Error)
	assert.Equal(t, "10", a.Header.Get("Retry-After"))
	assert.Equal(t, before+1, testutil.ToFloat64(metrics.spoolFull))
	// Another account has a share of its own.
	a = e.do(e.rawUpload(tokEnterprise, bytes.NewReader(big.Bytes()), map[string]string{"Content-Type": bct}))
	assert.Equal(t, 200, a.Status, a.Raw)

	_, err = pw.Write(form.Bytes()[50_000:])
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	assert.Equal(t, 200, (<-first).Status)
	assert.Zero(t, spoolUsed(e), "every reservation was released")
	// Streamed uploads never touch the budget.
	assert.Equal(t, 200, e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), filePart("c.jpg", "image/jpeg", fixtures.JPEG(500_000)))).Status)
}

func TestSpoolBudgetFull(t *testing.T) {
	e := newEnv(t, func(h *Handler) { h.MaxSize = 1 << 20; h.SpoolBudget = 1 << 20 })
	pr, pw := io.Pipe()
	form, ct := buildForm(t, filePart("a.jpg", "image/jpeg", fixtures.JPEG(100_000)), field("phoneNumberId", phoneA))
	first := make(chan answer, 1)
	go func() { first <- e.do(e.rawUpload(tokPremium, pr, map[string]string{"Content-Type": ct})) }()
	_, err := pw.Write(form.Bytes()[:50_000])
	require.NoError(t, err)
	require.Eventually(t, func() bool { return spoolUsed(e) == 1<<20 }, 5*time.Second, 5*time.Millisecond)
	// Nothing left of the budget: refused before its file is read.
	body := &readTracker{r: bytes.NewReader(form.Bytes())}
	req := e.rawUpload(tokEnterprise, body, map[string]string{"Content-Type": ct})
	req.ContentLength = -1
	rec := e.serveDirect(req)
	assert.Equal(t, 503, rec.Code, rec.Body.String())
	_, err = pw.Write(form.Bytes()[50_000:])
	require.NoError(t, err)
	require.NoError(t, pw.Close())
	assert.Equal(t, 200, (<-first).Status)
}

func TestSpoolMinRate(t *testing.T) {
	e := newEnv(t, shortStall, func(h *Handler) { h.SpoolMinRate = 1 << 20 })
	pr, pw := io.Pipe()
	form, ct := buildForm(t, filePart("a.jpg", "image/jpeg", fixtures.JPEG(100_000)), field("phoneNumberId", phoneA))
	done := make(chan answer, 1)
	go func() { done <- e.do(e.rawUpload(tokPremium, pr, map[string]string{"Content-Type": ct})) }()
	// The form's head and the file's first 4 KiB at once, then a byte
	// every 100 ms: never stalled (300 ms), far below 1 MiB/s.
	go func() {
		b := form.Bytes()
		if _, err := pw.Write(b[:4500]); err != nil {
			return
		}
		for i := 4500; i < len(b); i++ {
			if _, err := pw.Write(b[i : i+1]); err != nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()
	var a answer
	select {
	case a = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("a trickling spooled upload was not cut off")
	}
	pw.Close()
	assert.Equal(t, 408, a.Status, a.Raw)
	assert.Equal(t, codeRequestTimeout, a.Error)
	assert.Contains(t, a.Message, "too slowly")
	assert.Empty(t, e.emu.Requests(), "Meta was asked")
	assert.Zero(t, spoolUsed(e))
}

func spoolUsed(e *env) int64 { return e.h.spoolUsage.inUse() }

func TestNearMissRoutes(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ method, path, want string }{
		{"POST", "/v2/media/upload/", "POST /v2/media/upload"},
		{"POST", "/V2/MEDIA/UPLOAD", "POST /v2/media/upload"},
		{"POST", "//v2/media/upload", "POST /v2/media/upload"},
		{"POST", "/v2//media/upload", "POST /v2/media/upload"},
		{"POST", "/v2/media/upload;x", "POST /v2/media/upload"},
		{"POST", "/v2/media/%75pload", "POST /v2/media/upload"},
		{"GET", "/v2/media/123/download/", "GET /v2/media/{mediaId}/download"},
		{"GET", "/v2/Media/123/DOWNLOAD", "GET /v2/media/{mediaId}/download"},
		{"GET", "/v2/media/123/download;jsessionid=1", "GET /v2/media/{mediaId}/download"},
		{"POST", "/v2/media/./upload", "POST /v2/media/upload"},
		{"POST", "/v2/media/x/../upload", "POST /v2/media/upload"},
		{"POST", "/v2/media/%2e/upload", "POST /v2/media/upload"},
		{"GET", "/v2/media/123/download/.", "GET /v2/media/{mediaId}/download"},
	} {
		req, err := http.NewRequest(c.method, e.url(c.path), strings.NewReader("file bytes"))
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+tokPremium)
		a := e.do(req)
		assert.Equal(t, 404, a.Status, c.path)
		assert.Equal(t, codeNotFound, a.Error, c.path)
		assert.Contains(t, a.Message, c.want, c.path)
	}
	assert.Zero(t, e.nextHit.Load(), "no near miss reaches the app")
	for _, p := range []string{"/v2/media/uploads", "/v2/media/upload-form", "/v2/media/123/downloads",
		"/v2/media/a/b/download/", "/v2/medias/upload", "/V2/MESSAGES", "/uploads/x.jpg"} {
		resp, err := http.Get(e.url(p))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, "app", resp.Header.Get("X-Next"), p)
	}
	assert.Empty(t, e.emu.Requests())
}

func BenchmarkRouteOtherPaths(b *testing.B) {
	h := &Handler{PathPrefix: "/v2/media", nearPrefix: "/v2/media/"}
	req, _ := http.NewRequest(http.MethodGet, "http://x/v2/messages/send?to=1", nil)
	b.ReportAllocs()
	for b.Loop() {
		if k, _ := h.route(req); k != routeNone {
			b.Fatal(k)
		}
	}
}

// zeros reads as zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
