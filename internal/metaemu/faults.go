package metaemu

import (
	"io"
	"net/http"
	"time"
)

// FaultKind says how a fault breaks a request.
type FaultKind int

const (
	// Answer writes Status, ContentType and Body without reading the
	// request's body.
	Answer FaultKind = iota
	// Hang never answers: it waits until the client gives up (or the
	// emulator closes).
	Hang
	// Reset closes the connection without an answer, after reading
	// AfterBytes of the request body.
	Reset
	// Delay waits for Delay, then serves the request normally.
	Delay
	// CutBody (cdn) sends the headers of the whole file and AfterBytes of
	// its bytes, then drops the connection.
	CutBody
	// Corrupt (cdn) serves the file with the byte at offset AfterBytes
	// flipped.
	Corrupt
	// Redirect answers 302 to Location, or to the same URL when Location
	// is empty (use Times to let the next request through).
	Redirect
	// Slow (cdn) serves the file in 16 KiB pieces, Delay apart.
	Slow
	// IgnoreRange (cdn) serves the whole file, 200, whatever the Range.
	IgnoreRange
)

// Fault breaks requests to one route of the emulator.
type Fault struct {
	// Route is "upload", "media" or "cdn".
	Route string
	Kind  FaultKind
	// Times is how many requests the fault breaks; 0 means all until
	// the faults are cleared.
	Times int

	Status      int
	ContentType string
	Header      http.Header // more headers of an Answer
	Body        []byte
	AfterBytes  int64
	Delay       time.Duration
	Location    string

	used int
}

// Inject adds a fault. The oldest matching fault applies first.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes all faults.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

func (s *Server) takeFault(route string) *Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, f := range s.faults {
		if f.Route != route {
			continue
		}
		f.used++
		if f.Times > 0 && f.used >= f.Times {
			s.faults = append(s.faults[:i:i], s.faults[i+1:]...)
		}
		c := *f
		return &c
	}
	return nil
}

// applyFault breaks the request; it reports false when the request should
// then be served normally (Delay).
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f *Fault) bool {
	switch f.Kind {
	case Answer:
		for k, v := range f.Header {
			w.Header()[k] = v
		}
		if f.ContentType != "" {
			w.Header().Set("Content-Type", f.ContentType)
		}
		w.Header().Set("Connection", "close")
		w.WriteHeader(f.Status)
		_, _ = w.Write(f.Body)
		return true
	case Hang:
		select {
		case <-r.Context().Done():
		case <-s.closed:
		}
		return true
	case Reset:
		if f.AfterBytes > 0 {
			_, _ = io.CopyN(io.Discard, r.Body, f.AfterBytes)
		}
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				_ = conn.Close()
				return true
			}
		}
		panic(http.ErrAbortHandler)
	case Redirect:
		loc := f.Location
		if loc == "" {
			loc = r.URL.RequestURI()
		}
		http.Redirect(w, r, loc, http.StatusFound)
		return true
	case Delay:
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return true
		case <-s.closed:
			return true
		}
	}
	return false
}
