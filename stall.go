package whatsappmedia

import (
	"io"
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
