package media

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParseRange(t *testing.T) {
	const size = 1000
	const ok, ignored, no = RangeSatisfiable, RangeIgnored, RangeUnsatisfiable
	cases := []struct {
		h          string
		start, end int64
		want       RangeAnswer
	}{
		{"bytes=0-0", 0, 0, ok},
		{"bytes=0-999", 0, 999, ok},
		{"bytes=0-5000", 0, 999, ok},
		{"bytes=10-", 10, 999, ok},
		{"bytes=999-", 999, 999, ok},
		{"bytes=-1", 999, 999, ok},
		{"bytes=-1000", 0, 999, ok},
		{"bytes=-5000", 0, 999, ok},
		{" bytes=1-2 ", 1, 2, ok},
		{"bytes= 1 - 2", 1, 2, ok},
		// RFC 9110: the unit is case-insensitive, a last position past
		// the end is clamped and a suffix past the start is all of it,
		// however many digits.
		{"BYTES=0-10", 0, 10, ok},
		{"Bytes=5-", 5, 999, ok},
		{"bytes=0-99999999999999999999", 0, 999, ok},
		{"bytes=-99999999999999999999999", 0, 999, ok},
		{"bytes=0010-0020", 10, 20, ok},
		// Another unit, or none, is ignored: the whole file.
		{"items=0-1", 0, 0, ignored},
		{"1-2", 0, 0, ignored},
		{"", 0, 0, ignored},
		// Truly unsatisfiable.
		{"bytes=1000-", 0, 0, no},
		{"bytes=1000-1001", 0, 0, no},
		{"bytes=99999999999999999999-", 0, 0, no},
		{"bytes=-0", 0, 0, no},
		{"bytes=2-1", 0, 0, no},
		{"bytes=1-2,3-4", 0, 0, no},
		{"bytes=-", 0, 0, no},
		{"bytes=", 0, 0, no},
		{"bytes=a-b", 0, 0, no},
		{"bytes=+1-2", 0, 0, no},
		{"bytes=1--2", 0, 0, no},
		{"bytes=0x10-", 0, 0, no},
		{"bytes=" + string(make([]byte, 300)), 0, 0, no},
	}
	for _, c := range cases {
		br, answer := ParseRange(c.h, size)
		assert.Equal(t, c.want, answer, "%q", c.h)
		if c.want == ok {
			assert.Equal(t, Range{c.start, c.end}, br, "%q", c.h)
		}
	}
	_, answer := ParseRange("bytes=0-1", 0)
	assert.Equal(t, no, answer, "an empty representation has no ranges")
}
