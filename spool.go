package whatsappmedia

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// spoolRetryAfter is the Retry-After of a refusal for a full spool budget.
const spoolRetryAfter = 10 * time.Second

var errSpoolTooSlow = newError(http.StatusRequestTimeout, codeRequestTimeout,
	"The upload arrived too slowly while it waited on disk for the rest of its form; "+
		"send phoneNumberId and type before the file (or as X-Phone-Number-Id and X-Upload-Type headers) to stream it")

var errSpoolFull = &apiError{
	Status: http.StatusServiceUnavailable, Code: codeSpoolFull,
	Message: "Too many uploads are waiting on disk for the rest of their form; try again later, " +
		"or send phoneNumberId and type before the file (or as X-Phone-Number-Id and X-Upload-Type headers) to stream it",
	Header: http.Header{"Retry-After": {strconv.Itoa(int(spoolRetryAfter.Seconds()))}},
}

// spoolPool holds one spoolUsage per spool directory, shared by the
// handlers of every loaded config (a reload keeps the count of uploads in
// flight).
var spoolPool = caddy.NewUsagePool()

// spoolUsage counts the bytes reserved by uploads spooling to one
// directory, in all and by account.
type spoolUsage struct {
	dir string
	shares
}

func (*spoolUsage) Destruct() error { return nil }

func loadSpoolUsage(dir string) *spoolUsage {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	v, _, _ := spoolPool.LoadOrNew(dir, func() (caddy.Destructor, error) { return &spoolUsage{dir: dir}, nil })
	return v.(*spoolUsage)
}

// spoolChunk is the step in which a spooling upload reserves its bytes:
// as they arrive, so that uploads that trickle hold what they sent, not
// what they declared.
const spoolChunk = 1 << 20

// spoolReservation is what one spooling upload holds of the budget.
type spoolReservation struct {
	u             *spoolUsage
	account       string
	budget, share int64
	limit         int64 // the most the upload may spool: max_size, or its length
	held          int64
}

// grow makes the reservation cover total bytes, reserving ahead in
// spoolChunk steps (never past limit), or reports false.
func (s *spoolReservation) grow(total int64) bool {
	if total <= s.held {
		return true
	}
	n := max(total-s.held, min(spoolChunk, s.limit-s.held))
	if s.u.take(s.account, n, s.share, s.budget) != shareTaken {
		return false
	}
	s.held += n
	return true
}

func (s *spoolReservation) release() {
	if s.held > 0 {
		s.u.give(s.account, s.held)
		s.held = 0
	}
}

// reserveSpool starts acct's reservation in the spool budget with a first
// chunk (at most the request's length), before the file is read: an
// upload that could not spool a byte is refused at once.
func (h *Handler) reserveSpool(r *http.Request, acct *Account) (*spoolReservation, *apiError) {
	res := &spoolReservation{u: h.spoolUsage, account: acct.ID, budget: h.SpoolBudget, share: h.SpoolShare, limit: h.MaxSize}
	if r.ContentLength > 0 && r.ContentLength < res.limit {
		res.limit = r.ContentLength
	}
	first := min(int64(spoolChunk), res.limit)
	if res.u.take(res.account, first, res.share, res.budget) != shareTaken {
		metrics.spoolFull.Inc()
		return nil, errSpoolFull
	}
	res.held = first
	return res, nil
}

// spoolFile is a file part held on disk.
type spoolFile struct {
	f    *os.File
	name string // set while the file still has a name to remove
}

// spool copies a file part to a temporary file, at most max_size bytes,
// each byte reserved in res before it is written. On systems that allow it
// the file is unlinked at once, so that nothing is left behind even if the
// process dies.
func (h *Handler) spool(w http.ResponseWriter, part io.Reader, res *spoolReservation) (*spoolFile, int64, *apiError) {
	f, err := os.CreateTemp(h.SpoolDir, "whatsapp-media-*.upload")
	if err != nil {
		return nil, 0, errInternal.withCause(err)
	}
	metrics.spooled.Inc()
	s := &spoolFile{f: f, name: f.Name()}
	if os.Remove(s.name) == nil {
		s.name = ""
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	// A client that stops sending is cut off after stall_timeout.
	guard := newStallGuard(time.Duration(h.StallTimeout), func() {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	})
	lr := &limitReader{r: progressReader{part, guard}, max: h.MaxSize}
	n, ae := h.spoolCopy(f, lr, *bp, res)
	guard.stop()
	if guard.fired() {
		ae = errClientStalled
	}
	if ae != nil {
		s.close()
		return nil, 0, ae
	}
	return s, n, nil
}

// spoolCopy copies src to f through buf, reserving each byte in res
// first, and cuts off a client that sends slower than spool_min_rate
// once stall_timeout has passed.
func (h *Handler) spoolCopy(f io.Writer, src io.Reader, buf []byte, res *spoolReservation) (int64, *apiError) {
	start := time.Now()
	var n int64
	for {
		m, err := src.Read(buf)
		if m > 0 {
			if !res.grow(n + int64(m)) {
				metrics.spoolFull.Inc()
				return n, errSpoolFull
			}
			if _, werr := f.Write(buf[:m]); werr != nil {
				return n, errInternal.withCause(werr)
			}
			n += int64(m)
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil {
			return n, spoolError(err)
		}
		if elapsed := time.Since(start); elapsed > time.Duration(h.StallTimeout) &&
			float64(n)/elapsed.Seconds() < float64(h.SpoolMinRate) {
			return n, errSpoolTooSlow
		}
	}
}

// spoolError answers a failed spooling copy.
func spoolError(err error) *apiError {
	var pe *os.PathError
	switch {
	case errors.Is(err, errFileTooLarge):
		return errTooLarge
	case errors.Is(err, errFormTooLarge):
		return errFormOverhead.withCause(err)
	case errors.As(err, &pe):
		return errInternal.withCause(err)
	}
	return errMalformedForm.withCause(err)
}

func (s *spoolFile) head() []byte {
	b := make([]byte, media.SniffLen)
	n, _ := s.f.ReadAt(b, 0)
	return b[:n]
}

func (s *spoolFile) close() {
	_ = s.f.Close()
	if s.name != "" {
		_ = os.Remove(s.name)
	}
}
