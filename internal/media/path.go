package media

import (
	"net/url"
	"strings"
)

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
