package media

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestDecodeFilename(t *testing.T) {
	for in, want := range map[string]string{
		"photo.jpg": "photo.jpg",
		"name%20with%20spaces%20and%20%C3%BCn%C3%AFcode.jpg": "name with spaces and ünïcode.jpg",
		"%E5%86%99%E7%9C%9F.jpg":                             "写真.jpg",
		"a+b.jpg":                                            "a+b.jpg",    // not form encoding: + stays
		"100%.jpg":                                           "100%.jpg",   // not an escape: as sent
		"%ff%fe.jpg":                                         "%ff%fe.jpg", // not UTF-8 once decoded: as sent
		"%22%0D%0A.jpg":                                      "\"\r\n.jpg", // SanitizeFilename's business
	} {
		assert.Equal(t, want, DecodeFilename(in), in)
	}
}
