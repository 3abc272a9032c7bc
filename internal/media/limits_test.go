package media

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestCeiling(t *testing.T) {
	for typ, want := range map[string]int64{
		"image/jpeg": 5 << 20, "image/png": 5 << 20, "image/webp": 500 << 10,
		"video/mp4": 16 << 20, "video/3gpp": 16 << 20, "audio/ogg": 16 << 20, "audio/mpeg": 16 << 20,
		"application/pdf": 100 << 20, "text/plain": 100 << 20,
		"image/gif": 0, "": 0,
	} {
		assert.Equal(t, want, Ceiling(typ), typ)
	}
	// Every type WhatsApp accepts has a ceiling.
	for typ := range supportedTypes {
		assert.Positive(t, Ceiling(typ), typ)
	}
}
