package whatsappmedia

import (
	"strconv"
	"strings"
)

// byteRange is an absolute, inclusive byte range of a representation.
type byteRange struct {
	start, end int64
}

func (r byteRange) length() int64 { return r.end - r.start + 1 }

// contentRange is the Content-Range value of r in a representation of
// size bytes.
func (r byteRange) contentRange(size int64) string {
	return "bytes " + strconv.FormatInt(r.start, 10) + "-" + strconv.FormatInt(r.end, 10) + "/" + strconv.FormatInt(size, 10)
}

// maxRangeHeader bounds the Range header we parse.
const maxRangeHeader = 256

// parseRange resolves a Range header against a representation of size
// bytes (RFC 9110, section 14). It serves one range: several ranges, a
// malformed header, and a range that starts beyond the end are all
// unsatisfiable (ok is false), answered 416. An end beyond the last byte
// is clamped, as the RFC says.
func parseRange(h string, size int64) (br byteRange, ok bool) {
	if len(h) > maxRangeHeader || size <= 0 {
		return byteRange{}, false
	}
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return byteRange{}, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return byteRange{}, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// A suffix range: the last n bytes.
		n, err := parseDigits(last)
		if err != nil || n == 0 {
			return byteRange{}, false
		}
		if n > size {
			n = size
		}
		return byteRange{start: size - n, end: size - 1}, true
	}
	start, err := parseDigits(first)
	if err != nil || start >= size {
		return byteRange{}, false
	}
	end := size - 1
	if last != "" {
		e, err := parseDigits(last)
		if err != nil || e < start {
			return byteRange{}, false
		}
		if e < end {
			end = e
		}
	}
	return byteRange{start: start, end: end}, true
}

// parseDigits parses a non-negative decimal made of ASCII digits only
// (strconv would take a sign).
func parseDigits(s string) (int64, error) {
	if !isDigits(s, 19) {
		return 0, strconv.ErrSyntax
	}
	return strconv.ParseInt(s, 10, 64)
}
