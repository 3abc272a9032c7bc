package whatsappmedia

import (
	"bufio"
	"context"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
	"github.com/dustin/go-humanize"
)

// uploadData is the data of a successful upload answer.
type uploadData struct {
	MediaID  string `json:"mediaId"`
	MimeType string `json:"mimeType"`
	Size     int64  `json:"size"`
}

// serveUpload serves POST {prefix}/upload for an account that passed
// access rules 1 to 4. The file comes as a multipart form (mode A) or as
// the request body itself (mode B).
func (h *Handler) serveUpload(w http.ResponseWriter, r *http.Request, acct *Account) *apiError {
	pre := h.startPrelude(w, r)
	defer pre.end()
	ae := h.receiveUpload(w, r, acct, pre)
	if ae != nil && pre.stalled() {
		return errClientStalled // the read that failed was cut off by the prelude's guard
	}
	return ae
}

// receiveUpload tells the upload's mode and serves it: a multipart form
// (mode A), a JSON body naming a URL (url_upload.go), or the file itself
// (mode B).
func (h *Handler) receiveUpload(w http.ResponseWriter, r *http.Request, acct *Account, pre *prelude) *apiError {
	// A phone number id in a header is checked before anything about the
	// body, in both modes.
	phone, given, ae := phoneFromHeaders(r.Header)
	if ae != nil {
		return ae
	}
	if given {
		if ae := authorizePhone(acct, phone); ae != nil {
			return ae
		}
		setPhoneVar(r, phone)
	}
	ct, params, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "application/json" && h.origins != nil {
		return h.uploadFromURL(w, r, acct, phone, pre)
	}
	if ct == "multipart/form-data" {
		if r.ContentLength > h.MaxSize+multipartOverhead {
			return errTooLarge
		}
		if params["boundary"] == "" {
			return validationError("multipart/form-data needs a boundary parameter")
		}
		return h.uploadMultipart(w, r, acct, phone, pre)
	}
	return h.uploadRaw(w, r, acct, phone, pre)
}

// phoneFromHeaders returns the phone number id given in X-Phone-Number-Id
// (or its alias header phoneNumberId), and whether one was given.
func phoneFromHeaders(hdr http.Header) (string, bool, *apiError) {
	vals := hdr.Values("X-Phone-Number-Id")
	if len(vals) == 0 {
		vals = hdr.Values("phoneNumberId")
	}
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
		return strings.TrimSpace(vals[0]), true, nil
	default:
		return "", true, validationError("X-Phone-Number-Id must be given once")
	}
}

// uploadRaw serves mode B: the body is the file. phone is the header's
// phone number id, already checked against the account.
func (h *Handler) uploadRaw(w http.ResponseWriter, r *http.Request, acct *Account, phone string, pre *prelude) *apiError {
	if phone == "" {
		return validationError("X-Phone-Number-Id header is required")
	}
	if r.ContentLength > h.MaxSize {
		return errTooLarge
	}
	if r.ContentLength == 0 {
		return errEmptyFile
	}
	br := sniffReaders.get(r.Body)
	defer sniffReaders.put(br)
	in := media.Inputs{
		Override: r.Header.Get("X-Upload-Type"),
		PartType: r.Header.Get("Content-Type"),
		Filename: media.SanitizeFilename(media.DecodeFilename(r.Header.Get("X-Filename"))),
		Head:     peeker(br),
	}
	mimeType, ae := resolveFileType(in, br, r.ContentLength > 0)
	if ae != nil {
		return ae
	}
	return h.sendToMeta(w, r, acct, metaUpload{phone: phone, head: in.Head, prelude: pre, file: metaFile{
		mimeType: mimeType, filename: in.Filename, body: br, size: r.ContentLength,
	}})
}

// peeker returns a MIME sniffing source reading ahead in br.
func peeker(br *bufio.Reader) func() []byte {
	return func() []byte {
		head, _ := br.Peek(media.SniffLen) // a read error shows again on the next Read
		return head
	}
}

// uploadMultipart serves mode A. When phoneNumberId is known before the
// file part (from the header, or a field sent first, as curl, browsers and
// SDKs do), the file streams straight to Meta; otherwise it is spooled.
func (h *Handler) uploadMultipart(w http.ResponseWriter, r *http.Request, acct *Account, phone string, pre *prelude) *apiError {
	// mime/multipart reads through a 4 KiB buffer: without a large one
	// below it, every read from the client's connection would be a 4 KiB
	// syscall (BENCHMARKS.md measures the difference).
	br := largeReaders.get(r.Body)
	defer largeReaders.put(br)
	f, ae := newForm(r, br, acct, phone)
	if ae != nil {
		return ae
	}
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
	in := media.Inputs{PartType: part.Header.Get("Content-Type"), Filename: partFilename(part)}
	src := sniffReaders.get(part)
	defer sniffReaders.put(src)
	if f.phone != "" {
		// The part's own type, or a type field already read, decides; a
		// type field later in the form could not change it.
		decided := !media.IsGeneric(media.Type(in.PartType)) || f.typeField != ""
		in.TypeField, in.Head = f.typeField, peeker(src)
		mimeType, ae := resolveFileType(in, src, false)
		if ae == nil {
			return h.sendToMeta(w, r, acct, metaUpload{
				phone:   f.phone,
				head:    in.Head,
				prelude: pre,
				file:    metaFile{mimeType: mimeType, filename: in.Filename, body: src, size: -1},
				finish:  f.finish(mimeType, decided),
			})
		}
		if decided || ae == errEmptyFile {
			return ae
		}
		// Neither the name nor the bytes tell the type, and a type field
		// may still follow the file: spool it, like a file sent before
		// phoneNumberId, and decide once the whole form is read.
	}
	return h.uploadSpooled(w, r, acct, f, in, src, pre)
}

// uploadSpooled serves a form whose file part must wait for the rest of
// the form (for phoneNumberId, or a type field): the file goes to a
// temporary file on disk, never to memory, and from there to Meta.
func (h *Handler) uploadSpooled(w http.ResponseWriter, r *http.Request, acct *Account, f *form, in media.Inputs, file io.Reader, pre *prelude) *apiError {
	// The prelude's guard stays on through the spool (which has its own,
	// on the same client reads) and the rest of the form, until the
	// transfer to Meta begins.
	res, ae := h.reserveSpool(r, acct)
	if ae != nil {
		return ae
	}
	defer res.release()
	spool, size, ae := h.spool(w, file, res)
	if ae != nil {
		return ae
	}
	defer spool.close()
	if ae := f.rest(); ae != nil {
		return ae
	}
	if f.phone == "" {
		return validationError("phoneNumberId is required")
	}
	if size == 0 {
		return errEmptyFile
	}
	in.TypeField, in.Head = f.typeField, spool.head
	mimeType, ae := resolveMIME(in)
	if ae != nil {
		return ae
	}
	if _, err := spool.f.Seek(0, io.SeekStart); err != nil {
		return errInternal.withCause(err)
	}
	return h.sendToMeta(w, r, acct, metaUpload{phone: f.phone, head: spool.head, prelude: pre, file: metaFile{
		mimeType: mimeType, filename: in.Filename, body: spool.f, size: size,
	}})
}

// metaUpload is a file ready to go to Meta.
type metaUpload struct {
	phone string
	file  metaFile
	// head returns the file's first bytes (media.SniffLen of them), for
	// checking the type declared against them.
	head func() []byte
	// finish, if set, runs when the file's bytes have been read, before
	// the multipart body to Meta is closed; its error cancels the upload.
	finish func() error
	// prelude is the guard of the reads before the transfer, ended when
	// the transfer's own guard takes over.
	prelude *prelude
	// origin, for an upload from a URL, is the fetch whose body is the
	// file (url_upload.go).
	origin *originFetch
}

// sendToMeta streams u to Meta and writes the answer. A file whose length
// is known is checked against its size limit and for emptiness first, so
// that a raw body with a Content-Length is refused before one byte of it
// is read; one whose length is not known is cut off the moment it crosses
// the limit. Then its first bytes must not contradict its type, and its
// bytes must keep WhatsApp's delivery rules (formats.go).
func (h *Handler) sendToMeta(w http.ResponseWriter, r *http.Request, acct *Account, u metaUpload) *apiError {
	limit, tooLarge := h.sizeLimit(u.file.mimeType)
	switch {
	case u.file.size > limit:
		return tooLarge
	case u.file.size == 0:
		return errEmptyFile
	}
	head := u.head()
	u.prelude.end() // the first bytes are read: the transfer's guard takes over
	if detected, bad := media.Contradicts(u.file.mimeType, head); bad {
		msg := "The file was sent as " + u.file.mimeType + ", but its bytes are " + detected
		if detected == "" {
			msg = "The file was sent as " + u.file.mimeType + ", but its bytes do not begin as every " + u.file.mimeType + " file does"
		}
		return newError(http.StatusUnsupportedMediaType, codeUnsupportedType, msg)
	}
	probe, ae := h.checkFormat(u.file.mimeType, u.file.size, head)
	if ae != nil {
		return ae
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	c := h.newClientFile(w, u, limit, cancel, probe)
	defer c.guard.stop()
	body := u.file
	body.body = c.body
	start := time.Now()
	resp, err := h.graph.upload(ctx, acct.MetaToken, u.phone, body)
	if resp != nil {
		defer resp.Body.Close()
	}
	// Our own refusals (too large, a broken form, a second file, a
	// stalled client) win over whatever Meta made of the aborted body.
	sent, ae := c.end(w, u.file.size, h.lingerIdle(), tooLarge)
	if ae != nil {
		return ae
	}
	if err != nil {
		return classifyTransportError(err)
	}
	if ce := h.logger.Check(zapcore.DebugLevel, "meta upload answered"); ce != nil {
		ce.Write(zap.String("phone_number_id", u.phone), zap.Int("status", resp.StatusCode),
			zap.Duration("duration", time.Since(start)), zap.Int64("bytes", c.file.n))
	}
	id, ae := uploadAnswer(resp, sent)
	if ae != nil {
		return ae
	}
	setMediaVars(r, id, c.file.n)
	writeSuccess(w, uploadData{MediaID: id, MimeType: u.file.mimeType, Size: c.file.n})
	return nil
}

// sizeLimit returns the most bytes a file of type mimeType may have, and
// the answer for one that has more: max_size, or Meta's ceiling for the
// type where that is lower (unless disable_type_ceilings is set).
func (h *Handler) sizeLimit(mimeType string) (int64, *apiError) {
	if c := media.Ceiling(mimeType); c > 0 && c < h.MaxSize && !h.DisableTypeCeilings {
		return c, newError(http.StatusRequestEntityTooLarge, codePayloadTooLarge,
			"Files of type "+mimeType+" may be at most "+humanize.IBytes(uint64(c))+" (Meta's limit for the type)")
	}
	return h.MaxSize, errTooLarge
}
