package media

import (
	"encoding/binary"
	"math"
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

type mp4Track struct{ handler, codec [4]byte }

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
// the first entry's size and format.
func (p *Probe) mp4SampleEntry(b []byte) {
	if binary.BigEndian.Uint32(b[4:]) > 0 {
		copy(p.mp4.track.codec[:], b[12:16])
	}
	p.skip = p.mp4.end - p.off
	p.mp4Next(p.mp4.end)
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
		if c := string(t.codec[:]); c != "avc1" && c != "avc3" {
			p.refuse(RuleVideoCodec, "video codec "+fourCC(t.codec), "WhatsApp delivers H.264 only")
		}
	case "soun":
		p.mp4.audio++
		switch {
		case string(t.codec[:]) != "mp4a":
			p.refuse(RuleVideoAudioCodec, "audio codec "+fourCC(t.codec), "WhatsApp delivers video with AAC audio only")
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
