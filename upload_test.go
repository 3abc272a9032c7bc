package whatsappmedia

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/media"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// lastUpload returns the one upload Meta received.
func (e *env) lastUpload() metaemu.Upload {
	e.t.Helper()
	ups := e.emu.Uploads()
	require.Len(e.t, ups, 1)
	return ups[0]
}

// checkStored asserts that Meta stored data under the answer's media id.
func (e *env) checkStored(a answer, data []byte, mimeType string) metaemu.Upload {
	e.t.Helper()
	require.Equal(e.t, 200, a.Status, a.Raw)
	require.True(e.t, a.Success)
	up := e.lastUpload()
	assert.Equal(e.t, up.MediaID, a.Data.MediaID)
	assert.Equal(e.t, mimeType, a.Data.MimeType)
	assert.Equal(e.t, int64(len(data)), a.Data.Size)
	m, ok := e.emu.Media(a.Data.MediaID)
	require.True(e.t, ok)
	got, err := os.ReadFile(m.Path)
	require.NoError(e.t, err)
	assert.True(e.t, bytes.Equal(data, got), "stored bytes differ")
	assert.Equal(e.t, mimeType, m.MimeType)
	assert.Equal(e.t, "whatsapp", up.Fields["messaging_product"])
	assert.Equal(e.t, mimeType, up.Fields["type"])
	assert.Equal(e.t, mimeType, up.FileType)
	assert.True(e.t, up.ReceivedBodyOK)
	// What reaches Meta: its token, our User-Agent, none of the caller's
	// credentials or upload headers.
	assert.Equal(e.t, "Bearer "+metaToken, up.Header.Get("Authorization"))
	assert.Equal(e.t, userAgent, up.Header.Get("User-Agent"))
	for _, h := range []string{"X-Api-Token", "Cookie", "X-Phone-Number-Id", "Phonenumberid", "X-Filename", "X-Upload-Type", "Expect"} {
		assert.Empty(e.t, up.Header.Values(h), "header %s reached Meta", h)
	}
	if up.ContentLength >= 0 {
		assert.Equal(e.t, up.ContentLength, up.BodyBytes, "Content-Length sent to Meta is not the bytes sent")
	}
	return up
}

func TestUploadRaw(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(50_000)
	req := e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{
		"X-Phone-Number-Id": phoneA, "X-Filename": "photo.jpg", "Content-Type": "image/jpeg",
		"X-Api-Token": "leak-me", "Cookie": "session=secret",
	})
	up := e.checkStored(e.do(req), data, "image/jpeg")
	assert.Equal(t, "photo.jpg", up.FileName)
	assert.Equal(t, phoneA, up.Phone)
	// A known length is sent as an exact Content-Length, not chunked.
	require.Positive(t, up.ContentLength)
	assert.Equal(t, up.BodyBytes, up.ContentLength)
}

func TestUploadRawContentLengthComputed(t *testing.T) {
	// The Content-Length sent to Meta follows from the framing for every
	// file size and name; the emulator counts the bytes actually received.
	for _, n := range []int{3, 511, 512, 513, 70_000, 1 << 20} { // 3: the JPEG signature, the least a JPEG is
		for _, name := range []string{"", "a.jpg", `we"ird;name.jpg`, "ünïcødé.jpg"} {
			t.Run(strconv.Itoa(n)+"/"+name, func(t *testing.T) {
				e := newEnv(t)
				data := fixtures.JPEG(n)
				hdr := map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}
				if name != "" {
					hdr["X-Filename"] = name
				}
				up := e.checkStored(e.do(e.rawUpload(tokPremium, bytes.NewReader(data), hdr)), data, "image/jpeg")
				assert.Equal(t, up.BodyBytes, up.ContentLength)
				prefix, suffix, _ := media.Frame("image/jpeg", media.SanitizeFilename(name))
				assert.Equal(t, int64(len(prefix)+n+len(suffix)), up.ContentLength)
			})
		}
	}
}

func TestUploadRawChunked(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(200_000)
	// An io.Reader of unknown length makes the client send chunked.
	req := e.rawUpload(tokPremium, io.MultiReader(bytes.NewReader(data)), map[string]string{
		"phoneNumberId": phoneA, "Content-Type": "image/jpeg",
	})
	up := e.checkStored(e.do(req), data, "image/jpeg")
	assert.Equal(t, int64(-1), up.ContentLength, "unknown length must go chunked")
	assert.Equal(t, "file", up.FileName, "default filename")
}

func TestUploadRawMIME(t *testing.T) {
	png := append([]byte("\x89PNG\r\n\x1a\n"), make([]byte, 100)...)
	cases := []struct {
		name   string
		hdr    map[string]string
		data   []byte
		status int
		mime   string
	}{
		{"override wins", map[string]string{"X-Upload-Type": "image/png", "Content-Type": "image/jpeg"}, png, 200, "image/png"},
		{"content type with params", map[string]string{"Content-Type": "text/plain; charset=utf-8"}, []byte("hello"), 200, "text/plain"},
		{"generic type, extension", map[string]string{"Content-Type": "application/octet-stream", "X-Filename": "doc.pdf"}, []byte("%PDF-1.4 x"), 200, "application/pdf"},
		{"curl default type, sniffed", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, png, 200, "image/png"},
		{"no type, sniffed", nil, fixtures.JPEG(2000), 200, "image/jpeg"},
		{"unsupported type", map[string]string{"Content-Type": "image/gif"}, []byte("GIF89a"), 415, ""},
		{"unsupported extension", map[string]string{"X-Filename": "a.gif"}, []byte("GIF89a"), 415, ""},
		{"undeterminable", map[string]string{"Content-Type": "application/octet-stream"}, []byte{0, 1, 2, 3}, 415, ""},
		{"bad override", map[string]string{"X-Upload-Type": "not a type"}, png, 400, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			hdr := map[string]string{"X-Phone-Number-Id": phoneA}
			for k, v := range c.hdr {
				hdr[k] = v
			}
			req := e.rawUpload(tokPremium, bytes.NewReader(c.data), hdr)
			if _, ok := c.hdr["Content-Type"]; !ok {
				req.Header.Del("Content-Type")
			}
			a := e.do(req)
			require.Equal(t, c.status, a.Status, a.Raw)
			if c.status == 200 {
				e.checkStored(a, c.data, c.mime)
				return
			}
			if c.status == 415 {
				assert.Equal(t, codeUnsupportedType, a.Error)
			}
			assert.Empty(t, e.emu.Requests(), "Meta was contacted")
		})
	}
}

func TestUploadMultipartFieldOrders(t *testing.T) {
	data := fixtures.JPEG(300_000)
	blob := make([]byte, 300_000) // bytes of no known type: nothing to sniff, nothing to contradict
	cases := []struct {
		name     string
		parts    []formPart
		header   string // X-Phone-Number-Id
		spooled  bool
		mimeType string
		file     []byte // the file's bytes when not data
	}{
		{"phone then file (curl order)", []formPart{field("phoneNumberId", phoneA), filePart("photo.jpg", "image/jpeg", data)}, "", false, "image/jpeg", nil},
		{"file then phone", []formPart{filePart("photo.jpg", "image/jpeg", data), field("phoneNumberId", phoneA)}, "", true, "image/jpeg", nil},
		{"phone in header", []formPart{filePart("photo.jpg", "image/jpeg", data)}, phoneA, false, "image/jpeg", nil},
		// audio/aac: a type whose format has no mandatory signature, so
		// that bytes of no known type are not evidence against it.
		{"type field for generic part", []formPart{field("phoneNumberId", phoneA), field("type", "audio/aac"), filePart("blob", "application/octet-stream", blob)}, "", false, "audio/aac", blob},
		{"type after spooled file is used", []formPart{filePart("blob", "application/octet-stream", blob), field("phoneNumberId", phoneA), field("type", "audio/aac")}, "", true, "audio/aac", blob},
		{"extra fields ignored", []formPart{field("caption", "hi"), field("phoneNumberId", phoneA), filePart("photo.jpg", "", data), field("trailer", "x")}, "", false, "image/jpeg", nil},
		{"sniffed", []formPart{field("phoneNumberId", phoneA), filePart("noext", "", data)}, "", false, "image/jpeg", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			req := e.formUpload(tokPremium, c.parts...)
			if c.header != "" {
				req.Header.Set("X-Phone-Number-Id", c.header)
			}
			want := data
			if c.file != nil {
				want = c.file
			}
			up := e.checkStored(e.do(req), want, c.mimeType)
			if c.spooled {
				// A spooled file's length is known: exact Content-Length.
				assert.Equal(t, up.BodyBytes, up.ContentLength)
			} else {
				assert.Equal(t, int64(-1), up.ContentLength, "a streamed part goes chunked")
			}
			assert.Empty(t, dirEntries(t, e.h.SpoolDir), "spool files left behind")
		})
	}
}

func TestUploadMultipartValidation(t *testing.T) {
	data := fixtures.JPEG(1000)
	cases := []struct {
		name   string
		parts  []formPart
		status int
		code   string
	}{
		{"no file", []formPart{field("phoneNumberId", phoneA)}, 400, codeValidation},
		{"no phone", []formPart{filePart("a.jpg", "image/jpeg", data)}, 400, codeValidation},
		{"nothing", nil, 400, codeValidation},
		{"phone not digits", []formPart{field("phoneNumberId", "12ab"), filePart("a.jpg", "image/jpeg", data)}, 400, codeValidation},
		{"two files streamed", []formPart{field("phoneNumberId", phoneA), filePart("a.jpg", "image/jpeg", data), filePart("b.jpg", "image/jpeg", data)}, 400, codeValidation},
		{"two files spooled", []formPart{filePart("a.jpg", "image/jpeg", data), filePart("b.jpg", "image/jpeg", data), field("phoneNumberId", phoneA)}, 400, codeValidation},
		{"conflicting phones", []formPart{field("phoneNumberId", phoneA), field("phoneNumberId", phoneB), filePart("a.jpg", "image/jpeg", data)}, 400, codeValidation},
		{"oversized field", []formPart{field("phoneNumberId", phoneA), field("type", strings.Repeat("x", 2000)), filePart("a.jpg", "image/jpeg", data)}, 400, codeValidation},
		{"unsupported part type", []formPart{field("phoneNumberId", phoneA), filePart("a.gif", "image/gif", data)}, 415, codeUnsupportedType},
		{"file in a part not named file", []formPart{field("phoneNumberId", phoneA), {name: "media", filename: "a.jpg", contentType: "image/jpeg", data: data}}, 400, codeValidation},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.do(e.formUpload(tokPremium, c.parts...))
			assert.Equal(t, c.status, a.Status, a.Raw)
			assert.Equal(t, c.code, a.Error)
			for _, m := range e.emu.Uploads() {
				assert.Empty(t, m.MediaID, "Meta stored a file from a refused request")
			}
			assert.Empty(t, dirEntries(t, e.h.SpoolDir))
		})
	}
	t.Run("a misnamed file part is named in the answer", func(t *testing.T) {
		e := newEnv(t)
		big := fixtures.JPEG(100_000) // more than a field may hold
		a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA),
			formPart{name: "upload", filename: "a.jpg", contentType: "image/jpeg", data: big}))
		assert.Equal(t, 400, a.Status, a.Raw)
		assert.Contains(t, a.Message, `a part named "file"; this one is named "upload"`)
	})
	t.Run("too many parts", func(t *testing.T) {
		e := newEnv(t)
		parts := []formPart{field("phoneNumberId", phoneA)}
		for i := 0; i < maxParts; i++ {
			parts = append(parts, field("f"+strconv.Itoa(i), "v"))
		}
		a := e.do(e.formUpload(tokPremium, append(parts, filePart("a.jpg", "image/jpeg", data))...))
		assert.Equal(t, 400, a.Status)
	})
	t.Run("no boundary", func(t *testing.T) {
		e := newEnv(t)
		a := e.do(e.rawUpload(tokPremium, strings.NewReader("x"), map[string]string{"Content-Type": "multipart/form-data"}))
		assert.Equal(t, 400, a.Status)
		assert.Equal(t, codeValidation, a.Error)
	})
	t.Run("missing closing boundary cancels the upload", func(t *testing.T) {
		e := newEnv(t)
		body, ct := buildForm(t, field("phoneNumberId", phoneA), filePart("a.jpg", "image/jpeg", fixtures.JPEG(100_000)))
		cut := body.Bytes()[:body.Len()-40]
		a := e.do(e.rawUpload(tokPremium, bytes.NewReader(cut), map[string]string{"Content-Type": ct}))
		assert.Equal(t, 400, a.Status, a.Raw)
		assert.Equal(t, codeValidation, a.Error)
		require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 5*time.Second, 10*time.Millisecond)
		assert.Empty(t, e.emu.Uploads()[0].MediaID, "Meta stored a truncated file")
		assert.False(t, e.emu.Uploads()[0].ReceivedBodyOK)
	})
	t.Run("raw body without phone", func(t *testing.T) {
		e := newEnv(t)
		a := e.do(e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{"Content-Type": "image/jpeg"}))
		assert.Equal(t, 400, a.Status)
		assert.Equal(t, codeValidation, a.Error)
		assert.Empty(t, e.emu.Requests())
	})
}

func TestUploadTooLarge(t *testing.T) {
	const max = 64 << 10
	small := func(h *Handler) { h.MaxSize = max }
	t.Run("content-length refused before reading", func(t *testing.T) {
		e := newEnv(t, small)
		body := &readTracker{r: bytes.NewReader(fixtures.JPEG(max + 1))}
		req := e.rawUpload(tokPremium, body, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"})
		req.ContentLength = max + 1
		rec := e.serveDirect(req)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		assert.Contains(t, rec.Body.String(), codePayloadTooLarge)
		assert.False(t, body.read.Load())
		assert.Empty(t, e.emu.Requests())
	})
	t.Run("exactly max is accepted", func(t *testing.T) {
		e := newEnv(t, small)
		data := fixtures.JPEG(max)
		e.checkStored(e.do(e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"})), data, "image/jpeg")
	})
	t.Run("chunked crossing the limit", func(t *testing.T) {
		e := newEnv(t, small)
		req := e.rawUpload(tokPremium, io.MultiReader(bytes.NewReader(fixtures.JPEG(max+1))), map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"})
		a := e.do(req)
		assert.Equal(t, 413, a.Status, a.Raw)
		assert.Equal(t, codePayloadTooLarge, a.Error)
		require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 5*time.Second, 10*time.Millisecond)
		assert.Empty(t, e.emu.Uploads()[0].MediaID)
	})
	t.Run("multipart streamed crossing the limit", func(t *testing.T) {
		e := newEnv(t, small)
		a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), filePart("a.jpg", "image/jpeg", fixtures.JPEG(max+1))))
		assert.Equal(t, 413, a.Status, a.Raw)
		require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 5*time.Second, 10*time.Millisecond)
		assert.Empty(t, e.emu.Uploads()[0].MediaID)
	})
	t.Run("multipart spooled crossing the limit", func(t *testing.T) {
		e := newEnv(t, small)
		a := e.do(e.formUpload(tokPremium, filePart("a.jpg", "image/jpeg", fixtures.JPEG(max+1)), field("phoneNumberId", phoneA)))
		assert.Equal(t, 413, a.Status, a.Raw)
		assert.Empty(t, e.emu.Requests())
		assert.Empty(t, dirEntries(t, e.h.SpoolDir))
	})
	t.Run("multipart content-length proves too large", func(t *testing.T) {
		e := newEnv(t, small)
		body := &readTracker{r: strings.NewReader("")}
		req := e.rawUpload(tokPremium, body, map[string]string{"Content-Type": "multipart/form-data; boundary=x"})
		req.ContentLength = max + multipartOverhead + 1
		rec := e.serveDirect(req)
		assert.Equal(t, 413, rec.Code)
		assert.False(t, body.read.Load())
	})
}

func TestUploadMetaErrors(t *testing.T) {
	data := fixtures.JPEG(10_000)
	send := func(e *env) answer {
		return e.do(e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}))
	}
	t.Run("meta 4xx passes through with details", func(t *testing.T) {
		e := newEnvWith(t, metaemu.Config{Tokens: map[string][]string{"other-token": {phoneA}}})
		a := send(e)
		assert.Equal(t, 401, a.Status)
		assert.Equal(t, codeMetaAPIError, a.Error)
		assert.Contains(t, a.Message, "Invalid OAuth access token")
		var d struct {
			Error struct {
				Code      int    `json:"code"`
				FBTraceID string `json:"fbtrace_id"`
			} `json:"error"`
		}
		require.NoError(t, json.Unmarshal(a.Details, &d))
		assert.Equal(t, 190, d.Error.Code)
		assert.NotEmpty(t, d.Error.FBTraceID)
	})
	t.Run("meta refuses the phone number", func(t *testing.T) {
		e := newEnvWith(t, metaemu.Config{Tokens: map[string][]string{metaToken: {phoneB}}})
		a := send(e)
		assert.Equal(t, 400, a.Status)
		assert.Equal(t, codeMetaAPIError, a.Error)
		assert.Contains(t, string(a.Details), `"error_subcode":33`)
	})
	t.Run("meta ceiling, with the gateway's own ceilings off", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { h.DisableTypeCeilings = true })
		big := fixtures.JPEG(5<<20 + 1)
		a := e.do(e.rawUpload(tokPremium, bytes.NewReader(big), map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}))
		assert.Equal(t, 400, a.Status)
		assert.Equal(t, codeMetaAPIError, a.Error)
		assert.Contains(t, a.Message, "File Too Large")
	})
	t.Run("meta 5xx is 502", func(t *testing.T) {
		e := newEnv(t)
		e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 503, ContentType: "application/json",
			Body: []byte(`{"error":{"message":"Service temporarily unavailable","type":"OAuthException","code":2,"fbtrace_id":"AbC"}}`)})
		a := send(e)
		assert.Equal(t, 502, a.Status)
		assert.Equal(t, codeMetaAPIError, a.Error)
		assert.Equal(t, "Service temporarily unavailable", a.Message)
		assert.JSONEq(t, `{"error":{"message":"Service temporarily unavailable","type":"OAuthException","code":2,"fbtrace_id":"AbC"}}`, string(a.Details))
	})
	t.Run("html answer", func(t *testing.T) {
		e := newEnv(t)
		e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 502, ContentType: "text/html", Body: []byte("<html>Bad Gateway</html>")})
		a := send(e)
		assert.Equal(t, 502, a.Status)
		assert.Equal(t, codeUpstreamError, a.Error)
		assert.NotContains(t, a.Raw, "<html>")
	})
	t.Run("garbage success answer", func(t *testing.T) {
		e := newEnv(t)
		e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 200, ContentType: "application/json", Body: []byte(`{"ok":1}`)})
		a := send(e)
		assert.Equal(t, 502, a.Status)
		assert.Equal(t, codeUpstreamError, a.Error)
	})
	t.Run("reset", func(t *testing.T) {
		e := newEnv(t)
		e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Reset, AfterBytes: 1000})
		a := send(e)
		assert.Equal(t, 502, a.Status)
		assert.Equal(t, codeUpstreamError, a.Error)
		assert.NotContains(t, a.Raw, "connection")
	})
	t.Run("unreachable", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { h.GraphURL = "http://127.0.0.1:1" })
		a := send(e)
		assert.Equal(t, 502, a.Status)
		assert.Equal(t, codeUpstreamError, a.Error)
		assert.NotContains(t, a.Raw, "127.0.0.1")
	})
	t.Run("hang", func(t *testing.T) {
		e := newEnv(t, func(h *Handler) { h.ResponseTimeout.UnmarshalJSON([]byte(`"300ms"`)) })
		e.emu.Inject(metaemu.Fault{Route: "upload", Kind: metaemu.Hang})
		a := send(e)
		assert.Equal(t, 504, a.Status)
		assert.Equal(t, codeUpstreamTimeout, a.Error)
	})
}

func TestUploadClientAbortCancelsMeta(t *testing.T) {
	e := newEnv(t)
	pr, pw := io.Pipe()
	req := e.rawUpload(tokPremium, pr, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"})
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
	}()
	_, err := pw.Write(fixtures.JPEG(100_000))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.emu.InFlight() == 1 }, 5*time.Second, 5*time.Millisecond)
	// The client goes away mid-body.
	pw.CloseWithError(io.ErrClosedPipe)
	<-done
	require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, time.Second, 5*time.Millisecond,
		"Meta's request was not cancelled within a second")
	up := e.emu.Uploads()[0]
	assert.Empty(t, up.MediaID)
	assert.False(t, up.ReceivedBodyOK)
}

// TestClientAbortIsNoUpstreamError: a client that goes away mid-upload is
// a 499 CLIENT_CLOSED_REQUEST at debug level, never an UPSTREAM_ERROR.
func TestClientAbortIsNoUpstreamError(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zap.DebugLevel)
	e.h.logger = zap.New(core)
	before := testutil.ToFloat64(metrics.requests.WithLabelValues("upload", "499", codeClientClosed))
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	req := e.rawUpload(tokPremium, pr, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"})
	req = req.WithContext(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	_, err := pw.Write(fixtures.JPEG(100_000))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return e.emu.InFlight() == 1 }, 5*time.Second, 5*time.Millisecond)
	cancel() // the client goes away
	pw.CloseWithError(context.Canceled)
	<-done
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(metrics.requests.WithLabelValues("upload", "499", codeClientClosed))-before == 1
	}, 3*time.Second, 5*time.Millisecond, "not counted as a client abort: %v", logEntries(logs))
	for _, l := range logs.All() {
		assert.Less(t, l.Level, zap.WarnLevel, "%s: %v", l.Message, l.ContextMap())
		assert.NotEqual(t, codeUpstreamError, l.ContextMap()["error"])
	}
}

func TestSanitizeFilename(t *testing.T) {
	cases := map[string]string{
		"":                       "file",
		"photo.jpg":              "photo.jpg",
		"../../etc/passwd":       "passwd",
		`C:\Users\x\a.jpg`:       "a.jpg",
		"a\"b.jpg":               "a_b.jpg",
		"a;b.jpg":                "a_b.jpg",
		"a\r\nX-Evil: 1.jpg":     "aX-Evil: 1.jpg",
		"\xff\xfe.jpg":           "_.jpg",
		"ünïcødé.jpg":            "ünïcødé.jpg",
		"..":                     "file",
		strings.Repeat("a", 500): strings.Repeat("a", media.MaxFilenameLength),
		// Found by FuzzSanitizeFilename: the cut left trailing spaces.
		strings.Repeat("a", media.MaxFilenameLength-1) + "  x": strings.Repeat("a", media.MaxFilenameLength-1),
	}
	for in, want := range cases {
		got := media.SanitizeFilename(in)
		assert.Equal(t, want, got, "%q", in)
		assert.NotContains(t, got, "\r")
		assert.NotContains(t, got, "\n")
		assert.NotContains(t, got, `"`)
	}
}

func TestUploadTypeFieldAfterFile(t *testing.T) {
	zipBytes := append([]byte("PK\x03\x04"), make([]byte, 2000)...)
	t.Run("names a type the file alone does not tell", func(t *testing.T) {
		e := newEnv(t)
		docx := "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
		a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA),
			filePart("blob", "application/octet-stream", zipBytes), field("type", docx)))
		e.checkStored(a, zipBytes, docx)
		assert.Empty(t, dirEntries(t, e.h.SpoolDir))
	})
	t.Run("contradicting the type already sent", func(t *testing.T) {
		e := newEnv(t)
		a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA),
			filePart("photo.jpg", "application/octet-stream", fixtures.JPEG(5000)), field("type", "image/png")))
		assert.Equal(t, 400, a.Status, a.Raw)
		assert.Equal(t, codeValidation, a.Error)
		require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 5*time.Second, 10*time.Millisecond)
		assert.Empty(t, e.emu.Uploads()[0].MediaID, "Meta stored a file from a refused request")
	})
	// After a file whose part type decided its type (curl's natural order:
	// -F file=@x;type=... before -F type=...), the field must still make
	// sense: what would be refused before the file is refused after it,
	// and cancels the upload.
	for _, c := range []struct {
		name, field string
		status      int
		code        string
	}{
		{"junk after a typed file", "picture", 400, codeValidation},
		{"another kind after a typed file", "video", 415, codeUnsupportedType},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA),
				filePart("photo.jpg", "image/jpeg", fixtures.JPEG(5000)), field("type", c.field)))
			assert.Equal(t, c.status, a.Status, a.Raw)
			assert.Equal(t, c.code, a.Error)
			require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 5*time.Second, 10*time.Millisecond)
			assert.Empty(t, e.emu.Uploads()[0].MediaID, "Meta stored a file from a refused request")
		})
	}
	t.Run("a kind or a type after a typed file", func(t *testing.T) {
		for _, v := range []string{"image", "image/png"} { // a MIME type after the part's: the part's wins, as before it
			e := newEnv(t)
			data := fixtures.JPEG(5000)
			a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA),
				filePart("photo.jpg", "image/jpeg", data), field("type", v)))
			e.checkStored(a, data, "image/jpeg")
		}
	})
	t.Run("agreeing with the type already sent", func(t *testing.T) {
		e := newEnv(t)
		data := fixtures.JPEG(5000)
		a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA),
			filePart("photo.jpg", "", data), field("type", "image/jpeg")))
		e.checkStored(a, data, "image/jpeg")
	})
}

func TestUploadOversizedPartHeaders(t *testing.T) {
	e := newEnv(t)
	body, ct := buildForm(t, field("phoneNumberId", phoneA))
	// A file part with a 9 MiB header, written by hand.
	boundary := strings.TrimPrefix(ct, "multipart/form-data; boundary=")
	raw := strings.TrimSuffix(body.String(), "--"+boundary+"--\r\n") +
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n" +
		"X-Pad: " + strings.Repeat("a", 9<<20) + "\r\nContent-Type: image/jpeg\r\n\r\n" +
		string(fixtures.JPEG(100)) + "\r\n--" + boundary + "--\r\n"
	a := e.do(e.rawUpload(tokPremium, strings.NewReader(raw), map[string]string{"Content-Type": ct}))
	assert.Equal(t, 400, a.Status, a.Raw)
	assert.Equal(t, codeValidation, a.Error)
	assert.Empty(t, e.emu.Requests())

	// One part header just over maxPartHeader.
	raw = strings.TrimSuffix(body.String(), "--"+boundary+"--\r\n") +
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n" +
		"X-Pad: " + strings.Repeat("a", maxPartHeader) + "\r\nContent-Type: image/jpeg\r\n\r\n" +
		string(fixtures.JPEG(100)) + "\r\n--" + boundary + "--\r\n"
	a = e.do(e.rawUpload(tokPremium, strings.NewReader(raw), map[string]string{"Content-Type": ct}))
	assert.Equal(t, 400, a.Status, a.Raw)
	assert.Empty(t, e.emu.Requests())
}

func TestUploadRule5BeforeBodyChecks(t *testing.T) {
	e := newEnv(t, func(h *Handler) { h.MaxSize = 1 << 20 })
	for _, ct := range []string{"multipart/form-data; boundary=x", "multipart/form-data", "image/jpeg"} {
		body := &readTracker{r: strings.NewReader("")}
		req := httptest.NewRequest(http.MethodPost, "/v2/media/upload", body)
		req.Header.Set("Authorization", "Bearer "+tokPremium)
		req.Header.Set("X-Phone-Number-Id", phoneOther)
		req.Header.Set("Content-Type", ct)
		req.ContentLength = 50 << 20
		rec := e.serveDirect(req)
		assert.Equal(t, 403, rec.Code, ct)
		assert.Contains(t, rec.Body.String(), codeForbidden, ct)
		assert.False(t, body.read.Load())
	}
}

func TestValidateMaxSize(t *testing.T) {
	h := &Handler{PathPrefix: "/v2/media", GraphURL: "https://graph.facebook.com", GraphVersion: "v23.0",
		SpoolDir: t.TempDir(), MaxSize: 1<<62 + 1}
	assert.ErrorContains(t, h.Validate(), "max_size")
}

// TestHostileFilenames checks that no file name can add or rename a form
// field at Meta, or a header at the client.
func TestHostileFilenames(t *testing.T) {
	const bnd = "xyzzy"
	for _, name := range []string{
		`a.jpg"; name="messaging_product`,
		"a.jpg\"\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nimage/png\r\n--x",
		"..\\..\\a;b.jpg",
		"a\x00b.jpg",
		"\xff\xfe.jpg",
		"%22%0d%0a.jpg",
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			data := fixtures.JPEG(3000)
			// Mode A: the name as a quoted-string in the part header,
			// escaped as a browser would (quotes and CR/LF percent-encoded).
			esc := strings.NewReplacer(`"`, "%22", "\r", "%0D", "\n", "%0A").Replace(name)
			body := rawForm(bnd,
				"Content-Disposition: form-data; name=\"phoneNumberId\"\r\n\r\n"+phoneA,
				"Content-Disposition: form-data; name=\"file\"; filename=\""+esc+"\"\r\nContent-Type: image/jpeg\r\n\r\n"+string(data))
			a := e.do(e.rawUpload(tokPremium, strings.NewReader(body), map[string]string{"Content-Type": "multipart/form-data; boundary=" + bnd}))
			if strings.Contains(name, "\x00") {
				// A NUL is not allowed in a header at all: the form is refused.
				assert.Equal(t, 400, a.Status, a.Raw)
				assert.Equal(t, codeValidation, a.Error)
				assert.Empty(t, e.emu.Requests())
				return
			}
			up := e.checkStored(a, data, "image/jpeg")
			assert.Equal(t, map[string]string{"messaging_product": "whatsapp", "type": "image/jpeg"}, up.Fields)
			assert.NotContains(t, up.FileName, `"`)
			assert.NotContains(t, up.FileName, "\r")

			// Mode B: the name in X-Filename (header values cannot carry
			// CR/LF, so only the rest is tried there).
			if !strings.ContainsAny(name, "\r\n\x00") {
				e.emu.Reset()
				a = e.do(e.rawUpload(tokPremium, strings.NewReader(string(data)), map[string]string{
					"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg", "X-Filename": name}))
				up = e.checkStored(a, data, "image/jpeg")
				assert.Equal(t, map[string]string{"messaging_product": "whatsapp", "type": "image/jpeg"}, up.Fields)
			}
		})
	}
}

// TestUploadPercentEncodedFilenames: file names as real encoders send
// them reach Meta decoded (aiohttp percent-encodes filename and sends no
// filename*; non-ASCII X-Filename headers arrive percent-encoded), while a
// filename* keeps precedence and is not decoded twice.
func TestUploadPercentEncodedFilenames(t *testing.T) {
	e := newEnv(t)
	data := fixtures.JPEG(2000)
	const bnd = "xyzzy"
	for _, c := range []struct{ disposition, want string }{
		{`filename="name%20with%20spaces%20and%20%C3%BCn%C3%AFcode.jpg"`, "name with spaces and ünïcode.jpg"},
		{`filename="fallback.jpg"; filename*=UTF-8''r%C3%A9sum%C3%A9%2520x.jpg`, "résumé_20x.jpg"},
		{`filename="100%.jpg"`, "100_.jpg"},
	} {
		e.emu.Reset()
		body := rawForm(bnd,
			"Content-Disposition: form-data; name=\"phoneNumberId\"\r\n\r\n"+phoneA,
			"Content-Disposition: form-data; name=\"file\"; "+c.disposition+"\r\nContent-Type: image/jpeg\r\n\r\n"+string(data))
		a := e.do(e.rawUpload(tokPremium, strings.NewReader(body), map[string]string{"Content-Type": "multipart/form-data; boundary=" + bnd}))
		assert.Equal(t, c.want, e.checkStored(a, data, "image/jpeg").FileName, c.disposition)
	}
	e.emu.Reset()
	a := e.do(e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{
		"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg", "X-Filename": "%E5%86%99%E7%9C%9F%201.jpg"}))
	assert.Equal(t, "写真 1.jpg", e.checkStored(a, data, "image/jpeg").FileName)
}

// TestUploadKindsAndBytes: media kinds are hints alike in both modes,
// and a declared type that the file's bytes contradict never reaches
// Meta; every sample of a supported type goes through, and back.
func TestUploadKindsAndBytes(t *testing.T) {
	e := newEnv(t)
	jpeg := fixtures.Sample("image/jpeg")
	raw := func(data []byte, hdr map[string]string) answer {
		h := map[string]string{"X-Phone-Number-Id": phoneA}
		for k, v := range hdr {
			h[k] = v
		}
		return e.do(e.rawUpload(tokPremium, bytes.NewReader(data), h))
	}
	t.Run("a kind in either mode", func(t *testing.T) {
		a := raw(jpeg, map[string]string{"X-Upload-Type": "image"})
		assert.Equal(t, 200, a.Status, a.Raw)
		assert.Equal(t, "image/jpeg", a.Data.MimeType)
		a = e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), field("type", "image"), filePart("p", "", jpeg)))
		assert.Equal(t, 200, a.Status, a.Raw)
		assert.Equal(t, "image/jpeg", a.Data.MimeType)
		a = e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), field("type", "document"),
			filePart("report.pdf", "", fixtures.Sample("application/pdf"))))
		assert.Equal(t, 200, a.Status, a.Raw)
		assert.Equal(t, "application/pdf", a.Data.MimeType)
	})
	e.emu.Reset()
	t.Run("a type outside the kind, a word that is neither", func(t *testing.T) {
		a := raw(jpeg, map[string]string{"X-Upload-Type": "video", "Content-Type": "image/jpeg"})
		assert.Equal(t, 415, a.Status, a.Raw)
		assert.Contains(t, a.Message, "image/jpeg")
		assert.Contains(t, a.Message, "video")
		a = e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), field("type", "audio"), filePart("p.jpg", "image/jpeg", jpeg)))
		assert.Equal(t, 415, a.Status, a.Raw)
		for _, bad := range []answer{
			raw(jpeg, map[string]string{"X-Upload-Type": "picture"}),
			e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), field("type", "picture"), filePart("p.jpg", "image/jpeg", jpeg))),
		} {
			assert.Equal(t, 400, bad.Status, bad.Raw)
			assert.Contains(t, bad.Message, "neither a media kind")
		}
		assert.Empty(t, e.emu.Requests())
	})
	t.Run("declared types checked against the bytes", func(t *testing.T) {
		exe := make([]byte, 4096)
		copy(exe, "MZ")
		exe[0x3C] = 0x80
		copy(exe[0x80:], "PE\x00\x00\x4c\x01")
		for _, c := range []struct {
			data     []byte
			declared string
		}{
			{exe, "image/jpeg"}, {fixtures.Sample("application/pdf"), "image/jpeg"}, {jpeg, "video/mp4"},
		} {
			a := raw(c.data, map[string]string{"Content-Type": c.declared})
			assert.Equal(t, 415, a.Status, a.Raw)
			assert.Contains(t, a.Message, c.declared)
			a = e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), filePart("f", c.declared, c.data)))
			assert.Equal(t, 415, a.Status, "streamed: %s", a.Raw)
			a = e.do(e.formUpload(tokPremium, filePart("f", c.declared, c.data), field("phoneNumberId", phoneA)))
			assert.Equal(t, 415, a.Status, "spooled: %s", a.Raw)
		}
		assert.Empty(t, e.emu.Requests(), "nothing reached Meta")
	})
	t.Run("every supported type goes through, and back", func(t *testing.T) {
		for _, typ := range fixtures.SampleTypes() {
			data := fixtures.Sample(typ)
			a := raw(data, map[string]string{"Content-Type": typ})
			require.Equal(t, 200, a.Status, "%s: %s", typ, a.Raw)
			assert.Equal(t, typ, a.Data.MimeType)
			resp := e.download(a.Data.MediaID, "", nil)
			assert.Equal(t, 200, resp.StatusCode, typ)
			assert.Equal(t, data, readAll(t, resp), typ)
		}
	})
}

func TestValidateSpoolBudgetAndPrefix(t *testing.T) {
	valid := func() *Handler {
		return &Handler{PathPrefix: "/v2/media", GraphURL: "https://graph.facebook.com", GraphVersion: "v23.0",
			SpoolDir: t.TempDir(), MaxSize: 5 << 30, SpoolBudget: 5 << 30, SpoolShare: 5 << 30}
	}
	require.NoError(t, valid().Validate())
	h := valid()
	h.SpoolShare = 1 << 30
	assert.ErrorContains(t, h.Validate(), "spool_share", "a share below max_size")
	h = valid()
	h.SpoolBudget = 2 << 30
	assert.ErrorContains(t, h.Validate(), "spool_budget", "an upload of max_size could never be spooled")
	h = valid()
	h.PathPrefix = "/media files"
	assert.ErrorContains(t, h.Validate(), "path_prefix", "a prefix the escaped path never equals")
}

// TestUploadTypesMetaRenamed: Meta refuses audio/opus and knows 3GPP video
// only as video/3gpp; whatever declared them, Meta gets its own names.
func TestUploadTypesMetaRenamed(t *testing.T) {
	ogg, err := os.ReadFile("testdata/samples/sample.ogg")
	require.NoError(t, err)
	gp, err := os.ReadFile("testdata/samples/sample.3gp")
	require.NoError(t, err)
	for _, c := range []struct {
		name string
		data []byte
		hdr  map[string]string
		want string
	}{
		{"raw, Content-Type audio/opus", ogg, map[string]string{"Content-Type": "audio/opus"}, "audio/ogg"},
		{"raw, X-Upload-Type audio/opus", ogg, map[string]string{"X-Upload-Type": "audio/opus"}, "audio/ogg"},
		{"raw, a .opus name", ogg, map[string]string{"X-Filename": "note.opus", "Content-Type": "application/octet-stream"}, "audio/ogg"},
		{"raw, Content-Type video/3gp", gp, map[string]string{"Content-Type": "video/3gp"}, "video/3gpp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			hdr := map[string]string{"X-Phone-Number-Id": phoneA}
			for k, v := range c.hdr {
				hdr[k] = v
			}
			e.checkStored(e.do(e.rawUpload(tokPremium, bytes.NewReader(c.data), hdr)), c.data, c.want)
		})
	}
	t.Run("multipart, part types and a type field", func(t *testing.T) {
		e := newEnv(t)
		e.checkStored(e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), filePart("note.opus", "audio/opus", ogg))), ogg, "audio/ogg")
		e = newEnv(t)
		e.checkStored(e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), field("type", "video/3gp"),
			filePart("clip", "application/octet-stream", gp))), gp, "video/3gpp")
		// A type field after the file (curl's order) names the type as
		// the client knows it: it agrees with Meta's name.
		for _, c := range []struct {
			part formPart
			typ  string
			want string
		}{
			{filePart("voice.opus", "audio/opus", ogg), "audio/opus", "audio/ogg"},
			{filePart("clip.3gp", "video/3gp", gp), "video/3gp", "video/3gpp"},
			{filePart("voice.bin", "application/octet-stream", ogg), "audio/opus", "audio/ogg"},
		} {
			e = newEnv(t)
			e.checkStored(e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), c.part, field("type", c.typ))),
				c.part.data, c.want)
		}
	})
}

func logEntries(logs *observer.ObservedLogs) []string {
	var out []string
	for _, l := range logs.All() {
		out = append(out, l.Message+" "+fmt.Sprint(l.ContextMap()))
	}
	return out
}
