package media

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// probeAll writes b to a probe for t in pieces of chunk bytes and
// returns the violation (nil for none) and the offset of the first byte
// of the piece that Write refused (len(b) when none was).
func probeAll(t string, size int64, b []byte, chunk int) (*Violation, int) {
	p := NewProbe(t, size)
	if p == nil {
		return nil, len(b)
	}
	for off := 0; off < len(b); off += chunk {
		end := min(off+chunk, len(b))
		n, err := p.Write(b[off:end])
		if err != nil {
			if n != 0 {
				panic("a refused piece was reported written")
			}
			return err.(*Violation), off
		}
	}
	return p.Violation(), len(b)
}

func rule(v *Violation) string {
	if v == nil {
		return ""
	}
	return v.Rule
}

// The real files: every rule kept once and broken once, whatever the
// pieces the bytes come in, with the size known or not.
func TestProbeFormatSamples(t *testing.T) {
	for _, s := range fixtures.FormatSamples {
		t.Run(s.Name, func(t *testing.T) {
			b, err := fixtures.FormatFile(s.Name)
			require.NoError(t, err)
			for _, chunk := range []int{1, 3, 7, 512, 32 << 10, len(b)} {
				for _, size := range []int64{int64(len(b)), -1} {
					v, _ := probeAll(s.Type, size, b, chunk)
					assert.Equal(t, s.Rule, rule(v), "pieces of %d, size %d: %v", chunk, size, v)
				}
			}
		})
	}
}

func TestProbeMessages(t *testing.T) {
	cases := map[string]string{
		"hevc.mp4":                  "video codec hvc1: WhatsApp delivers H.264 only",
		"h263.3gp":                  "video codec s263: WhatsApp delivers H.264 only",
		"h264-ac3.mp4":              "audio codec ac-3: WhatsApp delivers video with AAC audio only",
		"h264-mp3.mp4":              "audio codec MP3 (in mp4a): WhatsApp delivers video with AAC audio only",
		"two-audio.mp4":             "2 audio streams: WhatsApp delivers video with a single audio stream or none",
		"vorbis.ogg":                "audio codec Vorbis: WhatsApp delivers Ogg audio as Opus only",
		"voice-stereo.ogg":          "Opus audio with 2 channels: WhatsApp plays single-channel (mono) Opus only",
		"image-cmyk.jpg":            "image with 4 colour components (CMYK or YCCK): WhatsApp delivers 8-bit RGB or RGBA images, not CMYK",
		"image-12bit.jpg":           "image precision 12-bit: WhatsApp delivers 8-bit images only",
		"image-16bit.png":           "image bit depth 16: WhatsApp delivers 8-bit images only",
		"sticker-600.webp":          "sticker of 600×600 pixels: WhatsApp delivers stickers of 512×512 pixels only",
		"sticker-static-large.webp": "static sticker of 180 KiB: WhatsApp delivers static stickers of at most 100 KiB",
	}
	for _, s := range fixtures.FormatSamples {
		want, ok := cases[s.Name]
		if !ok {
			continue
		}
		b, err := fixtures.FormatFile(s.Name)
		require.NoError(t, err)
		v, _ := probeAll(s.Type, int64(len(b)), b, 4096)
		require.NotNil(t, v, s.Name)
		assert.Equal(t, want, v.Error(), s.Name)
	}
}

// With moov after the media data, the verdict falls at moov, before the
// file's last bytes: the piece that shows it is refused, so those bytes
// never pass.
func TestProbeMoovLast(t *testing.T) {
	b, err := fixtures.FormatFile("hevc-moov-last.mp4")
	require.NoError(t, err)
	moov := bytes.Index(b, []byte("moov")) - 4
	require.Positive(t, moov)
	v, at := probeAll("video/mp4", -1, b, 1)
	require.NotNil(t, v)
	assert.Greater(t, at, moov, "judged inside moov")
	assert.Less(t, at, len(b), "judged before the last byte")
	// One piece holding the whole file: refused whole.
	n, err := NewProbe("video/mp4", -1).Write(b)
	assert.Zero(t, n)
	assert.Error(t, err)
}

func be32(n int) []byte { return binary.BigEndian.AppendUint32(nil, uint32(n)) }

func box(typ string, payload ...[]byte) []byte {
	body := bytes.Join(payload, nil)
	return append(append(be32(8+len(body)), typ...), body...)
}

// track is a trak box with a handler and a first sample entry.
func track(handler, codec string) []byte {
	return trackWith(handler, append(append(be32(16), codec...), make([]byte, 8)...))
}

// mp4a is an mp4a sample entry (QuickTime's version 0, 1 or 2) whose
// esds names object type oti, with the ES_Descriptor's optional fields
// that esFlags announce.
func mp4a(version uint16, oti, esFlags byte) []byte {
	fields := make([]byte, 28)
	binary.BigEndian.PutUint16(fields[8:], version)
	fields = append(fields, make([]byte, map[uint16]int{1: 16, 2: 36}[version])...)
	es := []byte{0, 1, esFlags}
	if esFlags&0x80 != 0 {
		es = append(es, 0, 2)
	}
	if esFlags&0x40 != 0 {
		es = append(es, 3, 'a', 'b', 'c')
	}
	if esFlags&0x20 != 0 {
		es = append(es, 0, 3)
	}
	dc := []byte{0x04, 0x80, 0x80, 0x80, 13, oti, 0x15, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	esds := box("esds", []byte{0, 0, 0, 0}, append([]byte{0x03, byte(len(es) + len(dc))}, append(es, dc...)...))
	return box("mp4a", fields, box("wave", make([]byte, 4)), esds)
}

// trackWith is a trak box with a handler and the sample entry given.
func trackWith(handler string, entry []byte) []byte {
	hdlr := box("hdlr", make([]byte, 8), []byte(handler), make([]byte, 13))
	stsd := box("stsd", []byte{0, 0, 0, 0, 0, 0, 0, 1}, entry)
	stbl := box("stbl", stsd, box("stts", make([]byte, 8)))
	return box("trak", box("tkhd", make([]byte, 84)), box("mdia", box("mdhd", make([]byte, 24)), hdlr,
		box("minf", box("vmhd", make([]byte, 12)), stbl)))
}

func TestProbeMP4Structures(t *testing.T) {
	ftyp := box("ftyp", []byte("isom\x00\x00\x02\x00isomavc1"))
	mdat := box("mdat", make([]byte, 1000))
	// A 64-bit size on mdat, 16 bytes of header.
	large := append(append(be32(1), "mdat"...), binary.BigEndian.AppendUint64(nil, 16+1000)...)
	large = append(large, make([]byte, 1000)...)
	cases := map[string]struct {
		file []byte
		rule string
	}{
		"H.264 and AAC, moov last": {bytes.Join([][]byte{ftyp, mdat, box("moov", box("mvhd", make([]byte, 100)),
			track("vide", "avc1"), track("soun", "mp4a"))}, nil), ""},
		"avc3": {bytes.Join([][]byte{ftyp, box("moov", track("vide", "avc3")), mdat}, nil), ""},
		"HEVC after a 64-bit mdat": {bytes.Join([][]byte{ftyp, large, box("moov", track("vide", "hev1"))}, nil),
			RuleVideoCodec},
		"AV1": {bytes.Join([][]byte{ftyp, box("moov", track("vide", "av01")), mdat}, nil), RuleVideoCodec},
		"Opus audio": {bytes.Join([][]byte{ftyp, box("moov", track("vide", "avc1"), track("soun", "Opus")), mdat}, nil),
			RuleVideoAudioCodec},
		"three audio tracks": {bytes.Join([][]byte{ftyp, box("moov", track("soun", "mp4a"), track("vide", "avc1"),
			track("soun", "mp4a"), track("soun", "mp4a")), mdat}, nil), RuleVideoAudioStreams},
		"AAC in mp4a, QuickTime version 1": {bytes.Join([][]byte{ftyp, box("moov", track("vide", "avc1"),
			trackWith("soun", mp4a(1, 0x40, 0xE0))), mdat}, nil), ""},
		"MPEG-2 AAC LC in mp4a": {bytes.Join([][]byte{ftyp, box("moov", trackWith("soun", mp4a(0, 0x67, 0))), mdat}, nil), ""},
		"MP3 in mp4a": {bytes.Join([][]byte{ftyp, box("moov", track("vide", "avc1"),
			trackWith("soun", mp4a(0, 0x6B, 0))), mdat}, nil), RuleVideoAudioCodec},
		"MP3 in mp4a, version 2, every optional field": {bytes.Join([][]byte{ftyp, box("moov",
			trackWith("soun", mp4a(2, 0x69, 0xE0))), mdat}, nil), RuleVideoAudioCodec},
		"an unknown object type in mp4a": {bytes.Join([][]byte{ftyp, box("moov", trackWith("soun", mp4a(0, 0x20, 0))), mdat}, nil),
			RuleVideoAudioCodec},
		"a subtitle track is no stream": {bytes.Join([][]byte{ftyp, box("moov", track("vide", "avc1"),
			track("soun", "mp4a"), track("sbtl", "tx3g")), mdat}, nil), ""},
		"trak outside moov is not read": {bytes.Join([][]byte{ftyp, track("vide", "hvc1"), box("moov", track("vide", "avc1"))}, nil), ""},
		"mdat to the end of the file":   {bytes.Join([][]byte{ftyp, be32(0), []byte("mdat"), make([]byte, 100)}, nil), ""},
		"no moov":                       {bytes.Join([][]byte{ftyp, mdat}, nil), ""},
		"a box shorter than its header": {bytes.Join([][]byte{ftyp, be32(4), []byte("moov"), track("vide", "hvc1")}, nil), ""},
		"a child past its parent's end": {bytes.Join([][]byte{ftyp, be32(16), []byte("moov"), track("vide", "hvc1")}, nil), ""},
		"cut off inside moov":           {bytes.Join([][]byte{ftyp, box("moov", track("vide", "hvc1"))}, nil)[:60], ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for _, chunk := range []int{1, 5, 64, len(c.file)} {
				v, _ := probeAll("video/mp4", -1, c.file, chunk)
				assert.Equal(t, c.rule, rule(v), "pieces of %d: %v", chunk, v)
			}
			v, _ := probeAll("video/3gpp", int64(len(c.file)), c.file, 9)
			assert.Equal(t, c.rule, rule(v), "as 3GPP: %v", v)
		})
	}
}

func TestProbeJPEGStructures(t *testing.T) {
	sof := func(marker byte, precision, components int) []byte {
		return append([]byte{0xFF, marker, 0, byte(8 + 3*components), byte(precision), 0, 16, 0, 16, byte(components)},
			make([]byte, 3*components)...)
	}
	app1 := append([]byte{0xFF, 0xE1, 0xFF, 0xFF}, make([]byte, 0xFFFF-2)...) // a full-size EXIF segment
	soi := []byte{0xFF, 0xD8}
	cases := map[string]struct {
		file []byte
		rule string
	}{
		"baseline RGB":              {bytes.Join([][]byte{soi, sof(0xC0, 8, 3)}, nil), ""},
		"grey":                      {bytes.Join([][]byte{soi, sof(0xC0, 8, 1)}, nil), ""},
		"progressive CMYK":          {bytes.Join([][]byte{soi, app1, sof(0xC2, 8, 4)}, nil), RuleImageColor},
		"12-bit after 64 KiB EXIF":  {bytes.Join([][]byte{soi, app1, app1, sof(0xC1, 12, 3)}, nil), RuleImageBitDepth},
		"fill bytes before markers": {bytes.Join([][]byte{soi, {0xFF, 0xFF}, sof(0xC0, 12, 3)}, nil), RuleImageBitDepth},
		"DHT is no frame":           {bytes.Join([][]byte{soi, {0xFF, 0xC4, 0, 3, 0}, sof(0xC0, 8, 4)}, nil), RuleImageColor},
		"scan before any frame":     {bytes.Join([][]byte{soi, {0xFF, 0xDA, 0, 2}, sof(0xC0, 12, 4)}, nil), ""},
		"garbage after SOI":         {bytes.Join([][]byte{soi, {0x12, 0x34}, sof(0xC0, 12, 4)}, nil), ""},
		"a segment length below 2":  {bytes.Join([][]byte{soi, {0xFF, 0xE0, 0, 1}, sof(0xC0, 12, 4)}, nil), ""},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for _, chunk := range []int{1, 3, 4096, len(c.file)} {
				v, _ := probeAll("image/jpeg", -1, c.file, chunk)
				assert.Equal(t, c.rule, rule(v), "pieces of %d: %v", chunk, v)
			}
		})
	}
}

// webpVP8X is an extended WebP's header: RIFF, VP8X with the animation
// flag and a canvas, padded to n bytes.
func webpVP8X(w, h int, animated bool, n int) []byte {
	b := append([]byte("RIFF"), binary.LittleEndian.AppendUint32(nil, uint32(n-8))...)
	b = append(b, "WEBPVP8X"...)
	b = append(b, 10, 0, 0, 0)
	flags := byte(0)
	if animated {
		flags = 0x02
	}
	b = append(b, flags, 0, 0, 0, byte(w-1), byte((w-1)>>8), 0, byte(h-1), byte((h-1)>>8), 0)
	return append(b, make([]byte, n-len(b))...)
}

func TestProbeStickerSizes(t *testing.T) {
	cases := map[string]struct {
		file []byte
		rule string
	}{
		"animated, 500 KiB":        {webpVP8X(512, 512, true, AnimatedStickerLimit), ""},
		"animated, a byte more":    {webpVP8X(512, 512, true, AnimatedStickerLimit+1), RuleStickerSize},
		"static VP8X, 100 KiB":     {webpVP8X(512, 512, false, StaticStickerLimit), ""},
		"static VP8X, a byte more": {webpVP8X(512, 512, false, StaticStickerLimit+1), RuleStickerSize},
		"512×511":                  {webpVP8X(512, 511, false, 100), RuleStickerDimensions},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for _, size := range []int64{int64(len(c.file)), -1} {
				v, at := probeAll("image/webp", size, c.file, 32<<10)
				assert.Equal(t, c.rule, rule(v), "size %d: %v", size, v)
				if c.rule == RuleStickerSize && size > 0 {
					assert.Zero(t, at, "a known size is judged at the header")
				}
			}
		})
	}
	// The size not known: the piece that crosses the limit is refused.
	b := webpVP8X(512, 512, false, StaticStickerLimit+100)
	_, at := probeAll("image/webp", -1, b, 1000)
	assert.Equal(t, StaticStickerLimit/1000*1000, at)
}

func TestProbeOggAndPNGStructures(t *testing.T) {
	page := func(packet []byte, lacing ...byte) []byte {
		b := append([]byte("OggS\x00\x02"), make([]byte, 20)...)
		b = append(b, byte(len(lacing)))
		return append(append(b, lacing...), packet...)
	}
	opus := func(channels byte) []byte {
		return append([]byte("OpusHead\x01"), channels, 0x38, 1, 0x80, 0xBB, 0, 0, 0, 0, 0)
	}
	png := func(depth, colour byte) []byte {
		b := []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x10\x00\x00\x00\x10")
		return append(b, depth, colour, 0, 0, 0, 1, 2, 3, 4)
	}
	cases := map[string]struct {
		t, rule string
		file    []byte
	}{
		"Opus mono":            {"audio/ogg", "", page(opus(1), 19)},
		"Opus 5.1":             {"audio/ogg", RuleAudioChannels, page(opus(6), 19)},
		"FLAC":                 {"audio/ogg", RuleAudioCodec, page([]byte("\x7fFLAC\x01\x00\x00\x01fLaC"), 13)},
		"Speex":                {"audio/ogg", RuleAudioCodec, page([]byte("Speex   1.2"), 11)},
		"an unknown codec":     {"audio/ogg", "", page([]byte("SomethingElse!"), 14)},
		"a packet over pages":  {"audio/ogg", RuleAudioChannels, page(opus(2), 255, 3)},
		"no segments":          {"audio/ogg", "", page(opus(2))},
		"not Ogg":              {"audio/ogg", "", opus(2)},
		"PNG 8-bit palette":    {"image/png", "", png(8, 3)},
		"PNG 16-bit grey":      {"image/png", RuleImageBitDepth, png(16, 0)},
		"PNG without IHDR":     {"image/png", "", append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT"), make([]byte, 13)...)},
		"documents: no probe":  {"application/pdf", "", []byte("%PDF-1.7")},
		"MP3: no rules stated": {"audio/mpeg", "", []byte("ID3")},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			for _, chunk := range []int{1, 2, len(c.file)} {
				v, _ := probeAll(c.t, -1, c.file, chunk)
				assert.Equal(t, c.rule, rule(v), "pieces of %d: %v", chunk, v)
			}
		})
	}
	assert.Nil(t, NewProbe("application/pdf", 10))
}

// Past its header a probe allocates nothing, whatever the file's size.
func TestProbeAllocations(t *testing.T) {
	head := append(box("ftyp", []byte("isom\x00\x00\x02\x00")), append(be32(8+16<<20), "mdat"...)...)
	piece := make([]byte, 32<<10)
	allocs := testing.AllocsPerRun(20, func() {
		p := NewProbe("video/mp4", -1)
		_, _ = p.Write(head) // ftyp and a 16 MiB mdat's header: the rest is skipped
		for i := 0; i < 512; i++ {
			_, _ = p.Write(piece)
		}
	})
	assert.LessOrEqual(t, allocs, 1.0, "the probe itself, and nothing per write")
}

// BenchmarkProbe measures the probe's own cost on a 16 MB H.264 video
// whose moov box comes last (the probe walks the whole file before its
// verdict), written in the 32 KiB pieces the transport reads; and on 1 MB
// of it, to show that allocations do not grow with the size.
//
//	go test -run '^$' -bench BenchmarkProbe -benchmem ./internal/media
func BenchmarkProbe(b *testing.B) {
	for _, size := range []int{1_000_000, 16_000_000} {
		file, err := fixtures.Video(size)
		require.NoError(b, err)
		b.Run(strconv.Itoa(size/1_000_000)+"MB", func(b *testing.B) {
			benchProbe(b, file)
		})
	}
	// A hostile file: 16 MB of empty 8-byte boxes, a header every 8 bytes.
	// The probe gives up after maxSteps of them.
	hostile := append(box("ftyp", []byte("isom\x00\x00\x02\x00")), bytes.Repeat(box("free"), 2_000_000)...)
	b.Run("16MB-of-8-byte-boxes", func(b *testing.B) { benchProbe(b, hostile) })
}

func benchProbe(b *testing.B, file []byte) {
	b.SetBytes(int64(len(file)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		p := NewProbe("video/mp4", int64(len(file)))
		for off := 0; off < len(file); off += 32 << 10 {
			if _, err := p.Write(file[off:min(off+32<<10, len(file))]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// A file of thousands of tiny headers is given up on (Meta decides), so
// that no file keeps the probe busy for long.
func TestProbeStepBound(t *testing.T) {
	ftyp := box("ftyp", []byte("isom\x00\x00\x02\x00"))
	frees := bytes.Repeat(box("free"), 2*maxSteps)
	p := NewProbe("video/mp4", -1)
	_, err := p.Write(append(append(ftyp, frees...), box("moov", track("vide", "hvc1"))...))
	assert.NoError(t, err, "judged past the bound")
	assert.LessOrEqual(t, p.steps, maxSteps+1)
	jpeg := append([]byte{0xFF, 0xD8}, bytes.Repeat([]byte{0xFF}, 3*maxSteps)...)
	p = NewProbe("image/jpeg", -1)
	_, err = p.Write(append(jpeg, 0xC0, 0, 11, 12, 0, 16, 0, 16, 1, 0, 0, 0))
	assert.NoError(t, err)
	// Within the bound, a hundred tracks are judged.
	var tracks []byte
	for i := 0; i < 100; i++ {
		tracks = append(tracks, track("vide", "avc1")...)
	}
	v, _ := probeAll("video/mp4", -1, append(ftyp, box("moov", tracks, track("vide", "hvc1"))...), 4096)
	assert.Equal(t, RuleVideoCodec, rule(v))
}
