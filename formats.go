package whatsappmedia

import (
	"encoding/json"
	"io"
	"net/http"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// The delivery rules (format_checks): an upload's bytes pass through a
// media.Probe on their way to Meta. The file's first bytes (the 3 KiB
// read for sniffing, before the request to Meta is made) are probed
// first, so that a rule they already break (a PNG's or an Ogg file's, a
// sticker's canvas, a JPEG's frame when no large EXIF block comes first)
// is answered without a connection to Meta. Then every later read from the
// client goes through the probe before the transport takes it: the read
// that shows a violation is never handed on, the request to Meta fails
// there, short of its end, and Meta, whose multipart body never closed,
// completes nothing. An MP4 whose moov box follows its media data is so
// judged at the file's end, before its last bytes go.

// codeNotDeliverable answers a file that breaks a delivery rule.
const codeNotDeliverable = "MEDIA_NOT_DELIVERABLE"

// checkFormat probes the file's first bytes, head, when format checks
// are on and WhatsApp states rules for files of type mimeType. It returns
// the reader that goes on probing the rest of the file (nil when there is
// nothing to probe), or the refusal of a file that head already shows to
// break a rule.
func (h *Handler) checkFormat(mimeType string, size int64, head []byte) (*probeReader, *apiError) {
	if h.FormatChecks != nil && !*h.FormatChecks {
		return nil, nil
	}
	p := media.NewProbe(mimeType, size)
	if p == nil {
		return nil, nil
	}
	if _, err := p.Write(head); err != nil {
		return nil, notDeliverable(p.Violation())
	}
	return &probeReader{p: p, skip: int64(len(head))}, nil
}

// notDeliverable is the answer to a file that breaks rule v, counted by
// rule when it is given.
func notDeliverable(v *media.Violation) *apiError {
	details, _ := json.Marshal(map[string]string{"rule": v.Rule})
	ae := newError(http.StatusUnprocessableEntity, codeNotDeliverable, v.Error())
	ae.Details, ae.counter = details, metrics.undeliverable.WithLabelValues(v.Rule)
	return ae
}

// probeReader passes the file's bytes from r through the probe p. The
// first skip bytes were probed already (the head).
type probeReader struct {
	r    io.Reader
	p    *media.Probe
	skip int64
	err  *apiError // the refusal, once there is one
}

func (pr *probeReader) Read(b []byte) (int, error) {
	if pr.err != nil {
		return 0, pr.err
	}
	n, err := pr.r.Read(b)
	seen := b[:n]
	if pr.skip > 0 {
		k := int(min(pr.skip, int64(n)))
		seen, pr.skip = seen[k:], pr.skip-int64(k)
	}
	if _, perr := pr.p.Write(seen); perr != nil {
		pr.err = notDeliverable(pr.p.Violation())
		return 0, pr.err
	}
	return n, err
}
