package whatsappmedia

import (
	"bytes"
	"encoding/json"
	"io"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// uploadWays are the ways a client sends a file: both modes, with and
// without a length, streamed and spooled, and every way of naming its
// type. Each returns the request for a file of type typ named name.
var uploadWays = map[string]func(e *env, name, typ string, data []byte) answer{
	"raw, Content-Type": func(e *env, name, typ string, data []byte) answer {
		return e.do(e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": typ}))
	},
	"raw, chunked, X-Upload-Type": func(e *env, name, typ string, data []byte) answer {
		return e.do(e.rawUpload(tokPremium, io.MultiReader(bytes.NewReader(data)), map[string]string{"X-Phone-Number-Id": phoneA,
			"Content-Type": "application/octet-stream", "X-Upload-Type": typ}))
	},
	"raw, a kind and the file name": func(e *env, name, typ string, data []byte) answer {
		return e.do(e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{"X-Phone-Number-Id": phoneA,
			"X-Upload-Type": kindOf(typ), "X-Filename": name}))
	},
	"raw, sniffed": func(e *env, name, typ string, data []byte) answer {
		return e.do(e.rawUpload(tokPremium, bytes.NewReader(data), map[string]string{"X-Phone-Number-Id": phoneA}))
	},
	"form, phone first, part type": func(e *env, name, typ string, data []byte) answer {
		return e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), filePart(name, typ, data)))
	},
	"form, phone first, type field, no name": func(e *env, name, typ string, data []byte) answer {
		return e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneA), field("type", typ), filePart("blob", "", data)))
	},
	"form, file first (spooled), kind after": func(e *env, name, typ string, data []byte) answer {
		return e.do(e.formUpload(tokPremium, filePart("blob"+path.Ext(name), "application/octet-stream", data),
			field("phoneNumberId", phoneA), field("type", kindOf(typ))))
	},
}

func kindOf(typ string) string {
	for _, k := range []string{"image", "sticker", "video", "audio"} {
		if media.InKind(k, typ) {
			return k
		}
	}
	return ""
}

// settledUploads waits for the emulator to finish every request it got,
// and returns what it recorded.
func settledUploads(t *testing.T, e *env) []string {
	t.Helper()
	require.Eventually(t, func() bool { return e.emu.InFlight() == 0 }, 5*time.Second, time.Millisecond)
	var ids []string
	for _, u := range e.emu.Uploads() {
		if u.MediaID != "" {
			ids = append(ids, u.MediaID)
		}
	}
	return ids
}

// Every format sample, in every way a client sends it: a file WhatsApp
// delivers is uploaded whole; one it cannot is answered 422 with the rule
// it breaks, and Meta completes nothing.
func TestFormatChecks(t *testing.T) {
	// The refused files go to an emulator of their own: a refused upload
	// may reach it after its answer (or never), and so after the next
	// subtest's Reset, where only a delivered file's upload may stand.
	for _, refused := range []bool{false, true} {
		t.Run(map[bool]string{false: "delivered", true: "refused"}[refused], func(t *testing.T) {
			e := newEnv(t)
			for _, s := range fixtures.FormatSamples {
				if (s.Rule != "") == refused {
					checkFormatSample(t, e, s)
				}
			}
		})
	}
}

// checkFormatSample sends the sample every way uploadWays knows.
func checkFormatSample(t *testing.T, e *env, s fixtures.FormatSample) {
	data, err := fixtures.FormatFile(s.Name)
	require.NoError(t, err)
	for way, send := range uploadWays {
		t.Run(s.Name+"/"+way, func(t *testing.T) {
			e.emu.Reset()
			before := testutil.ToFloat64(metrics.undeliverable.WithLabelValues(s.Rule))
			a := send(e, s.Name, s.Type, data)
			if s.Rule == "" {
				e.checkStored(a, data, s.Type)
				return
			}
			require.Equal(t, 422, a.Status, a.Raw)
			assert.Equal(t, codeNotDeliverable, a.Error)
			assert.False(t, a.Success)
			var details struct{ Rule string }
			require.NoError(t, json.Unmarshal(a.Details, &details))
			assert.Equal(t, s.Rule, details.Rule)
			assert.Contains(t, a.Message, ": WhatsApp ")
			assert.Empty(t, settledUploads(t, e), "Meta completed a refused upload")
			assert.Equal(t, before+1, testutil.ToFloat64(metrics.undeliverable.WithLabelValues(s.Rule)))
		})
	}
}

// A rule the first bytes break is answered before any request to Meta.
func TestFormatChecksHeadNeedsNoMeta(t *testing.T) {
	e := newEnv(t)
	head := []string{"image-cmyk.jpg", "image-12bit.jpg", "image-16bit.png", "sticker-600.webp",
		"sticker-static-large.webp", "vorbis.ogg", "voice-stereo.ogg"}
	for _, s := range fixtures.FormatSamples {
		if !slices.Contains(head, s.Name) {
			continue
		}
		data, err := fixtures.FormatFile(s.Name)
		require.NoError(t, err)
		a := uploadWays["raw, Content-Type"](e, s.Name, s.Type, data)
		assert.Equal(t, 422, a.Status, "%s: %s", s.Name, a.Raw)
	}
	assert.Empty(t, e.emu.Requests(), "a request reached Meta")
}

// The moov box after the media data: judged at the file's end, the
// upload to Meta is broken off before its end. The file is large enough
// (8 MB) that the request is under way at Meta before the verdict.
func TestFormatChecksMoovLast(t *testing.T) {
	e := newEnv(t)
	data, err := fixtures.PaddedVideo("hevc-moov-last.mp4", 8<<20, false)
	require.NoError(t, err)
	a := uploadWays["form, phone first, part type"](e, "clip.mp4", "video/mp4", data)
	require.Equal(t, 422, a.Status, a.Raw)
	assert.Equal(t, "video codec hvc1: WhatsApp delivers H.264 only", a.Message)
	require.Eventually(t, func() bool { return len(e.emu.Uploads()) == 1 }, 10*time.Second, time.Millisecond,
		"the upload was under way at Meta")
	up := e.emu.Uploads()[0]
	assert.Empty(t, up.MediaID, "Meta completed the upload")
	assert.False(t, up.ReceivedBodyOK, "Meta received the whole body")
	assert.Less(t, up.BodyBytes, int64(len(data)), "Meta received every byte of the file")
}

func TestFormatChecksOff(t *testing.T) {
	off := false
	e := newEnv(t, func(h *Handler) { h.FormatChecks = &off })
	for _, s := range fixtures.FormatSamples {
		if s.Rule == "" {
			continue
		}
		data, err := fixtures.FormatFile(s.Name)
		require.NoError(t, err)
		e.emu.Reset()
		e.checkStored(uploadWays["raw, Content-Type"](e, s.Name, s.Type, data), data, s.Type)
	}
}

// A sticker over its limit with no length given is cut off where it
// crosses it; the animated limit is the type's ceiling, which answers
// first (413) unless the ceilings are off.
func TestFormatChecksStickerSizes(t *testing.T) {
	animated, err := fixtures.FormatFile("sticker-animated.webp")
	require.NoError(t, err)
	big := append(bytes.Clone(animated), make([]byte, media.AnimatedStickerLimit)...)
	e := newEnv(t)
	a := uploadWays["raw, chunked, X-Upload-Type"](e, "a.webp", "image/webp", big)
	assert.Equal(t, 413, a.Status, a.Raw)
	e = newEnv(t, func(h *Handler) { h.DisableTypeCeilings = true })
	for _, way := range []string{"raw, Content-Type", "raw, chunked, X-Upload-Type", "form, phone first, part type"} {
		e.emu.Reset()
		a = uploadWays[way](e, "a.webp", "image/webp", big)
		assert.Equal(t, 422, a.Status, "%s: %s", way, a.Raw)
		assert.True(t, strings.HasPrefix(a.Message, "animated sticker "), a.Message)
		assert.Empty(t, settledUploads(t, e))
	}
}

// A refusal is counted when it is the answer: a client that stalls
// before its body ends is answered 408, whatever its bytes broke, and the
// rule's count does not move.
func TestFormatChecksCountedWhenAnswered(t *testing.T) {
	e := newEnv(t, shortStall)
	src, err := fixtures.FormatFile("image-12bit.jpg")
	require.NoError(t, err)
	app1 := append([]byte{0xFF, 0xE1, 0x28, 0x02}, make([]byte, 0x2800)...) // 10 KiB of metadata before the frame
	data := append(append(append([]byte{}, src[:2]...), app1...), src[2:]...)
	pr, pw := io.Pipe()
	go func() { _, _ = pw.Write(data) }() // the body never ends
	defer pw.Close()
	counter := metrics.undeliverable.WithLabelValues(media.RuleImageBitDepth)
	before := testutil.ToFloat64(counter)
	a := e.do(e.rawUpload(tokPremium, pr, map[string]string{"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg"}))
	assert.Equal(t, 408, a.Status, a.Raw)
	assert.Equal(t, before, testutil.ToFloat64(counter))
	assert.Empty(t, settledUploads(t, e))
	// The same file, whole: 422, counted once.
	a = uploadWays["raw, chunked, X-Upload-Type"](e, "a.jpg", "image/jpeg", data)
	assert.Equal(t, 422, a.Status, a.Raw)
	assert.Equal(t, before+1, testutil.ToFloat64(counter))
}
