package media

// Fuzz targets of the gateway's pure logic. CI runs each for a few seconds
// (.ci/run); the seed corpus is in testdata/fuzz/<target>/ and in the f.Add
// calls, and runs with every `go test`. This package imports nothing from
// Caddy, which keeps fuzzing fast (importing Caddy slows every execution a
// hundredfold). Long runs on this project's machine (2 cores, 2026-11-25), recorded:
//
//	go test -run '^$' -fuzz '^FuzzParseRange$' -fuzztime 120s ./internal/media
//
// FuzzMultipartFrame:   1,467,356 executions (828,212 + 639,329 in runs of 100 s and 150 s), no failure
// FuzzResolveMIME:      1,773,862 executions in 100 s, no failure
// FuzzSanitizeFilename: 2,071,854 executions in 100 s after a fix; the first run failed after
//                       55,900 (trailing spaces left by the length cut; the input is in the corpus)
// FuzzParseRange:       1,916,933 executions in 100 s, no failure

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"mime/multipart"
	"slices"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// FuzzMultipartFrame checks the re-encoder: whatever the type and file
// name, the body sent to Meta parses back to exactly the three fields,
// with the file's bytes intact.
func FuzzMultipartFrame(f *testing.F) {
	f.Add("image/jpeg", "photo.jpg", []byte("\xff\xd8\xff"))
	f.Add("text/plain", `a"; name="type`, []byte("--whatsapp-media-x\r\n"))
	f.Add("application/pdf", "a\r\nX-Evil: 1", []byte{})
	f.Fuzz(func(t *testing.T, mimeType, filename string, data []byte) {
		if len(data) > 64<<10 || len(filename) > 4<<10 {
			return // larger inputs only slow the search down
		}
		if Type(mimeType) == "" {
			return // only resolved types reach the framing
		}
		mimeType = Type(mimeType)
		name := SanitizeFilename(filename)
		prefix, suffix, ct := Frame(mimeType, name)
		body := append(append(append([]byte{}, prefix...), data...), suffix...)
		_, params, err := parseCT(ct)
		if err != nil {
			t.Fatalf("content type %q: %v", ct, err)
		}
		mr := multipart.NewReader(bytes.NewReader(body), params)
		var names []string
		for {
			p, err := mr.NextRawPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				// The file's bytes may contain the boundary only if they
				// guessed 192 random bits: treat as impossible.
				t.Fatalf("reparse: %v", err)
			}
			b, err := io.ReadAll(p)
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, p.FormName())
			switch p.FormName() {
			case "messaging_product":
				if string(b) != "whatsapp" {
					t.Fatalf("messaging_product = %q", b)
				}
			case "type":
				if string(b) != mimeType {
					t.Fatalf("type = %q", b)
				}
			case "file":
				if !bytes.Equal(b, data) {
					t.Fatal("file bytes changed")
				}
				if p.FileName() != name {
					t.Fatalf("file name %q, want %q", p.FileName(), name)
				}
			}
		}
		if strings.Join(names, ",") != "messaging_product,type,file" {
			t.Fatalf("fields %v", names)
		}
	})
}

// FuzzResolveMIME checks that no input makes the resolver return a generic
// or unsupported type, or an error of another kind.
func FuzzResolveMIME(f *testing.F) {
	f.Add("", "application/octet-stream", "", "photo.jpg", []byte("\xff\xd8\xff\xe0"))
	f.Add("image/gif", "", "", "", []byte{})
	f.Add("", "", "audio/ogg; codecs=opus", "a", []byte("OggS"))
	f.Add("image", "video/mp4", "", "", []byte{})
	f.Add("", "", "Document", "a.pdf", []byte("%PDF-1.4"))
	f.Fuzz(func(t *testing.T, override, partType, typeField, filename string, head []byte) {
		got, err := Resolve(Inputs{Override: override, PartType: partType, TypeField: typeField,
			Filename: filename, Head: func() []byte { return head }})
		var unsupported *UnsupportedError
		var wrongKind *KindError
		if err != nil {
			if !errors.Is(err, ErrBadOverride) && !errors.Is(err, ErrBadTypeField) && !errors.Is(err, ErrUndetermined) &&
				!errors.As(err, &unsupported) && !errors.As(err, &wrongKind) {
				t.Fatalf("error %v", err)
			}
			return
		}
		if IsGeneric(got) || !Supported(got) {
			t.Fatalf("type %q", got)
		}
		for _, hint := range []string{override, typeField} {
			if k := Kind(hint); k != "" && !InKind(k, got) {
				t.Fatalf("%q is not of the kind %q asked", got, k)
			}
		}
	})
}

// FuzzSanitizeFilename checks that a sanitized name is always safe in a
// quoted header parameter.
func FuzzSanitizeFilename(f *testing.F) {
	for _, s := range []string{"photo.jpg", "../../x", "a\"b;c\\d\r\ne", "\xff\xfe", strings.Repeat("é", 300), ".."} {
		f.Add(s)
	}
	f.Add("name%20with%20spaces%20and%20%C3%BCn%C3%AFcode.jpg")
	f.Add("%22%0d%0a%2F..%2F.jpg")
	f.Fuzz(func(t *testing.T, in string) {
		// Names are percent-decoded first (file names as clients send
		// them): the result must be as safe.
		if d := SanitizeFilename(DecodeFilename(in)); d == "" || strings.ContainsAny(d, "\"\\;/%\r\n") {
			t.Fatalf("decoded %q -> %q", in, d)
		}
		out := SanitizeFilename(in)
		if out == "" || len(out) > MaxFilenameLength || !utf8.ValidString(out) {
			t.Fatalf("%q -> %q", in, out)
		}
		if strings.ContainsAny(out, "\"\\;/%") || out == "." || out == ".." {
			t.Fatalf("%q -> %q", in, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || (!unicode.IsPrint(r) && r != ' ') {
				t.Fatalf("%q -> %q has %U", in, out, r)
			}
		}
		if SanitizeFilename(out) != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", in, out, SanitizeFilename(out))
		}
	})
}

// FuzzParseRange checks that a satisfiable range lies within the file.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-5", "bytes=5-", "bytes=1-2,3-4", "bytes=99999999999999999999-", "BYTES=0-1", "items=0-1", "bytes=-99999999999999999999"} {
		f.Add(s, int64(1000))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		br, answer := ParseRange(h, size)
		if answer != RangeSatisfiable {
			return
		}
		if size <= 0 || br.Start < 0 || br.Start > br.End || br.End >= size || br.Length() <= 0 {
			t.Fatalf("%q size %d -> %+v", h, size, br)
		}
	})
}

func parseCT(ct string) (string, string, error) {
	_, params, err := mime.ParseMediaType(ct)
	return "", params["boundary"], err
}

// FuzzProbe checks the format probe on any bytes: it never panics, and
// its verdict is the same whether the file comes whole or in two pieces
// split anywhere, and with its size known or not (but for a sticker's
// size, which a known size decides at the header).
func FuzzProbe(f *testing.F) {
	for _, s := range fixtures.FormatSamples {
		if b, err := fixtures.FormatFile(s.Name); err == nil && len(b) <= 16<<10 {
			f.Add(s.Type, b, uint16(len(b)/2))
		}
	}
	types := []string{"image/jpeg", "image/png", "image/webp", "audio/ogg", "video/mp4", "video/3gpp"}
	f.Fuzz(func(t *testing.T, typ string, data []byte, split uint16) {
		if len(data) > 64<<10 {
			return
		}
		if !slices.Contains(types, typ) {
			typ = types[len(typ)%len(types)]
		}
		whole, _ := probeAll(typ, -1, data, max(len(data), 1))
		k := int(split) % (len(data) + 1)
		p := NewProbe(typ, -1)
		_, err1 := p.Write(data[:k])
		_, err2 := p.Write(data[k:])
		if (err1 != nil || err2 != nil) != (whole != nil) || rule(p.Violation()) != rule(whole) {
			t.Fatalf("whole: %v; split at %d: %v", whole, k, p.Violation())
		}
		known, _ := probeAll(typ, int64(len(data)), data, 7)
		if rule(known) != rule(whole) {
			t.Fatalf("size known: %v; not known: %v", known, whole)
		}
	})
}
