package media

import (
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxFilenameLength bounds file names passed on to Meta, in bytes.
const MaxFilenameLength = 200

// SanitizeFilename makes a client's file name safe to put in a quoted
// header parameter: no directories, no control characters (CR and LF
// above all), no quotes or backslashes, no semicolons, valid UTF-8, a
// bounded length. An empty result becomes "file", the documented default.
func SanitizeFilename(name string) string {
	name = strings.ToValidUTF8(name, "_")
	if i := strings.LastIndexAny(name, `/\`); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		switch {
		case r == '"' || r == ';' || r == '\\' || r == '/' || r == '%':
			return '_'
		case unicode.IsControl(r) || r == utf8.RuneError || !unicode.IsPrint(r) && r != ' ':
			return -1
		}
		return r
	}, name)
	for len(name) > MaxFilenameLength {
		_, size := utf8.DecodeLastRuneInString(name)
		name = name[:len(name)-size]
	}
	// Trimmed after the cut, so that the result is stable (found by
	// FuzzSanitizeFilename: a cut could leave trailing spaces).
	name = strings.TrimSpace(name)
	if name == "" || name == "." || name == ".." {
		return "file"
	}
	return name
}

// DecodeFilename undoes the percent-encoding that some clients put on a
// file name: aiohttp sends filename="a%20b%C3%BC.jpg" (and no filename*),
// and non-ASCII X-Filename headers arrive percent-encoded. The decoded
// name is used when it is valid UTF-8; otherwise the name stays as sent.
// SanitizeFilename runs after it, so a decoded quote, slash or control
// character is made safe there.
func DecodeFilename(name string) string {
	if !strings.Contains(name, "%") {
		return name
	}
	dec, err := url.PathUnescape(name)
	if err != nil || !utf8.ValidString(dec) {
		return name
	}
	return dec
}
