package media

import (
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

// Contradicts reports whether a file's first bytes are positive evidence
// that it is not of the declared type: the detector names a type of
// another family than the declared type's, neither it nor any of its
// parents sharing a family with it. An unknown or generic detection is no
// evidence, and a declared text/plain is never contradicted. It returns
// the detected type.
func Contradicts(declared string, head []byte) (string, bool) {
	if declared == "text/plain" || len(head) == 0 {
		return "", false
	}
	m := mimetype.Detect(head)
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
