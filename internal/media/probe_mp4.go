package media

import (
	"encoding/binary"
	"math"
	"slices"
	"strconv"
)

// MP4 and 3GPP (ISO/IEC 14496-12): the boxes are walked as they pass.
// moov, and within it trak, mdia, minf and stbl, are entered; of their
// children only hdlr (the track's kind) and stsd (the first sample
// entry's format: the codec) are read, a few bytes each; every other box,
// the media data first of all, is skipped by its size. A track is judged
// when its trak box ends, and the file when moov ends, wherever moov is:
// before the media data or after it, at the file's end.

// mp4State is the MP4 parser's state: the containers open, and the track
// being read.
type mp4State struct {
	open  [5]mp4Container // moov > trak > mdia > minf > stbl
	depth int
	start int64   // offset of the box whose header is being read
	typ   [4]byte // its type, while a 64-bit size is read
	end   int64   // end of the box whose payload is being read
	track mp4Track
	audio int // audio tracks so far
}

type mp4Container struct {
	typ [4]byte
	end int64
}

type mp4Track struct {
	handler, codec [4]byte
	// audio is what an mp4a entry's decoder configuration names (mp4a
	// carries MP3 too): "" when it was not read or is AAC.
	audio string
}

// mp4Parent returns the box that a container entered must be in (zero
// for the top level), and whether typ is one.
func mp4Parent(typ [4]byte) ([4]byte, bool) {
	switch string(typ[:]) {
	case "moov":
		return [4]byte{}, true
	case "trak":
		return [4]byte{'m', 'o', 'o', 'v'}, true
	case "mdia":
		return [4]byte{'t', 'r', 'a', 'k'}, true
	case "minf":
		return [4]byte{'m', 'd', 'i', 'a'}, true
	case "stbl":
		return [4]byte{'m', 'i', 'n', 'f'}, true
	}
	return [4]byte{}, false
}

func (p *Probe) mp4Box(b []byte) {
	m := &p.mp4
	m.start = p.off - 8
	copy(m.typ[:], b[4:8])
	size := int64(binary.BigEndian.Uint32(b))
	if size == 1 {
		p.expect(8, (*Probe).mp4LargeSize)
		return
	}
	p.mp4Open(size, 8)
}

func (p *Probe) mp4LargeSize(b []byte) {
	size := binary.BigEndian.Uint64(b)
	if size > math.MaxInt64/2 {
		p.giveUp()
		return
	}
	p.mp4Open(int64(size), 16)
}

// mp4Open handles a box whose header (hdr bytes) has been read.
func (p *Probe) mp4Open(size, hdr int64) {
	m := &p.mp4
	parentEnd, parent := int64(math.MaxInt64), [4]byte{}
	if m.depth > 0 {
		parentEnd, parent = m.open[m.depth-1].end, m.open[m.depth-1].typ
	}
	end := parentEnd // size 0: the box runs to the end of its parent, or of the file
	if size != 0 {
		end = m.start + size
	}
	if size != 0 && size < hdr || end > parentEnd || end < m.start+hdr {
		p.giveUp()
		return
	}
	payload := end - (m.start + hdr)
	if want, ok := mp4Parent(m.typ); ok && want == parent {
		m.open[m.depth] = mp4Container{typ: m.typ, end: end}
		m.depth++
		if string(m.typ[:]) == "trak" {
			m.track = mp4Track{}
		}
		p.mp4Next(m.start + hdr)
		return
	}
	m.end = end
	switch {
	case end == math.MaxInt64:
		p.giveUp() // media data to the end of the file: no moov after it
	case string(m.typ[:]) == "hdlr" && string(parent[:]) == "mdia" && payload >= 12:
		p.expect(12, (*Probe).mp4Handler)
	case string(m.typ[:]) == "stsd" && string(parent[:]) == "stbl" && payload >= 16:
		p.expect(16, (*Probe).mp4SampleEntry)
	default:
		p.skip = payload
		p.mp4Next(end)
	}
}

// mp4Handler reads a hdlr box: version and flags, pre_defined, handler_type.
func (p *Probe) mp4Handler(b []byte) {
	copy(p.mp4.track.handler[:], b[8:12])
	p.skip = p.mp4.end - p.off
	p.mp4Next(p.mp4.end)
}

// mp4SampleEntry reads a stsd box: version and flags, entry_count, and
// the first entry's size and format; of an mp4a entry, also the entry
// itself (mp4AudioEntry), when it fits in the probe's buffer.
func (p *Probe) mp4SampleEntry(b []byte) {
	if binary.BigEndian.Uint32(b[4:]) > 0 {
		copy(p.mp4.track.codec[:], b[12:16])
	}
	size := int64(binary.BigEndian.Uint32(b[8:]))
	if string(b[12:16]) == "mp4a" && size > 8+28 && p.off+size-8 <= p.mp4.end {
		p.expect(int(min(size-8, maxNeed)), (*Probe).mp4AudioEntry)
		return
	}
	p.skip = p.mp4.end - p.off
	p.mp4Next(p.mp4.end)
}

// aacObjectTypes are the MPEG-4 systems object types of AAC (ISO/IEC
// 14496-1 objectTypeIndication): MPEG-4 audio, and MPEG-2 AAC's three
// profiles. mp4aCodecs name the others an mp4a entry may carry.
var (
	aacObjectTypes = []byte{0x40, 0x66, 0x67, 0x68}
	mp4aCodecs     = map[byte]string{0x69: "MP3", 0x6B: "MP3", 0xA5: "AC-3", 0xA6: "E-AC-3", 0xA9: "DTS", 0xDD: "Vorbis"}
)

// mp4AudioEntry reads an mp4a sample entry (ISO/IEC 14496-14): the audio
// sample entry's fields (28 bytes, 16 or 36 more in QuickTime's versions
// 1 and 2), then its child boxes, of which esds holds the decoder
// configuration and its object type. An entry it cannot read passes.
func (p *Probe) mp4AudioEntry(b []byte) {
	p.skip = p.mp4.end - p.off
	defer p.mp4Next(p.mp4.end)
	off := 28 + map[uint16]int{1: 16, 2: 36}[binary.BigEndian.Uint16(b[8:])]
	for off+8 <= len(b) {
		size := int(binary.BigEndian.Uint32(b[off:]))
		if size < 8 {
			return
		}
		if string(b[off+4:off+8]) == "esds" {
			if oti, ok := esdsObjectType(b[off+8 : min(off+size, len(b))]); ok && !slices.Contains(aacObjectTypes, oti) {
				p.mp4.track.audio = mp4aCodecs[oti]
				if p.mp4.track.audio == "" {
					p.mp4.track.audio = "object type 0x" + strconv.FormatUint(uint64(oti), 16)
				}
			}
			return
		}
		off += size
	}
}

// esdsObjectType finds the objectTypeIndication in an esds box's payload:
// version and flags, an ES_Descriptor (tag 3) whose optional fields its
// flags announce, then a DecoderConfigDescriptor (tag 4).
func esdsObjectType(b []byte) (byte, bool) {
	if len(b) < 4 {
		return 0, false
	}
	b = b[4:]
	body, ok := descriptor(b, 0x03)
	if !ok || len(body) < 3 {
		return 0, false
	}
	flags := body[2]
	body = body[3:]
	if flags&0x80 != 0 { // streamDependenceFlag: dependsOn_ES_ID
		body = body[min(2, len(body)):]
	}
	if flags&0x40 != 0 && len(body) > 0 { // URL_Flag: URLlength, URLstring
		body = body[min(1+int(body[0]), len(body)):]
	}
	if flags&0x20 != 0 { // OCRstreamFlag: OCR_ES_Id
		body = body[min(2, len(body)):]
	}
	dc, ok := descriptor(body, 0x04)
	if !ok || len(dc) < 1 {
		return 0, false
	}
	return dc[0], true
}

// descriptor returns the body of the descriptor with tag at the start of
// b (a tag byte, then a length in one to four bytes of 7 bits each).
func descriptor(b []byte, tag byte) ([]byte, bool) {
	if len(b) < 2 || b[0] != tag {
		return nil, false
	}
	n, i := 0, 1
	for ; i < len(b) && i <= 4; i++ {
		n = n<<7 | int(b[i]&0x7F)
		if b[i]&0x80 == 0 {
			break
		}
	}
	if i >= len(b) {
		return nil, false
	}
	body := b[i+1:]
	return body[:min(n, len(body))], true
}

// mp4Next closes the containers that end at or before next (the offset
// after the box just handled, whose skipped bytes are not needed to
// judge), judging each track as its trak closes, and the file as moov
// does; then it reads the next box's header.
func (p *Probe) mp4Next(next int64) {
	m := &p.mp4
	for m.depth > 0 && m.open[m.depth-1].end <= next {
		m.depth--
		switch string(m.open[m.depth].typ[:]) {
		case "trak":
			if p.mp4Judge(); p.done {
				return
			}
		case "moov":
			p.done = true
			return
		}
	}
	p.expect(8, (*Probe).mp4Box)
}

// mp4Judge checks the track just read. Meta: "Only H.264 video codec and
// AAC audio codec supported. Single audio stream or no audio stream."
func (p *Probe) mp4Judge() {
	t := &p.mp4.track
	if t.codec == [4]byte{} {
		return // no sample entry read: nothing to judge
	}
	switch string(t.handler[:]) {
	case "vide":
		if c := string(t.codec[:]); c != "avc1" && c != "avc2" && c != "avc3" && c != "avc4" {
			p.refuse(RuleVideoCodec, "video codec "+fourCC(t.codec), "WhatsApp delivers H.264 only")
		}
	case "soun":
		p.mp4.audio++
		switch {
		case string(t.codec[:]) != "mp4a":
			p.refuse(RuleVideoAudioCodec, "audio codec "+fourCC(t.codec), "WhatsApp delivers video with AAC audio only")
		case t.audio != "":
			p.refuse(RuleVideoAudioCodec, "audio codec "+t.audio+" (in mp4a)", "WhatsApp delivers video with AAC audio only")
		case p.mp4.audio > 1:
			p.refuse(RuleVideoAudioStreams, strconv.Itoa(p.mp4.audio)+" audio streams",
				"WhatsApp delivers video with a single audio stream or none")
		}
	}
}

// fourCC prints a box or codec type: as text when it is printable ASCII,
// else in hex.
func fourCC(c [4]byte) string {
	for _, b := range c {
		if b < 0x20 || b > 0x7E {
			return "0x" + strconv.FormatUint(uint64(binary.BigEndian.Uint32(c[:])), 16)
		}
	}
	return string(c[:])
}
