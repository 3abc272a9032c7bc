package media

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// exe is the start of a Windows executable: an MZ header pointing to a PE
// header.
func exe() []byte {
	b := make([]byte, 512)
	copy(b, "MZ")
	b[0x3C] = 0x80
	copy(b[0x80:], "PE\x00\x00\x4c\x01")
	return b
}

func TestSamplesDetected(t *testing.T) {
	for _, typ := range fixtures.SampleTypes() {
		assert.Equal(t, typ, Detect(fixtures.Sample(typ)), "the detector does not know the %s sample", typ)
		got, err := Resolve(Inputs{Head: func() []byte { return fixtures.Sample(typ) }})
		assert.NoError(t, err, typ)
		assert.Equal(t, typ, got, "resolved from the bytes alone")
	}
	// Every type WhatsApp accepts has a sample (3gp is 3gpp's other name,
	// opus is sent as audio/ogg).
	for typ := range supportedTypes {
		if typ != "video/3gp" && typ != "audio/opus" {
			assert.NotNil(t, fixtures.Sample(typ), "no sample of %s", typ)
		}
	}
}

// TestSampleFilesCurrent: testdata/samples holds what the generator
// makes (go run ./internal/fixtures/gensamples ../../testdata/samples).
func TestSampleFilesCurrent(t *testing.T) {
	for _, typ := range fixtures.SampleTypes() {
		path := filepath.Join("..", "..", "testdata", "samples", "sample"+fixtures.SampleExtensions[typ])
		b, err := os.ReadFile(path)
		require.NoError(t, err, "run go run ./internal/fixtures/gensamples testdata/samples")
		assert.True(t, bytes.Equal(fixtures.Sample(typ), b), "%s is not current: run go run ./internal/fixtures/gensamples testdata/samples", path)
	}
}

func TestKindHints(t *testing.T) {
	for kind, types := range kinds {
		for _, typ := range types {
			sample := fixtures.Sample(typ)
			if sample == nil {
				continue // 3gp, opus: other names of sampled types
			}
			head := func() []byte { return sample }
			// The kind in either mode, the type from the part, the name
			// or the bytes.
			for _, in := range []Inputs{
				{Override: kind, PartType: typ, Head: head},
				{TypeField: kind, Filename: "file" + fixtures.SampleExtensions[typ], Head: head},
				{Override: kind, Head: head},
				{TypeField: kind, PartType: "application/octet-stream", Head: head},
			} {
				got, err := Resolve(in)
				assert.NoError(t, err, "%s %+v", kind, in)
				assert.Equal(t, typ, got, kind)
			}
			// A file of another kind is refused, naming both.
			for other := range kinds {
				if other == kind {
					continue
				}
				_, err := Resolve(Inputs{Override: other, PartType: typ, Head: head})
				var ke *KindError
				require.True(t, errors.As(err, &ke), "%s sent as %s: %v", typ, other, err)
				assert.Contains(t, ke.Error(), typ)
				assert.Contains(t, ke.Error(), other)
			}
		}
	}
	_, err := Resolve(Inputs{Override: "picture", PartType: "image/jpeg"})
	assert.ErrorIs(t, err, ErrBadOverride, "neither a kind nor a MIME type")
	_, err = Resolve(Inputs{TypeField: "picture", PartType: "image/jpeg"})
	assert.ErrorIs(t, err, ErrBadTypeField)
	got, err := Resolve(Inputs{Override: "IMAGE", PartType: "image/png"})
	assert.NoError(t, err, "kinds are case-insensitive")
	assert.Equal(t, "image/png", got)
	assert.True(t, HintExcludes("video", "image/jpeg"))
	assert.False(t, HintExcludes("image", "image/jpeg"))
	assert.True(t, HintExcludes("image/png", "image/jpeg"))
	assert.False(t, HintExcludes("", "image/jpeg"))
}

func TestContradicts(t *testing.T) {
	// Each sample under its own type, and under every type of its family.
	for _, typ := range fixtures.SampleTypes() {
		_, bad := Contradicts(typ, fixtures.Sample(typ))
		assert.False(t, bad, typ)
	}
	sameFamily := map[string][]string{
		"video/mp4":  {"video/3gpp", "video/3gp", "audio/mp4"},
		"video/3gpp": {"video/mp4", "audio/mp4"},
		"audio/mp4":  {"video/mp4", "video/3gpp"},
		"audio/ogg":  {"audio/opus"},
		"application/vnd.openxmlformats-officedocument.wordprocessingml.document": {
			"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
			"application/vnd.openxmlformats-officedocument.presentationml.presentation"},
		"application/msword": {"application/vnd.ms-excel", "application/vnd.ms-powerpoint"},
	}
	for sample, declared := range sameFamily {
		for _, d := range declared {
			_, bad := Contradicts(d, fixtures.Sample(sample))
			assert.False(t, bad, "%s bytes sent as %s: one family", sample, d)
		}
	}
	// Across families: refused, naming what the bytes are.
	cross := []struct{ declared, sample string }{
		{"image/jpeg", "application/pdf"}, {"video/mp4", "image/jpeg"}, {"image/png", "image/jpeg"},
		{"application/pdf", "image/png"}, {"audio/mpeg", "video/mp4"}, {"audio/aac", "audio/ogg"},
		{"application/msword", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"},
		{"application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/msword"},
		{"image/webp", "image/png"}, {"audio/amr", "audio/mpeg"},
	}
	for _, c := range cross {
		detected, bad := Contradicts(c.declared, fixtures.Sample(c.sample))
		assert.True(t, bad, "%s bytes sent as %s", c.sample, c.declared)
		assert.NotEmpty(t, detected)
	}
	detected, bad := Contradicts("image/jpeg", exe())
	assert.True(t, bad, "an executable sent as a JPEG")
	assert.NotEmpty(t, detected)
	// No evidence: unknown bytes, text, nothing, for a type whose format
	// has no mandatory signature.
	for _, head := range [][]byte{make([]byte, 100), []byte("just some words\n"), nil, {0x01, 0x02, 0x03}} {
		_, bad := Contradicts("audio/aac", head)
		assert.False(t, bad, "%q", head)
	}
	// Mandatory signatures: JPEG, PNG, WebP, PDF and MP4 bytes must have
	// theirs, whatever else they are (issue 30).
	for _, typ := range []string{"image/jpeg", "image/png", "image/webp", "application/pdf", "video/mp4"} {
		for _, head := range [][]byte{make([]byte, 100), []byte("just some words\n"), {0x01, 0x02, 0x03}} {
			_, bad := Contradicts(typ, head)
			assert.True(t, bad, "%q sent as %s", head, typ)
		}
	}
	// text/plain takes any text, and bytes of no known type, but not a
	// program, an archive or markup.
	for _, head := range [][]byte{[]byte("just some words\n"), make([]byte, 100), fixtures.Sample("image/jpeg")} {
		_, bad := Contradicts("text/plain", head)
		assert.False(t, bad, "%q", head[:min(len(head), 16)])
	}
	for name, head := range map[string][]byte{
		"an executable": exe(), "a ZIP": fixtures.Sample("application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
		"HTML":           []byte("<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"),
		"SVG":            []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`),
		"a shell script": []byte("#!/bin/sh\nrm -rf /tmp/x\n"), "a Python script": []byte("#!/usr/bin/env python\nprint(1)\n"),
		"PHP": []byte("<?php echo 1; ?>\n"), "an OLE file (.doc, .msi)": fixtures.Sample("application/msword"),
	} {
		_, bad := Contradicts("text/plain", head)
		assert.True(t, bad, "%s sent as text/plain", name)
	}
}
