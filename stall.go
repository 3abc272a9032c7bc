package whatsappmedia

import (
	"io"
	"net/http"
	"sync"
	"time"
)

// stallGuard calls onStall when no progress was reported for d: the
// stall guard of a transfer, "no byte moved in either direction".
type stallGuard struct {
	d     time.Duration
	timer *time.Timer

	mu       sync.Mutex
	hasFired bool
	stopped  bool
}

func newStallGuard(d time.Duration, onStall func()) *stallGuard {
	g := &stallGuard{d: d}
	g.timer = time.AfterFunc(d, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.stopped {
			return
		}
		g.hasFired = true
		onStall()
	})
	return g
}

// progress pushes the deadline back.
func (g *stallGuard) progress() { g.timer.Reset(g.d) }

// stop disarms the guard, waiting for a running onStall: once it has
// returned, onStall is not running and will not run.
func (g *stallGuard) stop() {
	g.timer.Stop()
	g.mu.Lock()
	g.stopped = true
	g.mu.Unlock()
}

// fired reports whether the guard went off (and ran onStall). Asked after
// stop, the answer is final.
func (g *stallGuard) fired() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.hasFired
}

// progressReader reports every byte it reads to a stall guard.
type progressReader struct {
	r     io.Reader
	guard *stallGuard
}

func (p progressReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		p.guard.progress()
	}
	return n, err
}

// prelude is the stall guard of an upload's reads before its transfer to
// Meta begins: part headers and fields, the first bytes read to tell the
// file's type, a spooled file and the rest of its form. A client that
// sends nothing for stall_timeout there is cut off (408) like one that
// stalls mid-transfer. Once the transfer's own guard takes over, it ends.
type prelude struct {
	setGuard func(*stallGuard) // on the body the handler reads
	guard    *stallGuard
	ended    bool
}

// guardedBody is a request body whose reads a prelude hears of, for
// requests the lingering close does not watch (HTTP/2 and HTTP/3).
type guardedBody struct {
	io.ReadCloser
	guard *stallGuard
}

func (g *guardedBody) Read(p []byte) (int, error) {
	n, err := g.ReadCloser.Read(p)
	if n > 0 && g.guard != nil {
		g.guard.progress()
	}
	return n, err
}

// startPrelude guards r's body until end, whatever the protocol; nil for a
// request without a body.
func (h *Handler) startPrelude(w http.ResponseWriter, r *http.Request) *prelude {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	p := &prelude{guard: newStallGuard(time.Duration(h.StallTimeout), func() {
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	})}
	switch b := r.Body.(type) {
	case *watchedBody: // HTTP/1.x
		p.setGuard = func(g *stallGuard) { b.guard = g }
	default:
		gb := &guardedBody{ReadCloser: r.Body}
		r.Body = gb
		p.setGuard = func(g *stallGuard) { gb.guard = g }
	}
	p.setGuard(p.guard)
	return p
}

// end stops the guard; it must be called where no read of the body runs
// in another goroutine (before the transfer starts, or after it ended).
func (p *prelude) end() {
	if p == nil || p.ended {
		return
	}
	p.ended = true
	p.guard.stop()
	p.setGuard(nil)
}

// stalled reports whether the guard cut the client off.
func (p *prelude) stalled() bool { return p != nil && p.guard.fired() }
