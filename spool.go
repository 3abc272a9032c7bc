package whatsappmedia

import (
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// spoolRetryAfter is the Retry-After of a refusal for a full spool budget.
const spoolRetryAfter = 10 * time.Second

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
// directory.
type spoolUsage struct {
	dir  string
	mu   sync.Mutex
	used int64
}

func (*spoolUsage) Destruct() error { return nil }

func loadSpoolUsage(dir string) *spoolUsage {
	if abs, err := filepath.Abs(dir); err == nil {
		dir = abs
	}
	v, _, _ := spoolPool.LoadOrNew(dir, func() (caddy.Destructor, error) { return &spoolUsage{dir: dir}, nil })
	return v.(*spoolUsage)
}

// reserve takes n bytes of a budget, and returns their release, or false
// when they would exceed it.
func (u *spoolUsage) reserve(n, budget int64) (func(), bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.used+n > budget {
		return nil, false
	}
	u.used += n
	var once sync.Once
	return func() {
		once.Do(func() {
			u.mu.Lock()
			u.used -= n
			u.mu.Unlock()
		})
	}, true
}

// reserveSpool reserves room for r's file part in the spool budget: its
// Content-Length, at most max_size, or max_size when it is unknown.
func (h *Handler) reserveSpool(r *http.Request) (func(), *apiError) {
	n := h.MaxSize
	if r.ContentLength > 0 && r.ContentLength < n {
		n = r.ContentLength
	}
	release, ok := h.spoolUsage.reserve(n, h.SpoolBudget)
	if !ok {
		metrics.spoolFull.Inc()
		return nil, errSpoolFull
	}
	return release, nil
}

// spoolFile is a file part held on disk.
type spoolFile struct {
	f    *os.File
	name string // set while the file still has a name to remove
}

// spool copies a file part to a temporary file, at most max_size bytes.
// On systems that allow it the file is unlinked at once, so that nothing
// is left behind even if the process dies.
func (h *Handler) spool(w http.ResponseWriter, part io.Reader) (*spoolFile, int64, *apiError) {
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
	n, err := io.CopyBuffer(writerOnly{f}, lr, *bp)
	guard.stop()
	if guard.fired() {
		s.close()
		return nil, 0, errClientStalled
	}
	if err != nil {
		s.close()
		return nil, 0, spoolError(err)
	}
	return s, n, nil
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
