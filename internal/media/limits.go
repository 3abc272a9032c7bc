package media

import (
	"net/url"
	"strings"
)

// ceilings are Meta's per-type size ceilings, read in MiB (the more
// permissive reading of Meta's "MB"): images 5, audio and video 16,
// documents 100, stickers (image/webp) 500 KiB, the animated sticker's
// ceiling (a static one's is 100 KB).
var ceilings = map[string]int64{
	"audio/aac": 16 << 20, "audio/amr": 16 << 20, "audio/mpeg": 16 << 20, "audio/mp4": 16 << 20,
	"audio/ogg": 16 << 20, "audio/opus": 16 << 20,
	"text/plain": 100 << 20, "application/pdf": 100 << 20, "application/msword": 100 << 20,
	"application/vnd.ms-excel": 100 << 20, "application/vnd.ms-powerpoint": 100 << 20,
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   100 << 20,
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         100 << 20,
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": 100 << 20,
	"image/jpeg": 5 << 20, "image/png": 5 << 20, "image/webp": 500 << 10,
	"video/mp4": 16 << 20, "video/3gpp": 16 << 20, "video/3gp": 16 << 20,
}

// Ceiling returns Meta's size ceiling for files of type t, or 0 when t is
// not a type WhatsApp accepts.
func Ceiling(t string) int64 { return ceilings[t] }

// NormalizePath returns a URL path (escaped, as sent) the way a lenient
// router reads it: lowercase, repeated slashes collapsed, ";" parameters
// and a trailing slash dropped, percent-escapes of unreserved characters
// decoded, and "." and ".." segments resolved (as WHATWG URL parsers do).
// Escapes of other characters (an encoded slash) stay.
func NormalizePath(escaped string) string {
	segs := strings.Split(escaped, "/")
	out := make([]string, 0, len(segs))
	for _, s := range segs {
		s, _, _ = strings.Cut(s, ";")
		switch s = strings.ToLower(decodeUnreserved(s)); s {
		case "", ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	return "/" + strings.Join(out, "/")
}

// decodeUnreserved decodes the percent-escapes of RFC 3986's unreserved
// characters (letters, digits, "-", ".", "_", "~"), which name the same
// resource whether escaped or not.
func decodeUnreserved(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			if c, err := url.PathUnescape(s[i : i+3]); err == nil && len(c) == 1 && isUnreserved(c[0]) {
				b.WriteByte(c[0])
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
