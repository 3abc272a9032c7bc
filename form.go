package whatsappmedia

import (
	"errors"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"strings"

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

var (
	errMalformedForm = validationError("Malformed multipart/form-data body")
	errFormOverhead  = validationError("The multipart body's headers and fields are too large")
	errTwoFiles      = validationError("Only one file part is allowed")
	errLateType      = validationError("The type field contradicts the file's type; send type before the file part")
)

// form walks the parts of a multipart upload (mode A). Everything but the
// file's bytes is bounded: part headers and fields are parsed in memory.
type form struct {
	acct      *Account
	r         *http.Request
	mr        *multipart.Reader
	body      *formOverhead
	phone     string
	typeField string
	parts     int
	sawFile   bool // the file part has been read
}

// newForm reads r's multipart body through br (a buffered reader over
// r.Body). phone is the header's phone number id, if any.
func newForm(r *http.Request, br io.Reader, acct *Account, phone string) (*form, *apiError) {
	body := &formOverhead{r: readCloser{br, r.Body}, limit: multipartOverhead}
	r.Body = body
	mr, err := r.MultipartReader()
	if err != nil {
		return nil, errMalformedForm.withCause(err)
	}
	return &form{acct: acct, r: r, mr: mr, body: body, phone: phone}, nil
}

// nextFile reads parts up to the next file part, which it returns, or to
// the end of the form (nil). Small fields are read and checked on the
// way: phoneNumberId is checked against the account as soon as it is read.
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
		var ae *apiError
		switch name := part.FormName(); name {
		case "file":
			f.body.inFile, f.sawFile = true, true
			return part, nil
		case "phoneNumberId":
			ae = f.readPhone(part)
		case "type":
			f.typeField, ae = readField(part, name)
		default:
			switch {
			case part.FileName() != "" && f.sawFile:
				return nil, errTwoFiles
			case part.FileName() != "":
				return nil, misnamedFilePart(name)
			}
			// Unknown fields are tolerated (clients add their own) but
			// bounded like the known ones.
			_, ae = readField(part, "a form field ("+boundedName(name)+`; a file goes in the part named "file")`)
		}
		if ae != nil {
			return nil, ae
		}
	}
}

// readPhone reads the phoneNumberId field and checks it against the
// account and the header's.
func (f *form) readPhone(part *multipart.Part) *apiError {
	v, ae := readField(part, "phoneNumberId")
	switch {
	case ae != nil:
		return ae
	case !validPhoneID(v):
		return errBadPhoneID
	case f.phone != "" && f.phone != v:
		return validationError("phoneNumberId is given twice with different values")
	}
	if ae := authorizePhone(f.acct, v); ae != nil {
		return ae
	}
	f.phone = v
	setPhoneVar(f.r, v)
	return nil
}

// rest reads the parts after the file part: another file is refused.
func (f *form) rest() *apiError {
	f.body.inFile = false
	next, ae := f.nextFile()
	if ae != nil {
		return ae
	}
	if next != nil {
		return errTwoFiles
	}
	return nil
}

// finish returns the check of a streamed file's form, run before the body
// to Meta is closed: a second file, a broken form or a type field that
// would have refused the file had it come first cancels the upload, so
// Meta never stores a file from a request the gateway refuses. decided
// says whether the type sent was decided by the part's own type or an
// earlier type field; a type field after the file then only has to make
// sense: a MIME type or a kind, the kind the file's (as it would be
// before the file), and never junk (400).
func (f *form) finish(mimeType string, decided bool) func() error {
	return func() error {
		if ae := f.rest(); ae != nil {
			return ae
		}
		field := f.typeField
		kind := media.Kind(field)
		switch {
		case field == "":
		case kind == "" && media.Type(field) == "":
			return errBadTypeField
		case !decided && media.HintExcludes(field, mimeType):
			return errLateType
		case kind != "" && !media.InKind(kind, mimeType):
			return wrongKindError(&media.KindError{Kind: kind, Type: mimeType})
		}
		return nil
	}
}

// misnamedFilePart answers a file sent in a part with another name than
// "file" (a client's default such as "media" or "upload").
func misnamedFilePart(name string) *apiError {
	return validationError(`The file must be sent in a part named "file"; this one is named "` + boundedName(name) + `"`)
}

// boundedName is a part's name for a message: at most 64 bytes of it.
func boundedName(name string) string {
	if len(name) > 64 {
		return strings.ToValidUTF8(name[:64], "") + "..."
	}
	return name
}

// partFilename is the file part's name, made safe. A plain filename is
// percent-decoded (media.DecodeFilename); a filename* (RFC 5987), which
// mime/multipart has already decoded, takes precedence and is kept as is.
func partFilename(part *multipart.Part) string {
	name := part.FileName()
	if !strings.Contains(strings.ToLower(part.Header.Get("Content-Disposition")), "filename*") {
		name = media.DecodeFilename(name)
	}
	return media.SanitizeFilename(name)
}

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

// errFormTooLarge is returned by a formBody whose non-file bytes passed
// its limit.
var errFormTooLarge = errors.New("multipart overhead exceeds its limit")

// formOverhead counts the bytes of a multipart body that are not the file's
// (boundaries, part headers, fields) and fails once they pass limit, so
// that mime/multipart never buffers large part headers. The multipart
// reader reads a few KiB ahead, so the count is approximate by that much.
type formOverhead struct {
	r        io.ReadCloser
	limit    int64
	overhead int64
	inFile   bool // while the file part is read, bytes are not counted
}

func (f *formOverhead) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if !f.inFile {
		f.overhead += int64(n)
		if f.overhead > f.limit {
			return n, errFormTooLarge
		}
	}
	return n, err
}

func (f *formOverhead) Close() error { return f.r.Close() }

// readCloser reads from a Reader and closes a Closer: a buffered reader
// over a request body, with the body's Close.
type readCloser struct {
	io.Reader
	io.Closer
}
