package media

import (
	"strconv"
	"strings"
)

// Range is an absolute, inclusive byte range of a representation.
type Range struct {
	Start, End int64
}

func (r Range) Length() int64 { return r.End - r.Start + 1 }

// contentRange is the Content-Range value of r in a representation of
// size bytes.
func (r Range) ContentRange(size int64) string {
	return "bytes " + strconv.FormatInt(r.Start, 10) + "-" + strconv.FormatInt(r.End, 10) + "/" + strconv.FormatInt(size, 10)
}

// maxRangeHeader bounds the Range header we parse.
const maxRangeHeader = 256

// ParseRange resolves a Range header against a representation of size
// bytes (RFC 9110, section 14). It serves one range: several ranges, a
// malformed header, and a range that starts beyond the end are all
// unsatisfiable (ok is false), answered 416. An end beyond the last byte
// is clamped, as the RFC says.
func ParseRange(h string, size int64) (br Range, ok bool) {
	if len(h) > maxRangeHeader || size <= 0 {
		return Range{}, false
	}
	spec, found := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !found || strings.Contains(spec, ",") {
		return Range{}, false
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return Range{}, false
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// A suffix range: the last n bytes.
		n, err := ParseDigits(last)
		if err != nil || n == 0 {
			return Range{}, false
		}
		if n > size {
			n = size
		}
		return Range{Start: size - n, End: size - 1}, true
	}
	start, err := ParseDigits(first)
	if err != nil || start >= size {
		return Range{}, false
	}
	end := size - 1
	if last != "" {
		e, err := ParseDigits(last)
		if err != nil || e < start {
			return Range{}, false
		}
		if e < end {
			end = e
		}
	}
	return Range{Start: start, End: end}, true
}
