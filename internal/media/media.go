// Package media holds the gateway's pure, dependency-free logic about
// media files: MIME types, file names, byte ranges, and the multipart
// framing of an upload to Meta. It imports nothing from Caddy, so that its
// fuzz targets run at full speed.
package media

import (
	"errors"
	"mime"
	"path"
	"strings"
)

// supportedTypes are the MIME types WhatsApp accepts for media, each with
// the extension used for download file names.
var supportedTypes = map[string]string{
	"audio/aac":                     ".aac",
	"audio/amr":                     ".amr",
	"audio/mpeg":                    ".mp3",
	"audio/mp4":                     ".m4a",
	"audio/ogg":                     ".ogg",
	"audio/opus":                    ".opus",
	"text/plain":                    ".txt",
	"application/pdf":               ".pdf",
	"application/msword":            ".doc",
	"application/vnd.ms-excel":      ".xls",
	"application/vnd.ms-powerpoint": ".ppt",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   ".docx",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         ".xlsx",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
	"image/jpeg": ".jpg",
	"image/png":  ".png",
	"image/webp": ".webp",
	"video/mp4":  ".mp4",
	"video/3gpp": ".3gp",
	"video/3gp":  ".3gp",
}

// typesByExtension maps file name extensions to MIME types. It is our own
// table rather than mime.TypeByExtension, whose answers depend on the
// machine's mime.types files.
var typesByExtension = map[string]string{
	".aac": "audio/aac", ".amr": "audio/amr", ".mp3": "audio/mpeg",
	".m4a": "audio/mp4", ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg",
	".txt": "text/plain", ".pdf": "application/pdf",
	".doc": "application/msword", ".xls": "application/vnd.ms-excel",
	".ppt":  "application/vnd.ms-powerpoint",
	".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
	".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
	".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
	".jpg":  "image/jpeg", ".jpeg": "image/jpeg", ".jpe": "image/jpeg", ".png": "image/png",
	".webp": "image/webp", ".mp4": "video/mp4", ".3gp": "video/3gpp",
	// Common types WhatsApp refuses: knowing them answers 415 rather than
	// guessing from the bytes.
	".gif": "image/gif", ".bmp": "image/bmp", ".svg": "image/svg+xml", ".tif": "image/tiff",
	".tiff": "image/tiff", ".heic": "image/heic", ".mov": "video/quicktime",
	".webm": "video/webm", ".avi": "video/x-msvideo", ".wav": "audio/wav",
	".zip": "application/zip", ".html": "text/html", ".htm": "text/html",
	".json": "application/json", ".csv": "text/csv", ".exe": "application/octet-stream",
}

// Supported reports whether WhatsApp accepts files of type t.
func Supported(t string) bool {
	_, ok := supportedTypes[t]
	return ok
}

// IsGeneric reports whether t says nothing about the file's format.
// application/x-www-form-urlencoded is here because curl's --data-binary
// sends it when the caller gives no Content-Type.
func IsGeneric(t string) bool {
	switch t {
	case "", "application/octet-stream", "binary/octet-stream",
		"application/x-www-form-urlencoded", "application/unknown":
		return true
	}
	return false
}

// Type returns the lowercase type/subtype of a MIME value, without
// parameters, or "" when v is not a well-formed MIME type.
func Type(v string) string {
	v = strings.TrimSpace(v)
	if v == "" {
		return ""
	}
	t, _, err := mime.ParseMediaType(v)
	if err != nil {
		// Tolerate broken parameters, but not a broken type.
		base, _, _ := strings.Cut(v, ";")
		t, _, err = mime.ParseMediaType(base)
		if err != nil {
			return ""
		}
	}
	if !strings.Contains(t, "/") {
		return ""
	}
	return t
}

// Inputs are the clues to a file's MIME type, in the order of precedence.
type Inputs struct {
	Override  string // X-Upload-Type (mode B)
	PartType  string // the file part's or raw body's Content-Type
	TypeField string // the multipart `type` field (mode A)
	Filename  string
	// Head returns the file's first bytes, for sniffing. It is called
	// only when nothing else names a type.
	Head func() []byte
}

// Errors of Resolve.
var (
	ErrBadOverride  = errors.New("the override is neither a media kind nor a MIME type")
	ErrBadTypeField = errors.New("the type field is neither a media kind nor a MIME type")
	ErrUndetermined = errors.New("the file's type could not be determined")
)

// KindError is a file whose type is not of the media kind it was sent as.
type KindError struct{ Kind, Type string }

func (e *KindError) Error() string {
	return "The file's type, " + e.Type + ", is not a WhatsApp " + e.Kind + " type"
}

// UnsupportedError is a MIME type WhatsApp does not accept.
type UnsupportedError struct{ Type string }

func (e *UnsupportedError) Error() string { return "WhatsApp does not accept files of type " + e.Type }

// Resolve picks the MIME type to send to Meta: the first specific type
// among the override, the part or body type, the type field and the
// filename's extension; failing those, the detected type. A generic type
// is never returned. The override or the type field may name a media kind
// (image, video, audio, document, sticker) instead of a type: the type
// then comes from the other clues, and must be of that kind.
func Resolve(in Inputs) (string, error) {
	kind := ""
	if k := Kind(in.Override); k != "" {
		kind, in.Override = k, ""
	}
	if k := Kind(in.TypeField); k != "" {
		kind, in.TypeField = k, ""
	} else if strings.TrimSpace(in.TypeField) != "" && Type(in.TypeField) == "" {
		return "", ErrBadTypeField
	}
	t, err := resolveType(in)
	t = MetaName(t)
	if err == nil && kind != "" && !InKind(kind, t) {
		return "", &KindError{Kind: kind, Type: t}
	}
	return t, err
}

// metaNames are the names Meta takes for types that clients name
// otherwise: Meta refuses audio/opus (an Opus voice note is audio/ogg to
// it) and knows 3GPP video only as video/3gpp (docs/meta.md).
var metaNames = map[string]string{"audio/opus": "audio/ogg", "video/3gp": "video/3gpp"}

// MetaName returns the name Meta takes for type t: t itself, or the name
// Meta renamed it to.
func MetaName(t string) string {
	if n, ok := metaNames[t]; ok {
		return n
	}
	return t
}

// HintExcludes reports whether a type hint (a type field, a kind) rules
// out type t: a kind t is not of, or another specific type.
func HintExcludes(hint, t string) bool {
	if k := Kind(hint); k != "" {
		return !InKind(k, t)
	}
	h := MetaName(Type(hint))
	return !IsGeneric(h) && h != MetaName(t)
}

func resolveType(in Inputs) (string, error) {
	if in.Override != "" {
		t := Type(in.Override)
		if t == "" {
			return "", ErrBadOverride
		}
		if !IsGeneric(t) {
			return checkSupported(t)
		}
	}
	for _, v := range []string{in.PartType, in.TypeField} {
		if t := Type(v); !IsGeneric(t) {
			return checkSupported(t)
		}
	}
	if ext := strings.ToLower(path.Ext(in.Filename)); ext != "" {
		if t, ok := typesByExtension[ext]; ok && !IsGeneric(t) {
			return checkSupported(t)
		}
	}
	if in.Head != nil {
		if t := Detect(in.Head()); t != "" {
			return checkSupported(t)
		}
	}
	return "", ErrUndetermined
}

func checkSupported(t string) (string, error) {
	if !Supported(t) {
		return "", &UnsupportedError{Type: t}
	}
	return t, nil
}

// InlineSafe reports whether a browser may show a file of type t inline
// from the API's origin: images but SVG (which runs script), audio, video
// and PDF. Anything else is served as an attachment.
func InlineSafe(t string) bool {
	t = Type(t)
	switch {
	case t == "application/pdf":
		return true
	case strings.HasPrefix(t, "image/"):
		return t != "image/svg+xml" && !strings.Contains(t, "xml")
	}
	return strings.HasPrefix(t, "audio/") || strings.HasPrefix(t, "video/")
}

// Extension returns the usual file name extension of a MIME type, ".bin"
// when there is none we trust.
func Extension(ctype string) string {
	t := Type(ctype)
	if ext, ok := supportedTypes[t]; ok {
		return ext
	}
	if exts, err := mime.ExtensionsByType(t); err == nil && len(exts) > 0 && isSafeExt(exts[0]) {
		return exts[0]
	}
	return ".bin"
}

func isSafeExt(ext string) bool {
	if len(ext) < 2 || len(ext) > 10 || ext[0] != '.' {
		return false
	}
	for _, c := range ext[1:] {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
