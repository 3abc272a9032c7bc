package whatsappmedia

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// Limits on the parts of a multipart upload other than the file.
const (
	maxParts      = 16
	maxPartHeader = 16 << 10
	maxFieldValue = 1 << 10
	// multipartOverhead bounds the bytes of a multipart upload that are not
	// file bytes (boundaries, part headers, small fields), so that a
	// Content-Length above max_size plus this proves the file too large.
	multipartOverhead = maxParts * (maxFieldValue + maxPartHeader)
)

// uploadData is the data of a successful upload answer.
type uploadData struct {
	MediaID  string `json:"mediaId"`
	MimeType string `json:"mimeType"`
	Size     int64  `json:"size"`
}

// serveUpload serves POST {prefix}/upload (contract section 5).
func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request) *apiError {
	if r.Method != http.MethodPost {
		return methodNotAllowed(http.MethodPost)
	}
	acct, ae := h.authenticate(r)
	if ae != nil {
		return ae
	}
	setAccountVars(r, acct)
	// Rule 5, when the phone number id comes in a header: before anything
	// about the body, in both modes.
	phone, _, ae := phoneFromHeaders(r.Header)
	if ae != nil {
		return ae
	}
	if phone != "" {
		if ae := authorizePhone(acct, phone); ae != nil {
			return ae
		}
		setPhoneVar(r, phone)
	}
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		if r.ContentLength > h.MaxSize+multipartOverhead {
			return errTooLarge
		}
		if params["boundary"] == "" {
			return validationError("multipart/form-data needs a boundary parameter")
		}
		return h.uploadMultipart(w, r, acct, phone)
	}
	return h.uploadRaw(w, r, acct, phone)
}

// phoneFromHeaders returns the phone number id given in X-Phone-Number-Id
// (or its alias header phoneNumberId), validated, and whether one was given.
func phoneFromHeaders(hdr http.Header) (string, bool, *apiError) {
	vals := hdr.Values("X-Phone-Number-Id")
	if len(vals) == 0 {
		vals = hdr.Values("phoneNumberId")
	}
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", true, validationError("X-Phone-Number-Id must be given once")
	}
	id := strings.TrimSpace(vals[0])
	if !isDigits(id, 64) {
		return "", true, validationError("phoneNumberId must be a Meta phone number id (digits only)")
	}
	return id, true, nil
}

// uploadRaw serves mode B: the body is the file. phone is the header's
// phone number id, already checked against the account.
func (h *Handler) uploadRaw(w http.ResponseWriter, r *http.Request, acct *Account, phone string) *apiError {
	if phone == "" {
		return validationError("X-Phone-Number-Id header is required")
	}
	if r.ContentLength > h.MaxSize {
		return errTooLarge
	}
	if r.ContentLength == 0 {
		return validationError("The request body (the file) is empty")
	}
	br := sniffReaders.get(r.Body)
	defer sniffReaders.put(br)
	in := media.Inputs{
		Override: r.Header.Get("X-Upload-Type"),
		PartType: r.Header.Get("Content-Type"),
		Filename: media.SanitizeFilename(r.Header.Get("X-Filename")),
		Head:     peeker(br),
	}
	mimeType, ae := resolveMIME(in)
	if ae != nil {
		return ae
	}
	return h.sendToMeta(w, r, acct, metaUpload{
		phone: phone, mimeType: mimeType, filename: in.Filename,
		file: br, size: r.ContentLength,
	})
}

// peeker returns a MIME sniffing source reading ahead in br.
func peeker(br *bufio.Reader) func() []byte {
	return func() []byte {
		head, _ := br.Peek(media.SniffLen) // a read error shows again on the next Read
		return head
	}
}

// form walks the parts of a multipart upload (mode A).
type form struct {
	h         *Handler
	acct      *Account
	mr        *multipart.Reader
	r         *http.Request
	body      *formBody
	phone     string
	typeField string
	parts     int
}

// nextFile reads parts up to the next file part, which it returns, or to
// the end of the form (nil). Small fields are read and checked on the
// way: rule 5 runs as soon as phoneNumberId is known.
func (f *form) nextFile() (*multipart.Part, *apiError) {
	for {
		part, err := f.mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if errors.Is(err, errFormTooLarge) {
			return nil, errFormOverhead.withCause(err)
		}
		if err != nil {
			return nil, errMalformedForm.withCause(err)
		}
		f.parts++
		if f.parts > maxParts {
			return nil, validationError("Too many parts in the multipart body")
		}
		if headerSize(part.Header) > maxPartHeader {
			return nil, validationError("A part's headers are too large")
		}
		name := part.FormName()
		switch name {
		case "file":
			return part, nil
		case "phoneNumberId":
			v, ae := readField(part, name)
			if ae != nil {
				return nil, ae
			}
			if !isDigits(v, 64) {
				return nil, validationError("phoneNumberId must be a Meta phone number id (digits only)")
			}
			if f.phone != "" && f.phone != v {
				return nil, validationError("phoneNumberId is given twice with different values")
			}
			if ae := authorizePhone(f.acct, v); ae != nil {
				return nil, ae
			}
			f.phone = v
			setPhoneVar(f.r, v)
		case "type":
			v, ae := readField(part, name)
			if ae != nil {
				return nil, ae
			}
			f.typeField = v
		default:
			// Unknown fields are tolerated (clients add their own) but
			// bounded like the known ones.
			if _, ae := readField(part, "a form field"); ae != nil {
				return nil, ae
			}
		}
	}
}

// rest reads the parts after the file part: another file is refused.
func (f *form) rest() *apiError {
	next, ae := f.nextFile()
	if ae != nil {
		return ae
	}
	if next != nil {
		return errTwoFiles
	}
	return nil
}

var (
	errMalformedForm = validationError("Malformed multipart/form-data body")
	errFormOverhead  = validationError("The multipart body's headers and fields are too large")
)

// headerSize is the size of a part's headers as sent, about.
func headerSize(h textproto.MIMEHeader) int {
	n := 0
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// readField reads a small form field's value, at most maxFieldValue bytes.
func readField(part *multipart.Part, name string) (string, *apiError) {
	buf := make([]byte, maxFieldValue+1)
	n, err := io.ReadFull(part, buf)
	switch {
	case n > maxFieldValue:
		return "", validationError(name + " is too long")
	case errors.Is(err, errFormTooLarge):
		return "", errFormOverhead.withCause(err)
	case err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF):
		return "", errMalformedForm.withCause(err)
	}
	return strings.TrimSpace(string(buf[:n])), nil
}

// uploadMultipart serves mode A. When phoneNumberId is known before the
// file part (from the header, or a field sent first, as curl, browsers and
// SDKs do), the file streams straight to Meta; otherwise the file part is
// spooled to a temporary file on disk, never to memory, until the rest of
// the form has named the phone number.
func (h *Handler) uploadMultipart(w http.ResponseWriter, r *http.Request, acct *Account, phone string) *apiError {
	// Everything but the file's bytes is bounded: part headers and
	// fields are parsed in memory.
	// mime/multipart reads through a 4 KiB buffer: without a large one
	// below it, every read from the client's connection is a 4 KiB
	// syscall, which cost a fifth of the upload's time (BENCHMARKS.md).
	br := largeReaders.get(r.Body)
	defer largeReaders.put(br)
	body := &formBody{r: readCloser{br, r.Body}, limit: multipartOverhead}
	r.Body = body
	mr, err := r.MultipartReader()
	if err != nil {
		return errMalformedForm.withCause(err)
	}
	f := &form{h: h, acct: acct, mr: mr, r: r, body: body, phone: phone}
	part, ae := f.nextFile()
	if ae != nil {
		return ae
	}
	if part == nil {
		if f.phone == "" {
			return validationError("phoneNumberId and file are required")
		}
		return validationError("file is required")
	}
	filename := media.SanitizeFilename(part.FileName())
	partType := part.Header.Get("Content-Type")
	body.inFile = true
	var src io.Reader = part
	if f.phone != "" {
		br := sniffReaders.get(part)
		defer sniffReaders.put(br)
		src = br
		mimeType, ae := resolveMIME(media.Inputs{
			PartType: partType, TypeField: f.typeField, Filename: filename, Head: peeker(br),
		})
		// The part's own type, or a type field already read, decides; a
		// type field later in the form could not change it.
		decided := !media.IsGeneric(media.Type(partType)) || f.typeField != ""
		if ae != nil && decided {
			return ae
		}
		if ae == nil {
			return h.sendToMeta(w, r, acct, metaUpload{
				phone: f.phone, mimeType: mimeType, filename: filename, file: br, size: -1,
				// Before the body to Meta is closed, read the rest of the
				// form: a second file, a broken form or a type field that
				// contradicts the type sent cancels the upload, so Meta
				// never stores a file from a request we refuse.
				finish: func() error {
					body.inFile = false
					if ae := f.rest(); ae != nil {
						return ae
					}
					if late := media.Type(f.typeField); !decided && !media.IsGeneric(late) && late != mimeType {
						return errLateType
					}
					return nil
				},
			})
		}
		// Neither the name nor the bytes tell the type, and a type field
		// may still follow the file: spool it, like a file sent before
		// phoneNumberId, and decide once the whole form is read.
	}

	spool, size, ae := h.spool(w, src)
	if ae != nil {
		return ae
	}
	defer spool.close()
	body.inFile = false
	if ae := f.rest(); ae != nil {
		return ae
	}
	if f.phone == "" {
		return validationError("phoneNumberId is required")
	}
	mimeType, ae := resolveMIME(media.Inputs{
		PartType: part.Header.Get("Content-Type"), TypeField: f.typeField,
		Filename: filename, Head: spool.head,
	})
	if ae != nil {
		return ae
	}
	if _, err := spool.f.Seek(0, io.SeekStart); err != nil {
		return errInternal.withCause(err)
	}
	return h.sendToMeta(w, r, acct, metaUpload{
		phone: f.phone, mimeType: mimeType, filename: filename, file: spool.f, size: size,
	})
}

var (
	errClientStalled = newError(http.StatusRequestTimeout, "REQUEST_TIMEOUT", "The upload stalled: no bytes arrived for too long")
	errTwoFiles      = validationError("Only one file part is allowed")
	errLateType      = validationError("The type field contradicts the file's type; send type before the file part")
)

// spoolFile is a file part held on disk.
type spoolFile struct {
	f    *os.File
	name string // set while the file still has a name to remove
}

// spool copies a file part to a temporary file, at most max_size bytes.
// On systems that allow it the file is unlinked at once, so that nothing
// is left behind even if the process dies.
func (h *Handler) spool(w http.ResponseWriter, part io.Reader) (*spoolFile, int64, *apiError) {
	f, err := os.CreateTemp(h.SpoolDir, "whatsapp-media-*.upload")
	if err != nil {
		return nil, 0, errInternal.withCause(err)
	}
	metrics.spooled.Inc()
	s := &spoolFile{f: f, name: f.Name()}
	if os.Remove(s.name) == nil {
		s.name = ""
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	// A client that stops sending is cut off after stall_timeout.
	guard := newStallGuard(time.Duration(h.StallTimeout), func() {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	})
	lr := &limitReader{r: progressReader{part, guard}, max: h.MaxSize}
	n, err := io.CopyBuffer(writerOnly{f}, lr, *bp)
	if guard.stop() {
		s.close()
		return nil, 0, errClientStalled
	}
	if err != nil {
		s.close()
		if errors.Is(err, errFileTooLarge) {
			return nil, 0, errTooLarge
		}
		if errors.Is(err, errFormTooLarge) {
			return nil, 0, errFormOverhead.withCause(err)
		}
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, 0, errInternal.withCause(err)
		}
		return nil, 0, errMalformedForm.withCause(err)
	}
	return s, n, nil
}

func (s *spoolFile) head() []byte {
	b := make([]byte, media.SniffLen)
	n, _ := s.f.ReadAt(b, 0)
	return b[:n]
}

func (s *spoolFile) close() {
	_ = s.f.Close()
	if s.name != "" {
		_ = os.Remove(s.name)
	}
}

// metaUpload is a file ready to go to Meta.
type metaUpload struct {
	phone    string
	mimeType string
	filename string
	file     io.Reader
	size     int64 // -1 when unknown
	// finish, if set, runs when the file's bytes have been read, before
	// the multipart body to Meta is closed; its error cancels the upload.
	finish func() error
}

// sendToMeta streams u to Meta's POST /{phone-number-id}/media and writes
// the answer. The multipart body to Meta is a fixed prefix (the
// messaging_product and type fields and the file part's headers), the
// file's bytes read straight from the client, and a fixed suffix: no
// goroutine and no copy between the client's body and the transport, and
// when the file's size is known the exact Content-Length follows from the
// prefix and suffix.
func (h *Handler) sendToMeta(w http.ResponseWriter, r *http.Request, acct *Account, u metaUpload) *apiError {
	prefix, suffix, contentType := media.Frame(u.mimeType, u.filename)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	// The stall guard: no byte taken from the client, or taken by Meta,
	// for stall_timeout cancels the request to Meta. Which side stalled
	// decides the answer. Every read from the client counts as progress,
	// so a slow but steady client is never cut off.
	var clientStalled atomic.Bool
	body := &requestBody{}
	guard := newStallGuard(time.Duration(h.StallTimeout), func() {
		if body.reading.Load() {
			// net/http's transport, once cancelled, still waits for its
			// body Read to return: release it.
			clientStalled.Store(true)
			_ = http.NewResponseController(w).SetReadDeadline(time.Now())
		}
		cancel()
	})
	defer guard.stop()
	body.guard = guard
	file := &limitReader{r: fillReader{progressReader{u.file, guard}}, max: h.MaxSize}
	readers := []io.Reader{bytes.NewReader(prefix), file}
	if u.finish != nil {
		readers = append(readers, &funcReader{fn: u.finish})
	}
	readers = append(readers, strings.NewReader(suffix))
	body.r = io.MultiReader(readers...)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.graphBase+"/"+u.phone+"/media", body)
	if err != nil {
		return errInternal.withCause(err)
	}
	req.ContentLength = -1
	if u.size >= 0 {
		req.ContentLength = int64(len(prefix)) + u.size + int64(len(suffix))
	}
	req.Header = http.Header{
		"Authorization": {"Bearer " + acct.MetaToken},
		"Content-Type":  {contentType},
		"User-Agent":    {userAgent},
		"Accept":        {"application/json"},
	}
	start := time.Now()
	resp, err := h.client.Do(req)
	if resp != nil {
		defer resp.Body.Close()
		observeUpstream("graph", start)
	}
	// Our own refusals (too large, a broken form, a second file) win over
	// whatever Meta made of the aborted body.
	bodyErr := body.stop(w)
	metrics.bytes.WithLabelValues("upload").Add(float64(file.n))
	if guard.stop() {
		if clientStalled.Load() {
			return errClientStalled
		}
		return errUpstreamTimeout.withCause(errors.New("meta took no bytes for stall_timeout"))
	}
	if bodyErr != nil && !errors.Is(bodyErr, io.EOF) && !errors.Is(bodyErr, errBodyStopped) {
		cancel()
		var ae *apiError
		switch {
		case errors.Is(bodyErr, errFileTooLarge):
			return errTooLarge
		case errors.As(bodyErr, &ae):
			return ae
		default:
			return clientBodyError(bodyErr)
		}
	}
	if err != nil {
		return classifyTransportError(err)
	}
	if ce := h.logger.Check(zapcore.DebugLevel, "meta upload answered"); ce != nil {
		ce.Write(zap.String("phone_number_id", u.phone), zap.Int("status", resp.StatusCode),
			zap.Duration("duration", time.Since(start)), zap.Int64("bytes", file.n))
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return upstreamAnswerError(resp)
	}
	// Never report a file as uploaded that was not sent in full. With a
	// Content-Length, Meta may answer before the transport's final Read
	// sees EOF, so there the file's byte count is what tells.
	if sent := errors.Is(bodyErr, io.EOF) || (u.size >= 0 && file.n == u.size); !sent {
		return errUpstreamBadAnswer.withCause(errors.New("meta answered before the whole file was sent"))
	}
	var answer struct {
		ID string `json:"id"`
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxMetaErrorBody))
	if err != nil {
		return classifyTransportError(err)
	}
	if json.Unmarshal(raw, &answer) != nil || !isDigits(answer.ID, 64) {
		return errUpstreamBadAnswer.withCause(errors.New("meta upload answer has no media id"))
	}
	setMediaVars(r, answer.ID, file.n)
	writeSuccess(w, uploadData{MediaID: answer.ID, MimeType: u.mimeType, Size: file.n})
	return nil
}

// clientBodyError answers a request whose body could not be read: it
// ended early, was malformed, or the client went away.
func clientBodyError(err error) *apiError {
	return validationError("The request body could not be read in full").withCause(err)
}
