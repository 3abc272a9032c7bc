package whatsappmedia

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// maxRedirects bounds the redirects followed from a media URL.
const maxRedirects = 5

var (
	errMediaNotFound = newError(http.StatusNotFound, codeNotFound, "Media URL not found")
	errBadMediaID    = validationError("mediaId must be 1 to 32 digits")
	errBadDisp       = validationError("disposition must be inline or attachment")
	errHostRefused   = newError(http.StatusBadGateway, codeUpstreamError, "The media URL points outside Meta's media hosts")
	errCDNRefused    = newError(http.StatusBadGateway, codeUpstreamError, "The WhatsApp media CDN refused the request")
)

// mediaInfo is the Graph API's answer about a media object.
type mediaInfo struct {
	URL      string       `json:"url"`
	MimeType string       `json:"mime_type"`
	SHA256   string       `json:"sha256"`
	FileSize flexibleSize `json:"file_size"`
	ID       string       `json:"id"`

	digest []byte // SHA256 decoded; nil when Meta's value is unusable
}

// flexibleSize is file_size as Meta sends it: a JSON string or a number.
// -1 means absent or unusable.
type flexibleSize int64

func (s *flexibleSize) UnmarshalJSON(b []byte) error {
	*s = -1
	v := strings.Trim(string(b), `"`)
	if n, err := media.ParseDigits(v); err == nil {
		*s = flexibleSize(n)
	}
	return nil
}

// serveDownload serves GET and HEAD {prefix}/{mediaId}/download (contract
// section 6).
func (h *Handler) serveDownload(w http.ResponseWriter, r *http.Request, mediaID string) *apiError {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return methodNotAllowed("GET, HEAD")
	}
	acct, ae := h.authenticate(r)
	if ae != nil {
		return ae
	}
	setAccountVars(r, acct)
	if !isDigits(mediaID, 32) {
		return errBadMediaID
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return validationError("Malformed query string")
	}
	disposition := "inline"
	switch d := q["disposition"]; {
	case len(d) > 1:
		return errBadDisp
	case len(d) == 1 && d[0] == "attachment":
		disposition = "attachment"
	case len(d) == 1 && d[0] != "inline":
		return errBadDisp
	}
	var phone string
	if p := q["phoneNumberId"]; len(p) > 0 {
		if len(p) > 1 || !isDigits(p[0], 64) {
			return validationError("phoneNumberId must be a Meta phone number id (digits only)")
		}
		phone = p[0]
		if ae := authorizePhone(acct, phone); ae != nil {
			return ae
		}
		setPhoneVar(r, phone)
	}

	info, ae := h.mediaInfo(r.Context(), acct, mediaID, phone)
	if ae != nil {
		return ae
	}
	size := int64(info.FileSize)

	hdr := w.Header()
	ctype := info.MimeType
	if media.Type(ctype) == "" {
		ctype = "application/octet-stream"
	}
	hdr.Set("Content-Type", ctype)
	hdr.Set("Content-Disposition", disposition+`; filename="`+mediaID+media.Extension(ctype)+`"`)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "private, no-cache")
	var etag string
	if info.digest != nil {
		etag = `"` + hex.EncodeToString(info.digest) + `"`
		hdr.Set("ETag", etag)
		hdr.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(info.digest)+":")
	}
	if etag != "" && etagListMatches(r.Header.Get("If-None-Match"), etag) {
		for _, k := range []string{"Content-Type", "Content-Disposition"} {
			hdr.Del(k)
		}
		w.WriteHeader(http.StatusNotModified)
		return nil
	}

	// The range, if any: one range, resolved against Meta's file_size.
	var rng *media.Range
	if rh := r.Header.Get("Range"); rh != "" && size > 0 && ifRangeHolds(r.Header.Get("If-Range"), etag) {
		br, ok := media.ParseRange(rh, size)
		if !ok {
			clearDownloadHeaders(hdr)
			hdr.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			return newError(http.StatusRequestedRangeNotSatisfiable, "RANGE_NOT_SATISFIABLE", "The requested range cannot be served")
		}
		rng = &br
	}
	if size >= 0 {
		hdr.Set("Accept-Ranges", "bytes")
	}
	status, want := http.StatusOK, size
	if rng != nil {
		status, want = http.StatusPartialContent, rng.Length()
		hdr.Set("Content-Range", rng.ContentRange(size))
	}
	if want >= 0 {
		hdr.Set("Content-Length", strconv.FormatInt(want, 10))
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(status)
		return nil
	}

	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	resp, ae := h.fetchMedia(ctx, acct, mediaID, phone, &info, rng)
	if ae != nil {
		clearDownloadHeaders(hdr)
		return ae
	}
	defer resp.Body.Close()
	// The stall guard: no byte from the CDN, or taken by the client, for
	// stall_timeout breaks the transfer both ways.
	guard := newStallGuard(time.Duration(h.StallTimeout), func() {
		cancel()
		_ = http.NewResponseController(w).SetWriteDeadline(time.Now())
	})
	defer guard.stop()
	body := io.Reader(progressReader{resp.Body, guard})
	if rng != nil && resp.StatusCode == http.StatusOK {
		// The CDN ignored the range and sends the whole file: skip to the
		// range ourselves, and take just its bytes.
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			clearDownloadHeaders(hdr)
			return errUpstreamBadAnswer.withCause(fmt.Errorf("cdn content-length %d, meta file_size %d", resp.ContentLength, size))
		}
		if _, err := io.CopyN(io.Discard, body, rng.Start); err != nil {
			clearDownloadHeaders(hdr)
			if guard.stop() {
				return errUpstreamTimeout.withCause(errors.New("the cdn stalled"))
			}
			return classifyTransportError(err)
		}
		body = io.LimitReader(body, want)
		resp.ContentLength = -1
	}
	if want >= 0 && resp.ContentLength >= 0 && rng == nil && resp.ContentLength != want {
		clearDownloadHeaders(hdr)
		h.logDownloadAbort(r, mediaID, &info, "length_mismatch", 0, want)
		metrics.downloadAbort.WithLabelValues("length_mismatch").Inc()
		return errUpstreamBadAnswer.withCause(fmt.Errorf("cdn content-length %d, meta file_size %d", resp.ContentLength, want))
	}
	if want < 0 {
		want = resp.ContentLength // unknown size: trust the CDN's framing
	}
	var verify []byte
	if rng == nil {
		verify = info.digest
	}
	setMediaVars(r, mediaID, 0)
	w.WriteHeader(status)
	// Send the headers now: download managers show progress from
	// Content-Length, and a transfer that breaks later still shows as a
	// broken 200, not as a connection that never answered.
	_ = http.NewResponseController(w).Flush()
	n, reason, err := copyVerified(w, body, want, verify, guard)
	if guard.stop() {
		// The write deadline was moved: even a copy that seemed to end
		// may not have reached the client in full.
		reason = "stalled"
	}
	setMediaVars(r, mediaID, n)
	metrics.bytes.WithLabelValues("download").Add(float64(n))
	if reason != "" {
		// Whatever the client got must not look complete: break the
		// connection rather than end the response cleanly. The last
		// bytes were held back, so even a full-length body is short.
		h.logDownloadAbort(r, mediaID, &info, reason, n, want, zap.NamedError("cause", err))
		metrics.downloadAbort.WithLabelValues(reason).Inc()
		panic(http.ErrAbortHandler)
	}
	return nil
}

// clearDownloadHeaders removes the headers of a file answer when an error
// envelope replaces it.
func clearDownloadHeaders(hdr http.Header) {
	for _, k := range []string{"Content-Type", "Content-Disposition", "Content-Length", "Content-Range",
		"ETag", "Repr-Digest", "Accept-Ranges", "Cache-Control"} {
		hdr.Del(k)
	}
}

// copyVerified copies src to w and checks that exactly want bytes came
// (when want >= 0) and that their SHA-256 is verify (when not nil). The
// last chunk read is written only once src has ended and everything has
// checked out, so a failed transfer never delivers the full length. It
// returns the bytes written and, when the copy failed, a reason for logs
// and metrics.
//
// Each chunk is written to the client whole, and hashed by a hasher
// goroutine while it is being written: with 16 KiB slices, a 100 MB
// download took 1.4x the time, and with the hash in line 1.25x
// (BENCHMARKS.md).
// So the client side counts as moving for the stall guard once a chunk
// (up to copyBufferSize) is taken.
func copyVerified(w io.Writer, src io.Reader, want int64, verify []byte, guard *stallGuard) (written int64, reason string, err error) {
	// A ring of three buffers: one being read into, one being written
	// (and maybe still hashed), one that the hasher may still be reading.
	var ring [3]*[]byte
	for i := range ring {
		ring[i] = bufPool.Get().(*[]byte)
	}
	var hp *hashPipe
	if verify != nil {
		hp = newHashPipe()
	}
	defer func() {
		if hp != nil {
			hp.close() // the hasher is done with the buffers
		}
		for _, b := range ring {
			bufPool.Put(b)
		}
	}()
	var pending []byte
	var read int64
	for k := 0; ; k++ {
		buf := *ring[k%len(ring)]
		if hp != nil {
			hp.waitFor(k - len(ring)) // the chunk last read into buf is hashed
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			read += int64(n)
			if want >= 0 && read > want {
				return written, "too_long", fmt.Errorf("cdn sent more than %d bytes", want)
			}
			if hp != nil {
				hp.send(buf[:n])
			}
			if len(pending) > 0 {
				m, werr := w.Write(pending)
				written += int64(m)
				if werr != nil {
					return written, "client_write", werr
				}
				if guard != nil {
					guard.progress()
				}
			}
			pending = buf[:n]
		} else {
			k-- // buf is still free
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return written, "cdn_read", rerr
		}
	}
	if want >= 0 && read != want {
		return written, "truncated", fmt.Errorf("cdn sent %d of %d bytes", read, want)
	}
	if hp != nil {
		sum := hp.close()
		hp = nil
		if !bytes.Equal(sum, verify) {
			return written, "digest_mismatch", errors.New("the bytes do not match meta's sha256")
		}
	}
	m, werr := w.Write(pending)
	written += int64(m)
	if werr != nil {
		return written, "client_write", werr
	}
	return written, "", nil
}

// hashPipe hashes chunks with SHA-256 in a goroutine of its own, in the
// order they are sent.
type hashPipe struct {
	todo       chan []byte
	acks       chan struct{}
	sent, done int
	sum        []byte
}

func newHashPipe() *hashPipe {
	hp := &hashPipe{todo: make(chan []byte, 4), acks: make(chan struct{}, 4)}
	go func() {
		h := sha256.New()
		for b := range hp.todo {
			h.Write(b)
			hp.acks <- struct{}{}
		}
		hp.sum = h.Sum(nil)
		close(hp.acks)
	}()
	return hp
}

// send queues a chunk; the caller must not change it until waitFor says
// it is hashed.
func (hp *hashPipe) send(b []byte) {
	hp.todo <- b
	hp.sent++
}

// waitFor returns once chunk k (counting sent chunks from 0) is hashed.
func (hp *hashPipe) waitFor(k int) {
	for hp.done <= k && hp.done < hp.sent {
		<-hp.acks
		hp.done++
	}
}

// close waits for the hasher to finish and returns the digest.
func (hp *hashPipe) close() []byte {
	close(hp.todo)
	for range hp.acks {
	}
	return hp.sum
}

func (h *Handler) logDownloadAbort(r *http.Request, mediaID string, info *mediaInfo, reason string, n, want int64, extra ...zap.Field) {
	level := zapcore.ErrorLevel
	if reason == "client_write" || r.Context().Err() != nil {
		level = zapcore.DebugLevel // the client went away: nothing is wrong here
	}
	if ce := h.logger.Check(level, "download broken off"); ce != nil {
		ce.Write(append([]zap.Field{
			zap.String("media_id", mediaID), zap.String("reason", reason),
			zap.String("meta_sha256", info.SHA256), zap.Int64("bytes_sent", n), zap.Int64("bytes_expected", want),
		}, extra...)...)
	}
}

// mediaInfo asks the Graph API for a media object's metadata.
func (h *Handler) mediaInfo(ctx context.Context, acct *Account, mediaID, phone string) (mediaInfo, *apiError) {
	u := h.graphBase + "/" + mediaID
	if phone != "" {
		u += "?phone_number_id=" + phone
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return mediaInfo{}, errInternal.withCause(err)
	}
	req.Header = http.Header{
		"Authorization": {"Bearer " + acct.MetaToken},
		"User-Agent":    {userAgent},
		"Accept":        {"application/json"},
	}
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		return mediaInfo{}, classifyTransportError(err)
	}
	observeUpstream("graph", start)
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		ae := upstreamAnswerError(resp)
		var me *metaAPIErr
		if errors.As(ae.cause, &me) && me.status == http.StatusBadRequest && me.meta.Code == 100 && me.meta.Subcode == 33 {
			nf := errMediaNotFound.withCause(ae.cause)
			nf.Details = ae.Details
			return mediaInfo{}, nf
		}
		return mediaInfo{}, ae
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxMetaErrorBody+1))
	if err != nil {
		return mediaInfo{}, classifyTransportError(err)
	}
	info := mediaInfo{FileSize: -1}
	if len(raw) > maxMetaErrorBody || json.Unmarshal(raw, &info) != nil {
		return mediaInfo{}, errUpstreamBadAnswer.withCause(errors.New("unreadable media metadata"))
	}
	if info.URL == "" {
		return mediaInfo{}, errMediaNotFound.withCause(errors.New("media metadata has no url"))
	}
	if d, err := hex.DecodeString(info.SHA256); err == nil && len(d) == sha256.Size {
		info.digest = d
	}
	return info, nil
}

// fetchMedia GETs the media's bytes from the CDN. A 404 or 403 means the
// URL went stale: it fetches fresh metadata once and tries once more. info
// is updated to the metadata the answer belongs to.
func (h *Handler) fetchMedia(ctx context.Context, acct *Account, mediaID, phone string, info *mediaInfo, rng *media.Range) (*http.Response, *apiError) {
	for attempt := 0; ; attempt++ {
		resp, ae := h.getCDN(ctx, acct, info.URL, rng)
		if ae != nil {
			return nil, ae
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusPartialContent:
			if rng != nil && resp.StatusCode == http.StatusPartialContent &&
				resp.Header.Get("Content-Range") != rng.ContentRange(int64(info.FileSize)) {
				resp.Body.Close()
				return nil, errUpstreamBadAnswer.withCause(fmt.Errorf("cdn answered range %q", resp.Header.Get("Content-Range")))
			}
			if rng == nil && resp.StatusCode != http.StatusOK {
				resp.Body.Close()
				return nil, errUpstreamBadAnswer.withCause(errors.New("cdn answered 206 to a request without range"))
			}
			return resp, nil
		case http.StatusNotFound, http.StatusForbidden:
			drainClose(resp)
			if attempt > 0 {
				return nil, errMediaNotFound.withCause(fmt.Errorf("cdn answered %d twice", resp.StatusCode))
			}
			fresh, ae := h.mediaInfo(ctx, acct, mediaID, phone)
			if ae != nil {
				return nil, ae
			}
			*info = fresh
		case http.StatusRequestedRangeNotSatisfiable:
			drainClose(resp)
			return nil, newError(http.StatusRequestedRangeNotSatisfiable, "RANGE_NOT_SATISFIABLE", "The requested range cannot be served")
		default:
			drainClose(resp)
			return nil, errCDNRefused.withCause(fmt.Errorf("cdn answered %d", resp.StatusCode))
		}
	}
}

// getCDN sends one GET for a media URL, following redirects itself so that
// every hop is checked against the allow-list before the Meta token goes
// there.
func (h *Handler) getCDN(ctx context.Context, acct *Account, rawURL string, rng *media.Range) (*http.Response, *apiError) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errUpstreamBadAnswer.withCause(errors.New("unparsable media url"))
	}
	for hop := 0; ; hop++ {
		if !h.mediaHosts.allows(u) {
			return nil, errHostRefused.withCause(fmt.Errorf("media host %q is not allowed", u.Host))
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, errUpstreamBadAnswer.withCause(err)
		}
		req.Header = http.Header{
			"Authorization": {"Bearer " + acct.MetaToken},
			"User-Agent":    {userAgent},
			// Bytes as stored: no transparent decompression, so that
			// lengths and the digest are the file's own.
			"Accept-Encoding": {"identity"},
		}
		if rng != nil {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(rng.Start, 10)+"-"+strconv.FormatInt(rng.End, 10))
		}
		start := time.Now()
		resp, err := h.client.Do(req)
		if err != nil {
			return nil, classifyTransportError(err)
		}
		observeUpstream("cdn", start)
		if resp.StatusCode < 300 || resp.StatusCode > 399 || resp.StatusCode == http.StatusNotModified {
			return resp, nil
		}
		loc := resp.Header.Get("Location")
		drainClose(resp)
		if loc == "" || hop >= maxRedirects {
			return nil, errCDNRefused.withCause(fmt.Errorf("cdn redirect without location or more than %d redirects", maxRedirects))
		}
		next, err := u.Parse(loc)
		if err != nil {
			return nil, errUpstreamBadAnswer.withCause(errors.New("unparsable redirect location"))
		}
		u = next
	}
}

// drainClose discards a small remainder of a body, so the connection can
// be reused, and closes it.
func drainClose(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// etagListMatches reports whether an If-None-Match value names etag (weak
// comparison, RFC 9110 section 13.1.2).
func etagListMatches(list, etag string) bool {
	list = strings.TrimSpace(list)
	if list == "" {
		return false
	}
	if list == "*" {
		return true
	}
	for _, t := range strings.Split(list, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag {
			return true
		}
	}
	return false
}

// ifRangeHolds reports whether a Range header may be honoured given the
// If-Range value: absent, or a strong match of our ETag. A date, or any
// other validator, does not match (we have no Last-Modified), so the whole
// representation is sent, as RFC 9110 section 13.1.5 says.
func ifRangeHolds(ifRange, etag string) bool {
	ifRange = strings.TrimSpace(ifRange)
	return ifRange == "" || (etag != "" && ifRange == etag)
}
