package whatsappmedia

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/time/rate"
)

// Refusals and the unread body: the lingering close.
//
// Most clients (Go's, Node's fetch and axios, Python's requests and
// urllib) write the whole request body before they read the answer, and
// send no Expect: 100-continue. A refusal decided before the body is read
// (a wrong token, a file too large, Meta refusing the upload half-way)
// reaches them only if the connection stays open until they have written
// their body: closing a socket with unread data makes the kernel send a
// reset, and the client's write fails before it reads the answer. net/http
// avoids that for its own request bodies, but Caddy wraps the body, which
// turns that logic off.
//
// So after a refusal to an HTTP/1.x request whose body was not read to
// its end, the gateway answers (with a Content-Length), flushes, then reads
// and discards the rest of the body before the handler returns, like
// nginx's lingering_close, within bounds: at most max_size + 16 MiB read
// in all, at most 30 s, and no more than min(stall_timeout, 5s) without a
// byte, through a small buffer, at most max_draining at once. Every
// drained answer has Connection: close, so a client that sent Expect:
// 100-continue and was never told to go on gets it too, and what it sends
// after (having given up waiting) is drained the same way. It closes,
// without reading, when
//   - the declared Content-Length is beyond the bound: such a client may
//     still see a reset while it writes;
//   - a read of the body already failed (the stall guard moved the read
//     deadline of a stalled client, or the client went away): the body
//     cannot be read any more.
//
// A drain that hits a bound breaks the connection off. HTTP/2 and HTTP/3
// end a refused stream cleanly on their own.
const (
	lingerExtra   = 16 << 20 // bytes beyond max_size a refused body may be read
	lingerTotal   = 30 * time.Second
	lingerIdleMax = 5 * time.Second

	// DefaultMaxDraining bounds the drains in progress at once.
	DefaultMaxDraining = 1024
	drainBufferSize    = 4 << 10
	// drainBudget is the most bytes a second that all drains together
	// read (drainLimiter).
	drainBudget = 64 << 20
)

var drainBufs = sync.Pool{New: func() any { return new([drainBufferSize]byte) }}

// draining counts the drains in progress in the process, across configs.
var draining atomic.Int64

// takeDrain takes one of max drains, and returns its release, or false
// when max are in progress.
func takeDrain(max int) (func(), bool) {
	if draining.Add(1) > int64(max) {
		draining.Add(-1)
		return nil, false
	}
	metrics.draining.Inc()
	return func() {
		draining.Add(-1)
		metrics.draining.Dec()
	}, true
}

// watchedBody is the request body as the handler got it, and what was
// read of it: the routes read through it (and through readers they wrap
// around it), refuse drains it.
type watchedBody struct {
	rc    io.ReadCloser
	guard *stallGuard // while set (an upload's prelude), hears of every byte
	n     int64       // bytes read
	read  bool        // a Read reached the body: any 100 Continue went out
	err   error       // the first error: io.EOF once the body has ended
}

// watchBody puts a watchedBody in front of an HTTP/1.x request's body; it
// returns nil for a request without a body, or over HTTP/2 or HTTP/3.
func watchBody(r *http.Request) *watchedBody {
	if r.ProtoMajor != 1 || r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	b := &watchedBody{rc: r.Body}
	r.Body = b
	return b
}

func (b *watchedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	b.read = true
	n, err := b.rc.Read(p)
	b.n += int64(n)
	if n > 0 && b.guard != nil {
		b.guard.progress()
	}
	if err != nil {
		b.err = err
	}
	return n, err
}

func (b *watchedBody) Close() error { return b.rc.Close() }

// lingerMode is how a refusal ends its connection.
type lingerMode int

const (
	lingerNone  lingerMode = iota // nothing left to read: answer and keep the connection
	lingerClose                   // answer with Connection: close
	lingerDrain                   // answer with Connection: close, then drain the body within the bounds
)

// lingerMode decides. A drained connection always closes after its
// answer: a client that refused bodies cost a drain each must not keep a
// connection that only drains. A client that sent Expect: 100-continue
// and was told nothing yet may still be waiting (it then reads the answer
// and sends nothing), or have given up waiting and be sending its body
// (Go's client after a second): the drain takes what comes.
func (h *Handler) lingerMode(r *http.Request, b *watchedBody) lingerMode {
	switch {
	case b == nil || errors.Is(b.err, io.EOF):
		return lingerNone
	case b.err != nil:
		return lingerClose
	case r.ContentLength > h.MaxSize+lingerExtra:
		return lingerClose
	}
	return lingerDrain
}

// lingerIdle is the longest a drain, or an upload waiting for its body's
// last Read, waits for a byte from the client.
func (h *Handler) lingerIdle() time.Duration {
	return min(time.Duration(h.StallTimeout), lingerIdleMax)
}

// answerAndLinger writes a refusal and ends the connection as lingerMode
// decides.
func (h *Handler) answerAndLinger(w http.ResponseWriter, r *http.Request, b *watchedBody, ae *apiError) {
	switch mode := h.lingerMode(r, b); mode {
	case lingerNone:
		writeError(w, ae)
	case lingerClose:
		w.Header().Set("Connection", "close")
		writeError(w, ae)
		unwanted(w)
	case lingerDrain:
		w.Header().Set("Connection", "close")
		release, ok := takeDrain(h.MaxDraining)
		if !ok {
			// As many drains as max_draining are running: this client
			// may see a reset instead of the answer, but no crowd of
			// refused uploads holds the gateway.
			metrics.drainsRefused.Inc()
			writeError(w, ae)
			unwanted(w)
			return
		}
		defer release()
		rc := http.NewResponseController(w)
		// Without full duplex, net/http would read up to 256 KiB of the
		// body itself before writing the answer's header.
		_ = rc.EnableFullDuplex()
		writeError(w, ae)
		_ = rc.Flush()
		h.drain(rc, b)
	}
}

// drainLimiter is the drains' budget, shared by those that read: refused
// bodies sent as fast as clients can must not take the CPU that
// transfers need. A drain alone reads a body of the largest size drained
// (max_size + 16 MiB, 116 MiB by default) in under 2 s; many fast ones
// share the budget, and those that cannot finish within the 30 s bound
// are broken off. Idle drains take none of it.
var drainLimiter = rate.NewLimiter(rate.Limit(drainBudget), copyBufferSize)

// drainRead reads once into the small buffer, or, when the client is
// sending fast (the last read filled its buffer), into a copy buffer
// taken for this read only: an idle drain holds 4 KiB, a fast one costs a
// read per 64 KiB rather than per 4 KiB.
func drainRead(b *watchedBody, small *[drainBufferSize]byte, fast bool, limit int64) int {
	buf := small[:]
	if fast {
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		buf = *bp
	}
	n, _ := b.Read(buf[:min(int64(len(buf)), limit-b.n+1)])
	return n
}

// unwanted ends all reading of a request body that will not be drained:
// net/http itself would otherwise read up to 256 KiB of it when the body
// is closed, waiting on a client that sends nothing. The answer is
// written by then, and goes out as the connection closes.
func unwanted(w http.ResponseWriter) {
	_ = http.NewResponseController(w).SetReadDeadline(time.Now())
}

// drain reads and discards the rest of a refused body within the bounds.
// When the body did not end within them, it breaks the connection: the
// answer is out, and net/http must not read what is left of the body as
// the next request.
func (h *Handler) drain(rc *http.ResponseController, b *watchedBody) {
	start, from := time.Now(), b.n
	end := start.Add(lingerTotal)
	limit := h.MaxSize + lingerExtra
	// A small buffer: a drain is paid for by a client that was refused,
	// and there may be max_draining of them at once, most of them idle
	// in a Read (nginx lingers with a few KiB too). A client that fills it
	// at once is sending fast: it gets a copy buffer, so that draining it
	// costs a read syscall per 64 KiB rather than per 4 KiB.
	small := drainBufs.Get().(*[drainBufferSize]byte)
	defer drainBufs.Put(small)
	budget, cancel := context.WithDeadline(context.Background(), end)
	defer cancel()
	full := false // the last read filled its buffer: the client is sending fast
	for b.err == nil && b.n <= limit {
		deadline := time.Now().Add(h.lingerIdle())
		if deadline.After(end) {
			deadline = end
		}
		if rc.SetReadDeadline(deadline) != nil {
			return // not a connection of net/http's (a test's recorder): nothing to protect
		}
		n := drainRead(b, small, full, limit)
		full = n == len(small) || n == copyBufferSize
		if n > 0 && drainLimiter.WaitN(budget, n) != nil {
			break // its share of the budget would take it past the 30 s bound
		}
	}
	_ = rc.SetReadDeadline(time.Time{})
	metrics.drained.Add(float64(b.n - from))
	if errors.Is(b.err, io.EOF) {
		return
	}
	if ce := h.logger.Check(zapcore.DebugLevel, "refused body not drained; closing the connection"); ce != nil {
		ce.Write(zap.Int64("drained", b.n-from), zap.Int64("read", b.n),
			zap.Duration("duration", time.Since(start)), zap.NamedError("cause", b.err))
	}
	panic(http.ErrAbortHandler)
}
