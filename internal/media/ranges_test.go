package media

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestParseRange(t *testing.T) {
	const size = 1000
	cases := []struct {
		h          string
		start, end int64
		ok         bool
	}{
		{"bytes=0-0", 0, 0, true},
		{"bytes=0-999", 0, 999, true},
		{"bytes=0-5000", 0, 999, true},
		{"bytes=10-", 10, 999, true},
		{"bytes=999-", 999, 999, true},
		{"bytes=-1", 999, 999, true},
		{"bytes=-1000", 0, 999, true},
		{"bytes=-5000", 0, 999, true},
		{" bytes=1-2 ", 1, 2, true},
		{"bytes= 1 - 2", 1, 2, true},
		{"bytes=1000-", 0, 0, false},
		{"bytes=1000-1001", 0, 0, false},
		{"bytes=-0", 0, 0, false},
		{"bytes=2-1", 0, 0, false},
		{"bytes=1-2,3-4", 0, 0, false},
		{"bytes=-", 0, 0, false},
		{"bytes=", 0, 0, false},
		{"bytes=a-b", 0, 0, false},
		{"bytes=+1-2", 0, 0, false},
		{"bytes=1--2", 0, 0, false},
		{"bytes=0x10-", 0, 0, false},
		{"bytes=99999999999999999999-", 0, 0, false},
		{"bytes=1-99999999999999999999", 0, 0, false},
		{"items=1-2", 0, 0, false},
		{"1-2", 0, 0, false},
		{"bytes=" + string(make([]byte, 300)), 0, 0, false},
	}
	for _, c := range cases {
		br, ok := ParseRange(c.h, size)
		assert.Equal(t, c.ok, ok, "%q", c.h)
		if c.ok {
			assert.Equal(t, Range{c.start, c.end}, br, "%q", c.h)
		}
	}
	_, ok := ParseRange("bytes=0-1", 0)
	assert.False(t, ok, "an empty representation has no satisfiable range")
}
