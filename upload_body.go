package whatsappmedia

import (
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

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
// hold a Read that transportBody.stop waits for.
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

// errBodyStopped is what a stopped transportBody answers to late reads.
var errBodyStopped = errors.New("upload body stopped")

// transportBody is the part of an upload's body to Meta that reads from the
// client's request: the file's bytes, and the check of the rest of a
// multipart form (graph.go frames it). net/http's transport may go on
// reading a request body
// in its own goroutine after Client.Do returns (when Meta answers early,
// or fails), so every Read holds the semaphore sem, and stop waits for a
// Read in progress to end before the handler touches the client's body or
// this reader's state again.
type transportBody struct {
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
	// release ends a Read blocked on the source: it moves the client
	// connection's read deadline to now, or cancels an origin's fetch.
	release func()
}

// newTransportBody returns a transportBody; its source r (and guard) must be
// set before the first Read.
func newTransportBody() *transportBody {
	return &transportBody{sem: make(chan struct{}, 1)}
}

func (b *transportBody) Read(p []byte) (int, error) {
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
func (b *transportBody) Close() error { return nil }

// stop ends all further reads and returns the sticky error of the source
// (io.EOF when it was read to the end). A Read in progress is given up to
// wait to end by itself: a client that is still sending lets it end at
// once, and its body stays readable, so that a refusal can be answered
// with the rest of the body drained (linger.go). A Read still blocked
// after that (a stalled client) is released by release, which moves the
// client connection's read deadline to now (or cancels the fetch of an
// upload from a URL): Meta has answered or failed, so the rest of that
// body is no longer wanted, and the connection will close.
// The error that this provokes is reported as errBodyStopped; refusals
// made before (a finish function's, the size limit's) are kept.
func (b *transportBody) stop(wait time.Duration) error {
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
			b.release()
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

// clientFile is the client's side of an upload to Meta: the file's bytes,
// bounded by max_size and counted, read by net/http's transport through a
// transportBody, and watched by the stall guard. No byte taken from the
// client, or taken by Meta, for stall_timeout cancels the request to
// Meta; which side stalled decides the answer. Every read from the client
// counts as progress, so a slow but steady client is never cut off.
type clientFile struct {
	body    *transportBody
	file    *limitReader
	guard   *stallGuard
	stalled atomic.Bool // the client stalled, not Meta
	// stallAnswer answers a stalled source: errClientStalled for the
	// client, the origin's timeout for an upload from a URL; readFailed a
	// source whose read failed: the client's body, or the origin's.
	stallAnswer *apiError
	readFailed  func(error) *apiError
}

func (h *Handler) newClientFile(w http.ResponseWriter, u metaUpload, limit int64, cancel func(), probe *probeReader) *clientFile {
	c := &clientFile{body: newTransportBody(), stallAnswer: errClientStalled, readFailed: clientBodyError}
	c.body.release = func() { _ = http.NewResponseController(w).SetReadDeadline(time.Now()) }
	if u.origin != nil {
		c.body.release, c.stallAnswer, c.readFailed = u.origin.cancel, errOriginStalled, originBodyError
	}
	c.guard = newStallGuard(time.Duration(h.StallTimeout), func() {
		if c.body.reading.Load() {
			// net/http's transport, once cancelled, still waits for its
			// body Read to return: release it.
			c.stalled.Store(true)
			c.body.release()
		}
		cancel()
	})
	c.file = &limitReader{r: fillReader{r: progressReader{u.file.body, c.guard}, stop: &c.body.stopping}, max: limit}
	var src io.Reader = c.file
	if probe != nil {
		probe.r, src = c.file, probe
	}
	if u.finish != nil {
		src = io.MultiReader(src, &funcReader{fn: u.finish})
	}
	c.body.r, c.body.guard = src, c.guard
	return c
}

// end stops the body once Meta has answered or failed (waiting up to wait
// for a Read in progress, see transportBody.stop), counts the bytes,
// and reports whether the whole file went to Meta, or the client's side's
// reason for the upload's failure (tooLarge for a file over its limit).
// With a Content-Length (size >= 0), Meta may answer before the
// transport's final Read sees EOF, so there the file's byte count is what
// tells.
func (c *clientFile) end(w http.ResponseWriter, size int64, wait time.Duration, tooLarge *apiError) (sent bool, ae *apiError) {
	err := c.body.stop(wait)
	metrics.bytes.WithLabelValues("upload").Add(float64(c.file.n))
	c.guard.stop()
	if c.guard.fired() {
		if c.stalled.Load() {
			return false, c.stallAnswer
		}
		return false, errUpstreamTimeout.withCause(errors.New("meta took no bytes for stall_timeout"))
	}
	if err == nil || errors.Is(err, io.EOF) || errors.Is(err, errBodyStopped) {
		return errors.Is(err, io.EOF) || (size >= 0 && c.file.n == size), nil
	}
	if errors.Is(err, errFileTooLarge) {
		return false, tooLarge
	}
	if errors.As(err, &ae) {
		return false, ae
	}
	return false, c.readFailed(err)
}

// clientBodyError answers a request whose body could not be read: it
// ended early, was malformed, or the client went away.
func clientBodyError(err error) *apiError {
	return validationError("The request body could not be read in full").withCause(err)
}
