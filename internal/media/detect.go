package media

import (
	"bytes"
	"slices"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// The file's own bytes are read by github.com/gabriel-vasile/mimetype, a
// well-kept detector that knows the containers WhatsApp media come in
// (ISO-BMFF brands, AAC, AMR, Ogg codecs, OLE and OOXML documents), where
// net/http's DetectContentType knows few of them.

// Kinds are WhatsApp's media kinds, each with the types it takes. A kind
// given as a type hint (X-Upload-Type: image, -F type=document) restricts
// the file's type to its kind's.
var kinds = map[string][]string{
	"image":   {"image/jpeg", "image/png"},
	"sticker": {"image/webp"},
	"video":   {"video/mp4", "video/3gpp", "video/3gp"},
	"audio":   {"audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg", "audio/opus"},
	"document": {"text/plain", "application/pdf", "application/msword", "application/vnd.ms-excel",
		"application/vnd.ms-powerpoint",
		"application/vnd.openxmlformats-officedocument.wordprocessingml.document",
		"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
		"application/vnd.openxmlformats-officedocument.presentationml.presentation"},
}

// Kind returns the media kind v names (case-insensitive), or "".
func Kind(v string) string {
	k := strings.ToLower(strings.TrimSpace(v))
	if _, ok := kinds[k]; ok {
		return k
	}
	return ""
}

// InKind reports whether type t belongs to kind k.
func InKind(k, t string) bool { return slices.Contains(kinds[k], t) }

// families groups the types that share a container, so that the bytes of
// one are not taken as evidence against another: an M4A is an MP4 to a
// detector, a .docx a ZIP, a .doc any OLE compound file.
var families = map[string]string{
	"video/mp4": "iso-bmff", "video/3gpp": "iso-bmff", "video/3gp": "iso-bmff", "video/3gpp2": "iso-bmff",
	"audio/mp4": "iso-bmff", "audio/x-m4a": "iso-bmff", "audio/x-m4b": "iso-bmff", "video/quicktime": "iso-bmff",
	"video/x-m4v": "iso-bmff",
	"audio/ogg":   "ogg", "audio/opus": "ogg", "application/ogg": "ogg", "video/ogg": "ogg",
	"application/zip": "zip",
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   "zip",
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         "zip",
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": "zip",
	"application/x-ole-storage": "ole", "application/msword": "ole", "application/vnd.ms-excel": "ole",
	"application/vnd.ms-powerpoint": "ole",
}

func family(t string) string {
	if f, ok := families[t]; ok {
		return f
	}
	return t
}

// detectedAliases maps what the detector names a type to the name
// WhatsApp knows it by.
var detectedAliases = map[string]string{
	"audio/x-m4a": "audio/mp4", "application/ogg": "audio/ogg", "audio/x-opus+ogg": "audio/ogg",
}

// Detect returns the type of a file's first bytes, "" when the detector
// knows nothing more specific than binary.
func Detect(head []byte) string {
	if len(head) == 0 {
		return ""
	}
	t := Type(mimetype.Detect(head).String())
	if alias, ok := detectedAliases[t]; ok {
		t = alias
	}
	if IsGeneric(t) {
		return ""
	}
	return t
}

// signatures are the leading bytes that files of a type must have: their
// formats make them mandatory, so that bytes without them are not of the
// type whatever else they are.
var signatures = map[string]func([]byte) bool{
	"image/jpeg":      func(b []byte) bool { return bytes.HasPrefix(b, []byte{0xFF, 0xD8, 0xFF}) },
	"image/png":       func(b []byte) bool { return bytes.HasPrefix(b, []byte("\x89PNG\r\n\x1a\n")) },
	"image/webp":      func(b []byte) bool { return len(b) >= 12 && string(b[:4]) == "RIFF" && string(b[8:12]) == "WEBP" },
	"application/pdf": func(b []byte) bool { return bytes.Contains(b[:min(len(b), 1024)], []byte("%PDF-")) },
	"video/mp4":       func(b []byte) bool { return len(b) >= 8 && string(b[4:8]) == "ftyp" },
}

// textRefused are the detected types a file declared text/plain may not
// be: programs, archives and markup a browser or a shell would run.
var textRefused = []string{
	"application/x-executable", "application/x-elf", "application/vnd.microsoft.portable-executable",
	"application/x-mach-binary", "application/x-msdownload", "application/x-sharedlib",
	"application/zip", "application/gzip", "application/x-gzip", "application/x-7z-compressed",
	"application/x-rar-compressed", "application/x-tar", "application/x-bzip2", "application/x-xz",
	"application/zstd", "text/html", "image/svg+xml", "text/xml", "application/xml", "application/xhtml+xml",
	"text/x-shellscript", "text/x-python", "text/x-python3", "text/x-php", "text/x-perl", "text/x-lua",
	"text/x-tcl", "text/javascript", "application/javascript", "application/x-ole-storage", "application/x-ms-installer",
}

// Contradicts reports whether a file's first bytes are positive evidence
// that it is not of the declared type: a type whose format has a
// mandatory signature (JPEG, PNG, WebP, PDF, MP4) without it; a declared
// text/plain that is a program, an archive or markup; or any other
// declared type when the detector names a type of another family, neither
// it nor any of its parents sharing a family with it (an unknown or
// generic detection is no evidence there). It returns what the bytes are,
// "" when the detector knows nothing more specific than binary.
func Contradicts(declared string, head []byte) (string, bool) {
	if len(head) == 0 {
		return "", false
	}
	m := mimetype.Detect(head)
	if sig, ok := signatures[declared]; ok && !sig(head) {
		if t := Type(m.String()); !IsGeneric(t) {
			return t, true
		}
		return "", true
	}
	if declared == "text/plain" {
		for x := m; x != nil; x = x.Parent() {
			if t := Type(x.String()); slices.Contains(textRefused, t) {
				return Type(m.String()), true
			}
		}
		return "", false
	}
	if IsGeneric(Type(m.String())) || Type(m.String()) == "text/plain" {
		return "", false
	}
	for x := m; x != nil; x = x.Parent() {
		t := Type(x.String())
		if IsGeneric(t) {
			break
		}
		if alias, ok := detectedAliases[t]; ok {
			t = alias
		}
		if t == declared || family(t) == family(declared) {
			return "", false
		}
	}
	return Type(m.String()), true
}

// SniffLen is how many leading bytes content detection reads: the
// detector's own default limit.
const SniffLen = 3072

func init() { mimetype.SetLimit(SniffLen) }
