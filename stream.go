package whatsappmedia

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// copyBufferSize is the size of pooled copy buffers and buffered readers.
const copyBufferSize = 64 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// readerPool hands out buffered readers of one size.
type readerPool struct{ p sync.Pool }

func newReaderPool(size int) *readerPool {
	return &readerPool{sync.Pool{New: func() any { return bufio.NewReaderSize(nil, size) }}}
}

func (rp *readerPool) get(r io.Reader) *bufio.Reader {
	br := rp.p.Get().(*bufio.Reader)
	br.Reset(r)
	return br
}

func (rp *readerPool) put(br *bufio.Reader) {
	br.Reset(nil)
	rp.p.Put(br)
}

var (
	// largeReaders read a source in copyBufferSize pieces for a reader
	// that asks for little at a time (mime/multipart's 4 KiB).
	largeReaders = newReaderPool(copyBufferSize)
	// sniffReaders are just large enough to peek at a file's first bytes
	// for MIME sniffing. Once those are read, a Read of at least that
	// size goes straight to the source: the file's bytes are not copied
	// once more through a buffer.
	sniffReaders = newReaderPool(media.SniffLen)
)

// writerOnly hides an io.Writer's other methods (ReadFrom), so that
// io.CopyBuffer uses the pooled buffer it is given.
type writerOnly struct{ io.Writer }

// errFileTooLarge is returned by a limitReader that saw more than its limit.
var errFileTooLarge = errors.New("file exceeds max_size")

// limitReader passes at most max bytes through, counting them, and fails
// with errFileTooLarge when the source has more.
type limitReader struct {
	r   io.Reader
	max int64
	n   int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if left := l.max - l.n + 1; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := l.r.Read(p)
	l.n += int64(n)
	if l.n > l.max {
		return n - int(l.n-l.max), errFileTooLarge
	}
	return n, err
}

// fillReader fills each read buffer from r as far as r allows before
// returning. The sources of an upload hand out at most a few KiB a Read
// (mime/multipart's reader buffers 4 KiB); net/http's transport writes,
// and for a chunked body flushes, one chunk for every Read, so filling
// its 32 KiB copy buffer first means far fewer chunks and writes. Once
// stop is set it returns what it has, so that a slow client does not
// hold a Read that requestBody.stop waits for.
type fillReader struct {
	r    io.Reader
	stop *atomic.Bool
}

func (f fillReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := f.r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
		if m == 0 || (n > 0 && f.stop != nil && f.stop.Load()) {
			break
		}
	}
	return n, nil
}

// funcReader runs fn at its first Read and then reports io.EOF, or fn's
// error. It lets the upload body check what follows the file part before
// the multipart body to Meta is closed.
type funcReader struct {
	fn   func() error
	done bool
	err  error
}

func (f *funcReader) Read([]byte) (int, error) {
	if !f.done {
		f.done = true
		if err := f.fn(); err != nil {
			f.err = err
		}
	}
	if f.err != nil {
		return 0, f.err
	}
	return 0, io.EOF
}

// stallGuard calls onStall when no progress was reported for d: the
// stall guard of a transfer, "no byte moved in either direction". Once
// stop has returned, onStall is not running and will not run.
type stallGuard struct {
	d     time.Duration
	timer *time.Timer

	mu      sync.Mutex
	fired   bool
	stopped bool
}

func newStallGuard(d time.Duration, onStall func()) *stallGuard {
	g := &stallGuard{d: d}
	g.timer = time.AfterFunc(d, func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.stopped {
			return
		}
		g.fired = true
		onStall()
	})
	return g
}

// progress pushes the deadline back.
func (g *stallGuard) progress() { g.timer.Reset(g.d) }

// stop disarms the guard, waiting for a running onStall; it reports
// whether the guard had fired.
func (g *stallGuard) stop() bool {
	g.timer.Stop()
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	return g.fired
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

// errBodyStopped is what a stopped requestBody answers to late reads.
var errBodyStopped = errors.New("upload body stopped")

// requestBody is the part of an upload's body to Meta that reads from the
// client's request: the file's bytes, and the check of the rest of a
// multipart form (graph.go frames it). net/http's transport may go on
// reading a request body
// in its own goroutine after Client.Do returns (when Meta answers early,
// or fails), so every Read holds the semaphore sem, and stop waits for a
// Read in progress to end before the handler touches the client's body or
// this reader's state again.
type requestBody struct {
	sem     chan struct{} // capacity 1: held by a Read, and by stop
	r       io.Reader
	err     error // first error from r, io.EOF once the file (and the form's check) is read
	stopped bool

	// guard, if set, hears of every byte read, and is disarmed once the
	// file has been read to its end: waiting for Meta's answer after that
	// is the response timeout's business.
	guard *stallGuard
	// reading is true while a Read waits on the source (the client), so
	// that a stall can be blamed on the right side.
	reading atomic.Bool
	// stopping is set when stop begins: a fillReader below ends its Read
	// at its next byte rather than filling its buffer.
	stopping atomic.Bool
}

// newRequestBody returns a requestBody; its source r (and guard) must be
// set before the first Read.
func newRequestBody() *requestBody {
	return &requestBody{sem: make(chan struct{}, 1)}
}

func (b *requestBody) Read(p []byte) (int, error) {
	b.sem <- struct{}{}
	defer func() { <-b.sem }()
	if b.stopped {
		return 0, errBodyStopped
	}
	if b.err != nil {
		return 0, b.err
	}
	b.reading.Store(true)
	n, err := b.r.Read(p)
	b.reading.Store(false)
	if err != nil {
		b.err = err
		if b.guard != nil {
			b.guard.stop()
		}
	} else if n > 0 && b.guard != nil {
		b.guard.progress()
	}
	return n, err
}

// Close is a no-op: the handler owns the client's body.
func (b *requestBody) Close() error { return nil }

// stop ends all further reads and returns the sticky error of the source
// (io.EOF when it was read to the end). A Read in progress is given up to
// wait to end by itself: a client that is still sending lets it end at
// once, and its body stays readable, so that a refusal can be answered
// with the rest of the body drained (linger.go). A Read still blocked
// after that (a stalled client) is released by moving the client
// connection's read deadline to now: Meta has answered or failed, so the
// rest of that body is no longer wanted, and the connection will close.
// The error that this provokes is reported as errBodyStopped; refusals
// made before (a finish function's, the size limit's) are kept.
func (b *requestBody) stop(w http.ResponseWriter, wait time.Duration) error {
	b.stopping.Store(true)
	forced := false
	select {
	case b.sem <- struct{}{}:
	default:
		t := time.NewTimer(wait)
		select {
		case b.sem <- struct{}{}:
		case <-t.C:
			forced = true
			_ = http.NewResponseController(w).SetReadDeadline(time.Now())
			b.sem <- struct{}{}
		}
		t.Stop()
	}
	defer func() { <-b.sem }()
	b.stopped = true
	err := b.err
	// A Read that the deadline released failed because of it, also one
	// inside a finish function reading the rest of the form: that is not
	// the client's fault, and Meta's answer (or failure) is what counts.
	if forced && err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, errFileTooLarge) {
		err = errBodyStopped
	}
	return err
}

// copyVerified copies src to w and checks that exactly want bytes came
// (when want >= 0) and that their SHA-256 is verify (when not nil). The
// last chunk read is written only once src has ended and everything has
// checked out, so a failed transfer never delivers the full length. It
// returns the bytes written and, when the copy failed, a reason for logs
// and metrics.
//
// Each chunk is written to the client whole, and hashed by a hasher
// goroutine while it is being written; writing smaller slices, or hashing
// in line, was measurably slower (BENCHMARKS.md has the figures). So the
// client side counts as moving for the stall guard once a chunk (up to
// copyBufferSize) is taken.
func copyVerified(w io.Writer, src io.Reader, want int64, verify []byte, guard *stallGuard) (written int64, reason string, err error) {
	// A ring of three buffers: one being read into, one being written
	// (and maybe still hashed), one that the hasher may still be reading.
	var ring [3]*[]byte
	for i := range ring {
		ring[i] = bufPool.Get().(*[]byte)
	}
	var hp *hashPipe
	if verify != nil {
		// A file of one chunk is hashed in line: a goroutine would cost
		// more than it saves.
		hp = newHashPipe(want >= 0 && want <= copyBufferSize)
	}
	defer func() {
		if hp != nil {
			hp.close() // the hasher is done with the buffers
		}
		for _, b := range ring {
			bufPool.Put(b)
		}
	}()
	var pending []byte
	var read int64
	for k := 0; ; k++ {
		buf := *ring[k%len(ring)]
		if hp != nil {
			hp.waitFor(k - len(ring)) // the chunk last read into buf is hashed
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			read += int64(n)
			if want >= 0 && read > want {
				return written, "too_long", fmt.Errorf("cdn sent more than %d bytes", want)
			}
			if hp != nil {
				hp.send(buf[:n])
			}
			if len(pending) > 0 {
				m, werr := w.Write(pending)
				written += int64(m)
				if werr != nil {
					return written, "client_write", werr
				}
				if guard != nil {
					guard.progress()
				}
			}
			pending = buf[:n]
		} else {
			k-- // buf is still free
		}
		if errors.Is(rerr, io.EOF) {
			break
		}
		if rerr != nil {
			return written, "cdn_read", rerr
		}
	}
	if want >= 0 && read != want {
		return written, "truncated", fmt.Errorf("cdn sent %d of %d bytes", read, want)
	}
	if hp != nil {
		sum := hp.close()
		hp = nil
		if !bytes.Equal(sum, verify) {
			return written, "digest_mismatch", errors.New("the bytes do not match meta's sha256")
		}
	}
	m, werr := w.Write(pending)
	written += int64(m)
	if werr != nil {
		return written, "client_write", werr
	}
	return written, "", nil
}

// hashPipe hashes chunks with SHA-256 in a goroutine of its own, in the
// order they are sent, or in line.
type hashPipe struct {
	todo       chan []byte
	acks       chan struct{}
	sent, done int
	sum        []byte
	inline     hash.Hash // set when hashing in line
}

func newHashPipe(inline bool) *hashPipe {
	if inline {
		return &hashPipe{inline: sha256.New()}
	}
	hp := &hashPipe{todo: make(chan []byte, 4), acks: make(chan struct{}, 4)}
	go func() {
		h := sha256.New()
		for b := range hp.todo {
			h.Write(b)
			hp.acks <- struct{}{}
		}
		hp.sum = h.Sum(nil)
		close(hp.acks)
	}()
	return hp
}

// send queues a chunk; the caller must not change it until waitFor says
// it is hashed.
func (hp *hashPipe) send(b []byte) {
	if hp.inline != nil {
		hp.inline.Write(b)
		return
	}
	hp.todo <- b
	hp.sent++
}

// waitFor returns once chunk k (counting sent chunks from 0) is hashed.
func (hp *hashPipe) waitFor(k int) {
	for hp.done <= k && hp.done < hp.sent {
		<-hp.acks
		hp.done++
	}
}

// close waits for the hasher to finish and returns the digest.
func (hp *hashPipe) close() []byte {
	if hp.inline != nil {
		return hp.inline.Sum(nil)
	}
	close(hp.todo)
	for range hp.acks {
	}
	return hp.sum
}
