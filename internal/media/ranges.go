package media

import (
	"math"
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

// RangeAnswer is what a Range header asks of a representation.
type RangeAnswer int

const (
	// RangeIgnored: the header is to be ignored and the whole
	// representation sent (a range unit other than bytes, RFC 9110
	// section 14.2).
	RangeIgnored RangeAnswer = iota
	// RangeSatisfiable: send the range.
	RangeSatisfiable
	// RangeUnsatisfiable: answer 416.
	RangeUnsatisfiable
)

// ParseRange resolves a Range header against a representation of size
// bytes (RFC 9110, section 14). The unit is case-insensitive; a header in
// another unit, or in none, is ignored. It serves one range: several
// ranges, a malformed byte range, and a range that starts at or beyond the
// end are unsatisfiable. A last position beyond the end is clamped, and a
// suffix longer than the representation is all of it, however many
// digits they have.
func ParseRange(h string, size int64) (Range, RangeAnswer) {
	unit, spec, found := strings.Cut(strings.TrimSpace(h), "=")
	if !found || !strings.EqualFold(strings.TrimSpace(unit), "bytes") {
		return Range{}, RangeIgnored
	}
	if len(h) > maxRangeHeader || size <= 0 || strings.Contains(spec, ",") {
		return Range{}, RangeUnsatisfiable
	}
	first, last, found := strings.Cut(strings.TrimSpace(spec), "-")
	if !found {
		return Range{}, RangeUnsatisfiable
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// A suffix range: the last n bytes.
		n, ok := parsePosition(last)
		if !ok || n == 0 {
			return Range{}, RangeUnsatisfiable
		}
		return Range{Start: size - min(n, size), End: size - 1}, RangeSatisfiable
	}
	start, ok := parsePosition(first)
	if !ok || start >= size {
		return Range{}, RangeUnsatisfiable
	}
	end := size - 1
	if last != "" {
		e, ok := parsePosition(last)
		if !ok || e < start {
			return Range{}, RangeUnsatisfiable
		}
		end = min(e, end)
	}
	return Range{Start: start, End: end}, RangeSatisfiable
}

// parsePosition parses a range position: ASCII digits, any number of
// them; one too large for an int64 saturates (it is past any end).
func parsePosition(s string) (int64, bool) {
	if s == "" || strings.Trim(s, "0123456789") != "" {
		return 0, false
	}
	if n, err := ParseDigits(strings.TrimLeft(s, "0")); err == nil {
		return n, true
	}
	if strings.TrimLeft(s, "0") == "" {
		return 0, true
	}
	return math.MaxInt64, true
}
