package whatsappmedia

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
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

var (
	errBadMediaID = validationError("mediaId must be 1 to 32 digits")
	errBadDisp    = validationError("disposition must be inline or attachment")
)

// download is one download being served.
type download struct {
	mediaID     string
	disposition string // inline or attachment
	// phone is the phoneNumberId asked for, if any: it must be one of the
	// account's, but is not sent to Graph (fetchMetadata says why), so
	// tenant isolation rests on each account's own Meta token.
	phone  string
	info   mediaMetadata
	size   int64        // file_size as the answer's headers tell it; -1 when unknown
	rng    *media.Range // the range served, or nil for the whole file
	status int          // 200 or 206
	want   int64        // the bytes the answer carries; -1 when unknown
}

// serveDownload serves GET and HEAD {prefix}/{mediaId}/download for an
// account that passed access rules 1 to 4: Meta's metadata first, from
// the media cache or Graph (it answers HEAD and If-None-Match), then the
// bytes from Meta's CDN.
func (h *Handler) serveDownload(w http.ResponseWriter, r *http.Request, acct *Account, mediaID string) *apiError {
	d, ae := parseDownload(r, acct, mediaID)
	if ae != nil {
		return ae
	}
	if d.info, ae = h.lookupMedia(r.Context(), acct, mediaID); ae != nil {
		return ae
	}
	hdr := w.Header()
	etag := d.setFileHeaders(hdr)
	if etag != "" && etagListMatches(r.Header.Get("If-None-Match"), etag) {
		hdr.Del("Content-Type")
		hdr.Del("Content-Disposition")
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if ae := d.resolveRange(r, hdr, etag); ae != nil {
		return ae
	}
	if r.Method == http.MethodHead {
		w.WriteHeader(d.status)
		return nil
	}
	return h.streamDownload(w, r, acct, d)
}

// parseDownload checks the media id and the query: disposition and
// phoneNumberId.
func parseDownload(r *http.Request, acct *Account, mediaID string) (*download, *apiError) {
	if !media.IsDigits(mediaID, 32) {
		return nil, errBadMediaID
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, validationError("Malformed query string")
	}
	d := &download{mediaID: mediaID, disposition: "inline"}
	switch v := q["disposition"]; {
	case len(v) > 1:
		return nil, errBadDisp
	case len(v) == 1 && v[0] == "attachment":
		d.disposition = "attachment"
	case len(v) == 1 && v[0] != "inline":
		return nil, errBadDisp
	}
	if p := q["phoneNumberId"]; len(p) > 0 {
		if len(p) > 1 {
			return nil, errBadPhoneID
		}
		if ae := authorizePhone(acct, p[0]); ae != nil {
			return nil, ae
		}
		d.phone = p[0]
		setPhoneVar(r, d.phone)
	}
	return d, nil
}

// setFileHeaders sets the headers that describe the file and returns its
// ETag, the hex of Meta's sha256 ("" when Meta gave none that is usable).
func (d *download) setFileHeaders(hdr http.Header) string {
	ctype := servedType(d.info.MimeType)
	disposition := d.disposition
	if !media.InlineSafe(ctype) {
		// A document a WhatsApp user sent (HTML, SVG, anything else) must
		// not run as a page of the API's origin: it is a download, and
		// sandboxed should a browser render it anyway.
		disposition = "attachment"
		hdr.Set("Content-Security-Policy", "sandbox")
	}
	hdr.Set("Content-Type", ctype)
	hdr.Set("Content-Disposition", disposition+`; filename="`+d.mediaID+media.Extension(ctype)+`"`)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "private, no-cache")
	if d.info.digest == nil {
		return ""
	}
	etag := `"` + hex.EncodeToString(d.info.digest) + `"`
	hdr.Set("ETag", etag)
	hdr.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(d.info.digest)+":")
	return etag
}

// maxServedType bounds the mime_type from Meta that is served as it is:
// a real media type is far shorter.
const maxServedType = 128

// servedType is the Content-Type of a download: Meta's mime_type when it
// is a well-formed media type of sane length, else
// application/octet-stream.
func servedType(metaType string) string {
	if len(metaType) > maxServedType || media.Type(metaType) == "" || strings.ContainsAny(metaType, "\r\n") {
		return "application/octet-stream"
	}
	return metaType
}

// resolveRange resolves the Range header, if any and if If-Range holds,
// against Meta's file_size (one range), and sets the answer's status, its
// length headers and the bytes wanted.
func (d *download) resolveRange(r *http.Request, hdr http.Header, etag string) *apiError {
	size := int64(d.info.FileSize)
	d.size, d.status, d.want = size, http.StatusOK, size
	if rh := r.Header.Get("Range"); rh != "" && size > 0 && ifRangeHolds(r.Header.Get("If-Range"), etag) {
		switch br, answer := media.ParseRange(rh, size); answer {
		case media.RangeUnsatisfiable:
			clearDownloadHeaders(hdr)
			hdr.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			return errRangeNotSatisfiable
		case media.RangeSatisfiable:
			d.rng = &br
			d.status, d.want = http.StatusPartialContent, br.Length()
			hdr.Set("Content-Range", br.ContentRange(size))
		}
	}
	if size >= 0 {
		hdr.Set("Accept-Ranges", "bytes")
	}
	if d.want >= 0 {
		hdr.Set("Content-Length", strconv.FormatInt(d.want, 10))
	}
	return nil
}

// streamDownload fetches the bytes from Meta's CDN and copies them to the
// client, checking their length and, for a whole file, Meta's sha256.
// A transfer that fails once the answer has begun is broken off, so that
// what the client got never looks complete.
func (h *Handler) streamDownload(w http.ResponseWriter, r *http.Request, acct *Account, d *download) *apiError {
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	resp, ae := h.graph.fetchMedia(ctx, acct.MetaToken, &d.info, d.rng, func() (mediaMetadata, *apiError) {
		return h.refreshMedia(ctx, acct, d.mediaID)
	})
	if ae != nil {
		if ae.Status == http.StatusNotFound {
			h.forgetMedia(acct, d.mediaID) // gone at the CDN even for a fresh URL
		}
		clearDownloadHeaders(w.Header())
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
	body, want, ae := h.cdnBody(r, d, resp, guard)
	if ae != nil {
		clearDownloadHeaders(w.Header())
		return ae
	}
	var verify []byte
	if d.rng == nil {
		verify = d.info.digest
	}
	setMediaVars(r, d.mediaID, 0)
	w.WriteHeader(d.status)
	if want < 0 || want > copyBufferSize {
		// Send the headers now: download managers show progress from
		// Content-Length, and a transfer that breaks later still shows
		// as a broken 200, not as a connection that never answered. A
		// file of one chunk goes out with its headers, in one write.
		_ = http.NewResponseController(w).Flush()
	}
	n, reason, err := copyVerified(w, body, want, verify, guard)
	guard.stop()
	if guard.fired() {
		// The write deadline was moved: even a copy that seemed to end
		// may not have reached the client in full.
		reason = "stalled"
	}
	setMediaVars(r, d.mediaID, n)
	metrics.bytes.WithLabelValues("download").Add(float64(n))
	if reason != "" {
		// Whatever the client got must not look complete: break the
		// connection rather than end the response cleanly. The last
		// bytes were held back, so even a full-length body is short.
		h.logDownloadAbort(r, d, reason, n, want, zap.NamedError("cause", err))
		metrics.downloadAbort.WithLabelValues(reason).Inc()
		panic(http.ErrAbortHandler)
	}
	return nil
}

// cdnBody returns the bytes of the CDN's answer that go to the client, and
// how many there are (-1 when unknown). A CDN that ignored the range sends
// the whole file: the range is cut out of it here.
func (h *Handler) cdnBody(r *http.Request, d *download, resp *http.Response, guard *stallGuard) (io.Reader, int64, *apiError) {
	body := io.Reader(progressReader{resp.Body, guard})
	if d.rng != nil && resp.StatusCode == http.StatusOK {
		if resp.ContentLength >= 0 && resp.ContentLength != d.size {
			return nil, 0, errUpstreamBadAnswer.withCause(fmt.Errorf("cdn content-length %d, meta file_size %d", resp.ContentLength, d.size))
		}
		if _, err := io.CopyN(io.Discard, body, d.rng.Start); err != nil {
			if guard.stop(); guard.fired() {
				return nil, 0, errUpstreamTimeout.withCause(errors.New("the cdn stalled"))
			}
			return nil, 0, classifyTransportError(err)
		}
		return io.LimitReader(body, d.want), d.want, nil
	}
	if d.want >= 0 && resp.ContentLength >= 0 && d.rng == nil && resp.ContentLength != d.want {
		h.logDownloadAbort(r, d, "length_mismatch", 0, d.want)
		metrics.downloadAbort.WithLabelValues("length_mismatch").Inc()
		return nil, 0, errUpstreamBadAnswer.withCause(fmt.Errorf("cdn content-length %d, meta file_size %d", resp.ContentLength, d.want))
	}
	if d.want < 0 {
		return body, resp.ContentLength, nil // unknown size: trust the CDN's framing
	}
	return body, d.want, nil
}

// clearDownloadHeaders removes the headers of a file answer when an error
// envelope replaces it.
func clearDownloadHeaders(hdr http.Header) {
	for _, k := range []string{"Content-Type", "Content-Disposition", "Content-Length", "Content-Range",
		"ETag", "Repr-Digest", "Accept-Ranges", "Cache-Control", "Content-Security-Policy"} {
		hdr.Del(k)
	}
}

func (h *Handler) logDownloadAbort(r *http.Request, d *download, reason string, n, want int64, extra ...zap.Field) {
	level := zapcore.ErrorLevel
	if reason == "client_write" || r.Context().Err() != nil {
		level = zapcore.DebugLevel // the client went away: nothing is wrong here
	}
	if ce := h.logger.Check(level, "download broken off"); ce != nil {
		ce.Write(append([]zap.Field{
			zap.String("media_id", d.mediaID), zap.String("reason", reason),
			zap.String("meta_sha256", d.info.SHA256), zap.Int64("bytes_sent", n), zap.Int64("bytes_expected", want),
		}, extra...)...)
	}
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

// copyVerified copies src to w and checks that exactly want bytes came
// (when want >= 0) and that their SHA-256 is verify (when not nil). The
// last chunk read is written only once src has ended and everything has
// checked out, so a failed transfer never delivers the full length. It
// returns the bytes written and, when the copy failed, a reason for logs
// and metrics.
//
// Each chunk is written to the client whole, and hashed by a hasher
// goroutine while it is being written; writing smaller slices, or hashing
// in line, was measurably slower (BENCHMARKS.md has the figures). So the
// client side counts as moving for the stall guard once a chunk (up to
// copyBufferSize) is taken.
func copyVerified(w io.Writer, src io.Reader, want int64, verify []byte, guard *stallGuard) (written int64, reason string, err error) {
	// A ring of three buffers: one being read into, one being written
	// (and maybe still hashed), one that the hasher may still be reading.
	var ring [3]*[]byte
	for i := range ring {
		ring[i] = bufPool.Get().(*[]byte)
	}
	var hp *hashPipe
	if verify != nil {
		// A file of one chunk is hashed in line: a goroutine would cost
		// more than it saves.
		hp = newHashPipe(want >= 0 && want <= copyBufferSize)
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
// order they are sent, or in line.
type hashPipe struct {
	todo       chan []byte
	acks       chan struct{}
	sent, done int
	sum        []byte
	inline     hash.Hash // set when hashing in line
}

func newHashPipe(inline bool) *hashPipe {
	if inline {
		return &hashPipe{inline: sha256.New()}
	}
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
	if hp.inline != nil {
		hp.inline.Write(b)
		return
	}
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
	if hp.inline != nil {
		return hp.inline.Sum(nil)
	}
	close(hp.todo)
	for range hp.acks {
	}
	return hp.sum
}
