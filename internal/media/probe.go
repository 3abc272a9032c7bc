package media

import (
	"encoding/binary"
	"strconv"
)

// A Probe checks a file against what WhatsApp can deliver (docs/meta.md,
// "What WhatsApp delivers") while its bytes pass on their way to Meta:
// it is written the file's bytes, in order, in pieces of any size, and
// keeps only the few header bytes it is parsing (at most maxNeed), never
// the file. Everything between the headers it reads (a JPEG's metadata,
// an MP4's media data, its sample tables) is skipped by counting.
//
// A Probe's verdict is a *Violation, returned by Write at the piece of
// input that shows it (or, for a sticker's size, that crosses the
// limit). A file it cannot parse, or that ends before it has seen what it
// needs, is no violation: Meta decides, as without the probe.
//
// Hand-written rather than built on an MP4 or image library: those read
// from an io.ReadSeeker or from a whole file in memory, and a probe of a
// stream cannot seek back; the fields it reads are a few bytes each, at
// offsets the formats fix. (The MP4 box parsers abema/go-mp4 and
// Eyevinn/mp4ff are also not served by this project's module proxy.)
type Probe struct {
	// step handles the next need bytes, once buffered in buf; it sets the
	// probe's next need (and skip), or ends it.
	step  func(p *Probe, b []byte)
	need  int
	have  int
	buf   [maxNeed]byte
	skip  int64 // bytes to pass over before buffering again
	off   int64 // offset of the next byte the parser takes or skips
	seen  int64 // bytes written
	size  int64 // the file's declared size; -1 when unknown
	done  bool  // the parser has what it needs, or gave up
	steps int   // headers parsed so far

	marker byte // a JPEG marker, until its segment's length is read

	// limit, when set, is the most bytes the file may have (a sticker's).
	limit     int64
	limitName string // "static sticker", "animated sticker"

	v   *Violation
	mp4 mp4State
}

// maxNeed is the most bytes a parser step buffers: an Ogg page's segment
// table (255 bytes) is the largest.
const maxNeed = 256

// maxSteps bounds the headers a probe parses (JPEG markers, MP4 boxes):
// real files have tens before their verdict, a hundred-track MP4 a few
// thousand; a file made of tiny headers to keep the probe busy is given
// up on, and Meta decides. At about 30 ns a step, the bound keeps a probe
// under 0.2 ms of CPU whatever the file.
const maxSteps = 4096

// Violation is a file that breaks one of WhatsApp's delivery rules.
type Violation struct {
	Rule string // a stable label, for metrics: image_bit_depth, video_codec, ...
	Has  string // what the file has: "video codec hvc1"
	Why  string // the rule: "WhatsApp delivers H.264 only"
}

func (v *Violation) Error() string { return v.Has + ": " + v.Why }

// The rules' labels.
const (
	RuleImageBitDepth     = "image_bit_depth"
	RuleImageColor        = "image_color_model"
	RuleStickerDimensions = "sticker_dimensions"
	RuleStickerSize       = "sticker_size"
	RuleAudioCodec        = "audio_codec"
	RuleAudioChannels     = "audio_channels"
	RuleVideoCodec        = "video_codec"
	RuleVideoAudioCodec   = "video_audio_codec"
	RuleVideoAudioStreams = "video_audio_streams"
)

// Rules lists every rule's label, for metrics to start at zero.
var Rules = []string{RuleImageBitDepth, RuleImageColor, RuleStickerDimensions, RuleStickerSize,
	RuleAudioCodec, RuleAudioChannels, RuleVideoCodec, RuleVideoAudioCodec, RuleVideoAudioStreams}

// The sticker limits, read as KiB (the more permissive reading of Meta's
// "KB", as the ceilings are): 100 static, 500 animated; and their size.
const (
	StaticStickerLimit   = 100 << 10
	AnimatedStickerLimit = 500 << 10
	StickerSide          = 512
)

// NewProbe returns a probe for a file of type t (a type Resolve returned)
// and of size bytes (-1 when unknown), or nil when WhatsApp states no
// rule about the inside of files of type t.
func NewProbe(t string, size int64) *Probe {
	p := &Probe{size: size}
	switch t {
	case "image/jpeg":
		p.expect(2, (*Probe).jpegStart)
	case "image/png":
		p.expect(29, (*Probe).pngHeader)
	case "image/webp":
		p.expect(20, (*Probe).webpHeader)
	case "audio/ogg":
		p.expect(27, (*Probe).oggPage)
	case "video/mp4", "video/3gpp":
		p.expect(8, (*Probe).mp4Box)
	default:
		return nil
	}
	return p
}

// Write takes the file's next bytes. It returns the violation, once
// there is one, for this and every later call.
func (p *Probe) Write(b []byte) (int, error) {
	n := len(b)
	p.seen += int64(n)
	for len(b) > 0 && !p.done {
		if p.skip > 0 {
			k := int(min(p.skip, int64(len(b))))
			p.skip -= int64(k)
			p.off += int64(k)
			b = b[k:]
			continue
		}
		k := copy(p.buf[p.have:p.need], b)
		p.have += k
		p.off += int64(k)
		b = b[k:]
		if p.have == p.need {
			p.have = 0
			if p.steps++; p.steps > maxSteps {
				p.giveUp() // a file of thousands of tiny headers: Meta decides
				break
			}
			p.step(p, p.buf[:p.need])
		}
	}
	if p.v == nil && p.limit > 0 && p.seen > p.limit {
		p.refuse(RuleStickerSize, p.limitName+" over "+kib(p.limit), "WhatsApp delivers "+p.limitName+"s of at most "+kib(p.limit))
	}
	if p.v != nil {
		return 0, p.v
	}
	return n, nil
}

// Violation returns the probe's verdict so far: nil while the file breaks
// no rule it has seen.
func (p *Probe) Violation() *Violation { return p.v }

func (p *Probe) expect(n int, step func(*Probe, []byte)) { p.need, p.step = n, step }

// giveUp ends a probe that cannot read the file: Meta decides.
func (p *Probe) giveUp() { p.done = true }

func (p *Probe) refuse(rule, has, why string) {
	p.v, p.done = &Violation{Rule: rule, Has: has, Why: why}, true
}

func kib(n int64) string { return strconv.FormatInt(n>>10, 10) + " KiB" }

// JPEG: the markers up to the first start-of-frame, whose header gives
// the sample precision and the number of components (ITU T.81, B.2.2).

func (p *Probe) jpegStart(b []byte) {
	if b[0] != 0xFF || b[1] != 0xD8 {
		p.giveUp()
		return
	}
	p.expect(1, (*Probe).jpegMarker)
}

func (p *Probe) jpegMarker(b []byte) {
	if b[0] != 0xFF {
		p.giveUp()
		return
	}
	p.expect(1, (*Probe).jpegCode)
}

func (p *Probe) jpegCode(b []byte) {
	switch c := b[0]; {
	case c == 0xFF: // fill byte
	case c == 0x01 || c >= 0xD0 && c <= 0xD7: // no length
		p.expect(1, (*Probe).jpegMarker)
	case c == 0xD8 || c == 0xD9 || c == 0xDA || c == 0x00:
		p.giveUp() // no frame header before the scan, or not a marker
	default:
		p.marker = c
		p.expect(2, (*Probe).jpegLength)
	}
}

func (p *Probe) jpegLength(b []byte) {
	n := int64(binary.BigEndian.Uint16(b)) - 2
	c := p.marker
	sof := c >= 0xC0 && c <= 0xCF && c != 0xC4 && c != 0xC8 && c != 0xCC
	switch {
	case n < 0 || sof && n < 6:
		p.giveUp()
	case sof:
		p.expect(6, (*Probe).jpegFrame)
	default:
		p.skip = n
		p.expect(1, (*Probe).jpegMarker)
	}
}

func (p *Probe) jpegFrame(b []byte) {
	precision, components := b[0], b[5]
	switch {
	case precision != 8:
		p.refuse(RuleImageBitDepth, "image precision "+strconv.Itoa(int(precision))+"-bit",
			"WhatsApp delivers 8-bit images only")
	case components == 4:
		p.refuse(RuleImageColor, "image with 4 colour components (CMYK or YCCK)",
			"WhatsApp delivers 8-bit RGB or RGBA images, not CMYK")
	default:
		p.done = true
	}
}

// PNG: the signature and the IHDR chunk, always first (PNG, 11.2.2).
func (p *Probe) pngHeader(b []byte) {
	if string(b[:8]) != "\x89PNG\r\n\x1a\n" || string(b[12:16]) != "IHDR" {
		p.giveUp()
		return
	}
	if depth := b[24]; depth > 8 {
		p.refuse(RuleImageBitDepth, "image bit depth "+strconv.Itoa(int(depth)),
			"WhatsApp delivers 8-bit images only")
		return
	}
	p.done = true
}

// WebP: the RIFF header and the first chunk, which holds the canvas size
// and, in VP8X, the animation flag (RFC 9649).
func (p *Probe) webpHeader(b []byte) {
	if string(b[:4]) != "RIFF" || string(b[8:12]) != "WEBP" {
		p.giveUp()
		return
	}
	switch string(b[12:16]) {
	case "VP8 ":
		p.expect(10, (*Probe).webpVP8)
	case "VP8L":
		p.expect(5, (*Probe).webpVP8L)
	case "VP8X":
		p.expect(10, (*Probe).webpVP8X)
	default:
		p.giveUp()
	}
}

func (p *Probe) webpVP8(b []byte) {
	if b[3] != 0x9D || b[4] != 0x01 || b[5] != 0x2A {
		p.giveUp()
		return
	}
	le := binary.LittleEndian
	p.sticker(int(le.Uint16(b[6:])&0x3FFF), int(le.Uint16(b[8:])&0x3FFF), false)
}

func (p *Probe) webpVP8L(b []byte) {
	if b[0] != 0x2F {
		p.giveUp()
		return
	}
	bits := binary.LittleEndian.Uint32(b[1:])
	p.sticker(int(bits&0x3FFF)+1, int(bits>>14&0x3FFF)+1, false)
}

func (p *Probe) webpVP8X(b []byte) {
	le24 := func(b []byte) int { return int(b[0]) | int(b[1])<<8 | int(b[2])<<16 }
	p.sticker(le24(b[4:])+1, le24(b[7:])+1, b[0]&0x02 != 0)
}

// sticker checks a sticker's canvas, and sets its size limit.
func (p *Probe) sticker(w, h int, animated bool) {
	if w != StickerSide || h != StickerSide {
		p.refuse(RuleStickerDimensions, "sticker of "+strconv.Itoa(w)+"×"+strconv.Itoa(h)+" pixels",
			"WhatsApp delivers stickers of 512×512 pixels only")
		return
	}
	p.done = true
	p.limit, p.limitName = StaticStickerLimit, "static sticker"
	if animated {
		p.limit, p.limitName = AnimatedStickerLimit, "animated sticker"
	}
	if p.size > p.limit {
		p.refuse(RuleStickerSize, p.limitName+" of "+kib(p.size), "WhatsApp delivers "+p.limitName+"s of at most "+kib(p.limit))
	}
}

// Ogg: the first page, whose first packet is the codec's identification
// header (RFC 3533; Opus: RFC 7845, 5.1).
func (p *Probe) oggPage(b []byte) {
	if string(b[:4]) != "OggS" || b[26] == 0 {
		p.giveUp()
		return
	}
	p.expect(int(b[26]), (*Probe).oggSegments)
}

func (p *Probe) oggSegments(b []byte) {
	n := 0 // the first packet's length: lacing values up to one below 255
	for _, l := range b {
		n += int(l)
		if l < 255 {
			break
		}
	}
	if n < 8 {
		p.giveUp()
		return
	}
	p.expect(min(n, 19), (*Probe).oggCodec)
}

// oggCodecs are the identification headers of the codecs Ogg carries,
// other than Opus.
var oggCodecs = map[string]string{"\x01vorbis": "Vorbis", "\x7fFLAC": "FLAC", "Speex   ": "Speex", "\x80theora": "Theora"}

func (p *Probe) oggCodec(b []byte) {
	if string(b[:8]) == "OpusHead" {
		if len(b) >= 10 && b[9] != 1 {
			p.refuse(RuleAudioChannels, "Opus audio with "+strconv.Itoa(int(b[9]))+" channels",
				"WhatsApp plays single-channel (mono) Opus only")
			return
		}
		p.done = true
		return
	}
	for id, name := range oggCodecs {
		if len(b) >= len(id) && string(b[:len(id)]) == id {
			p.refuse(RuleAudioCodec, "audio codec "+name, "WhatsApp delivers Ogg audio as Opus only")
			return
		}
	}
	p.giveUp()
}
