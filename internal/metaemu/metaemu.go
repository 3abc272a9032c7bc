// Package metaemu emulates the parts of Meta's WhatsApp Cloud API that the
// gateway talks to: media upload (POST /{version}/{phone-number-id}/media),
// media metadata (GET /{version}/{media-id}) and the media CDN that serves
// the bytes. It behaves like Meta where the gateway could notice: Meta's
// error bodies with fbtrace_id, file_size as a string, CDN URLs that expire
// and need the Bearer token and a User-Agent, Meta's supported types and
// size ceilings. Switches inject faults. Tests and the local demo share it.
package metaemu

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures an emulator.
type Config struct {
	// Tokens maps each valid Meta access token to the phone number ids of
	// its WhatsApp Business account.
	Tokens map[string][]string
	// Dir is where uploaded files are kept; empty means a new temporary
	// directory, removed by Close.
	Dir string
	// Discard keeps only each upload's size and digest, not its bytes
	// (for benchmarks); such media cannot be downloaded.
	Discard bool
	// DiscardUploads is Discard for uploads only: media added with
	// AddMedia are still stored and can be downloaded.
	DiscardUploads bool
	// URLTTL is how long a media URL works. Default: 5 minutes, as Meta's.
	URLTTL time.Duration
	// FileSizeAsNumber makes metadata carry file_size as a JSON number
	// instead of Meta's usual string.
	FileSizeAsNumber bool
	// CDNBase, if set, is the scheme and host put in media URLs (such as
	// http://cdn.example:8080); by default the emulator's own address.
	CDNBase string
	// NoSubcodes leaves error_subcode out of every error, as Meta
	// documents for v16.0 and later (docs/meta.md).
	NoSubcodes bool
	// Now is the emulator's clock, for media lifetimes. Default: time.Now.
	Now func() time.Time
}

// Media lifetimes (docs/meta.md): "Media IDs returned by the API expire
// after 30 days. Media IDs in webhooks expire after 7 days."
const (
	UploadedLifetime = 30 * 24 * time.Hour
	WebhookLifetime  = 7 * 24 * time.Hour
)

// Upload records one upload request as the emulator received it.
type Upload struct {
	Phone          string
	Header         http.Header
	ContentLength  int64 // the request's Content-Length header; -1 when chunked
	BodyBytes      int64 // the bytes of body actually received
	Fields         map[string]string
	FileName       string
	FileType       string // the file part's Content-Type
	Size           int64
	SHA256         string
	MediaID        string // set on success
	Status         int    // the status answered; 0 if the request was cancelled first
	Cancelled      bool   // the client cancelled or broke the request
	MetaErrorCode  int
	FinishedAt     time.Time
	ReceivedBodyOK bool // the multipart body was complete and well-formed
}

// Media is one stored media object.
type Media struct {
	ID       string
	Phone    string
	MimeType string
	SHA256   string
	Size     int64
	Path     string // empty in Discard mode
	// Created is when it was uploaded, or received from a customer.
	Created time.Time
	// FromCustomer marks media a customer sent to Phone (the media of a
	// webhook): no business phone uploaded it.
	FromCustomer bool
}

// expired reports whether m's id no longer works at now.
func (m *Media) expired(now time.Time) bool {
	life := UploadedLifetime
	if m.FromCustomer {
		life = WebhookLifetime
	}
	return !now.Before(m.Created.Add(life))
}

// Server is the emulator. It is an http.Handler.
type Server struct {
	cfg    Config
	secret []byte
	ownDir bool

	mu       sync.Mutex
	media    map[string]*Media
	uploads  []Upload
	requests []Request
	faults   []*Fault
	inFlight int
	resets   int // Resets so far, so that a request in flight across one is not recorded
	closed   chan struct{}
	closeMu  sync.Once
}

// Request records any request the emulator received.
type Request struct {
	Route     string // "upload", "media", "cdn", or "other"
	Method    string
	Path      string
	Query     string
	Header    http.Header
	Host      string
	Cancelled bool
}

// New returns an emulator. Call Close to remove its files.
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, media: make(map[string]*Media), closed: make(chan struct{})}
	if s.cfg.URLTTL == 0 {
		s.cfg.URLTTL = 5 * time.Minute
	}
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	if s.cfg.Dir == "" && !s.cfg.Discard {
		dir, err := os.MkdirTemp("", "metaemu-*")
		if err != nil {
			return nil, err
		}
		s.cfg.Dir, s.ownDir = dir, true
	}
	s.secret = make([]byte, 32)
	_, _ = rand.Read(s.secret)
	return s, nil
}

// Close releases hanging requests and removes the files the emulator made.
func (s *Server) Close() error {
	s.closeMu.Do(func() { close(s.closed) })
	if s.ownDir {
		return os.RemoveAll(s.cfg.Dir)
	}
	return nil
}

// Uploads returns what the upload endpoint received, oldest first.
func (s *Server) Uploads() []Upload {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.uploads)
}

// Requests returns every request received, oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// InFlight returns how many requests are being served now.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// Reset forgets the recorded requests and uploads and clears all faults;
// stored media stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uploads, s.requests, s.faults = nil, nil, nil
	s.resets++
}

// SetCDNBase sets the scheme and host put in media URLs from now on ("" for
// the emulator's own address).
func (s *Server) SetCDNBase(base string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cfg.CDNBase = base
}

// Media returns a stored media object.
func (s *Server) Media(id string) (Media, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.media[id]
	if !ok {
		return Media{}, false
	}
	return *m, true
}

// AddMedia stores a file as if phone had uploaded it and returns its id.
func (s *Server) AddMedia(phone, mimeType string, data []byte) (string, error) {
	return s.addMedia(phone, mimeType, data, false)
}

// AddCustomerMedia stores a file as if a customer had sent it to phone,
// as the media of a webhook, and returns its id.
func (s *Server) AddCustomerMedia(phone, mimeType string, data []byte) (string, error) {
	return s.addMedia(phone, mimeType, data, true)
}

func (s *Server) addMedia(phone, mimeType string, data []byte, fromCustomer bool) (string, error) {
	id := newID()
	sum := sha256.Sum256(data)
	m := &Media{ID: id, Phone: phone, MimeType: mimeType, SHA256: hex.EncodeToString(sum[:]),
		Size: int64(len(data)), Created: s.cfg.Now(), FromCustomer: fromCustomer}
	if !s.cfg.Discard {
		m.Path = filepath.Join(s.cfg.Dir, id)
		if err := os.WriteFile(m.Path, data, 0o600); err != nil {
			return "", err
		}
	}
	s.mu.Lock()
	s.media[id] = m
	s.mu.Unlock()
	return id, nil
}

var (
	uploadPath = regexp.MustCompile(`^/v[0-9]+\.[0-9]+/([0-9]+)/media$`)
	mediaPath  = regexp.MustCompile(`^/v[0-9]+\.[0-9]+/([0-9]+)$`)
)

// CDNPath is the path of media URLs, as on Meta's lookaside host.
const CDNPath = "/whatsapp_business/attachments/"

// ServeHTTP routes the emulator's endpoints.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := "other"
	var m []string
	switch {
	case r.URL.Path == CDNPath:
		route = "cdn"
	case r.Method == http.MethodPost:
		if m = uploadPath.FindStringSubmatch(r.URL.Path); m != nil {
			route = "upload"
		}
	default:
		if m = mediaPath.FindStringSubmatch(r.URL.Path); m != nil {
			route = "media"
		}
	}
	s.mu.Lock()
	s.inFlight++
	idx, gen := len(s.requests), s.resets
	s.requests = append(s.requests, Request{Route: route, Method: r.Method, Path: r.URL.Path,
		Query: r.URL.RawQuery, Header: r.Header.Clone(), Host: r.Host})
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		if r.Context().Err() != nil && gen == s.resets { // a Reset since forgot the request
			s.requests[idx].Cancelled = true
		}
		s.mu.Unlock()
	}()

	var bodyFault *Fault
	if f := s.takeFault(route); f != nil {
		switch f.Kind {
		case CutBody, Corrupt, Slow, IgnoreRange:
			bodyFault = f // applied while serving the bytes
		default:
			if s.applyFault(w, r, f) {
				return
			}
		}
	}
	switch route {
	case "upload":
		s.serveUpload(w, r, m[1])
	case "media":
		s.serveMedia(w, r, m[1])
	case "cdn":
		s.serveCDN(w, r, bodyFault)
	default:
		s.writeMetaError(w, http.StatusBadRequest, metaErr{Message: "Unknown path components: " + r.URL.Path,
			Type: "OAuthException", Code: 2500})
	}
}

// metaErr is Meta's error object, as its error codes page documents it
// (error_data) and its OpenAPI description adds (is_transient).
type metaErr struct {
	Message     string     `json:"message"`
	Type        string     `json:"type"`
	Code        int        `json:"code"`
	ErrorData   *errorData `json:"error_data,omitempty"`
	Subcode     int        `json:"error_subcode,omitempty"`
	IsTransient bool       `json:"is_transient,omitempty"`
	FBTraceID   string     `json:"fbtrace_id"`
}

type errorData struct {
	MessagingProduct string `json:"messaging_product"`
	Details          string `json:"details"`
}

// withDetails sets the error's error_data.details.
func (e metaErr) withDetails(details string) metaErr {
	e.ErrorData = &errorData{MessagingProduct: "whatsapp", Details: details}
	return e
}

// RateLimitFault is Meta's answer to a request over its rate limit:
// HTTP 429, code 80007, is_transient, on route, Times times.
func RateLimitFault(route string, times int) Fault {
	body, _ := json.Marshal(map[string]metaErr{"error": metaErr{
		Message: "(#80007) Rate limit hit", Type: "OAuthException", Code: 80007, IsTransient: true,
		FBTraceID: traceID(),
	}.withDetails("The WhatsApp Business Account has reached its rate limit.")})
	return Fault{Route: route, Kind: Answer, Status: http.StatusTooManyRequests, Times: times,
		ContentType: "application/json; charset=UTF-8", Body: body}
}

func (s *Server) writeMetaError(w http.ResponseWriter, status int, e metaErr) {
	if s.cfg.NoSubcodes {
		e.Subcode = 0
	}
	writeMetaError(w, status, e)
}

func writeMetaError(w http.ResponseWriter, status int, e metaErr) {
	if e.FBTraceID == "" {
		e.FBTraceID = traceID()
	}
	body, _ := json.Marshal(map[string]metaErr{"error": e})
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.Header().Set("WWW-Authenticate", `OAuth "Facebook Platform" "invalid_request" "`+e.Message+`"`)
	w.Header().Set("X-Fb-Trace-Id", e.FBTraceID)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

var errInvalidToken = metaErr{Message: "Invalid OAuth access token - Cannot parse access token", Type: "OAuthException", Code: 190}

func objectMissing(id string) metaErr {
	return metaErr{
		Message: "Unsupported get request. Object with ID '" + id + "' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api",
		Type:    "GraphMethodException", Code: 100, Subcode: 33,
	}
}

// phones returns the phone number ids of the request's Meta token, or
// false when the token is missing or unknown.
func (s *Server) phones(r *http.Request) ([]string, bool) {
	auth := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(auth, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, false
	}
	p, ok := s.cfg.Tokens[token]
	return p, ok
}

// sizeLimits are Meta's per-type ceilings.
var sizeLimits = map[string]int64{
	"audio/aac": 16 << 20, "audio/amr": 16 << 20, "audio/mpeg": 16 << 20, "audio/mp4": 16 << 20,
	"audio/ogg":  16 << 20,
	"text/plain": 100 << 20, "application/pdf": 100 << 20, "application/msword": 100 << 20,
	"application/vnd.ms-excel": 100 << 20, "application/vnd.ms-powerpoint": 100 << 20,
	"application/vnd.openxmlformats-officedocument.wordprocessingml.document":   100 << 20,
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet":         100 << 20,
	"application/vnd.openxmlformats-officedocument.presentationml.presentation": 100 << 20,
	"image/jpeg": 5 << 20, "image/png": 5 << 20, "image/webp": 500 << 10,
	"video/mp4": 16 << 20, "video/3gpp": 16 << 20,
}

// SupportedTypes lists the MIME types the emulator (like WhatsApp) accepts.
func SupportedTypes() []string {
	out := make([]string, 0, len(sizeLimits))
	for t := range sizeLimits {
		out = append(out, t)
	}
	slices.Sort(out)
	return out
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (s *Server) serveUpload(w http.ResponseWriter, r *http.Request, phone string) {
	up := Upload{Phone: phone, Header: r.Header.Clone(), ContentLength: r.ContentLength,
		Fields: map[string]string{}}
	body := &countingReader{r: r.Body}
	defer func() {
		_, _ = io.Copy(io.Discard, body) // count the rest
		up.BodyBytes = body.n
		up.FinishedAt = time.Now()
		if r.Context().Err() != nil {
			up.Cancelled = true
		}
		s.mu.Lock()
		s.uploads = append(s.uploads, up)
		s.mu.Unlock()
	}()
	fail := func(status int, e metaErr) {
		up.Status, up.MetaErrorCode = status, e.Code
		s.writeMetaError(w, status, e)
	}
	owned, ok := s.phones(r)
	if !ok {
		fail(http.StatusUnauthorized, errInvalidToken)
		return
	}
	if !slices.Contains(owned, phone) {
		e := objectMissing(phone)
		e.Message = strings.Replace(e.Message, "Unsupported get request", "Unsupported post request", 1)
		fail(http.StatusBadRequest, e)
		return
	}
	ct, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "multipart/form-data" || params["boundary"] == "" {
		fail(http.StatusBadRequest, metaErr{Message: "(#100) The parameter messaging_product is required.", Type: "OAuthException", Code: 100})
		return
	}
	mr := multipart.NewReader(body, params["boundary"])
	var tmp *os.File
	var tmpPath string
	defer func() {
		if tmp != nil {
			_ = tmp.Close()
			if tmpPath != "" {
				_ = os.Remove(tmpPath)
			}
		}
	}()
	for {
		part, err := mr.NextRawPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if r.Context().Err() != nil {
				return
			}
			fail(http.StatusBadRequest, metaErr{Message: "(#100) Invalid multipart body", Type: "OAuthException", Code: 100})
			return
		}
		name := part.FormName()
		if name != "file" {
			v, err := io.ReadAll(io.LimitReader(part, 64<<10))
			if err != nil {
				if r.Context().Err() == nil {
					fail(http.StatusBadRequest, metaErr{Message: "(#100) Invalid multipart body", Type: "OAuthException", Code: 100})
				}
				return
			}
			up.Fields[name] = string(v)
			continue
		}
		if tmp != nil {
			fail(http.StatusBadRequest, metaErr{Message: "(#100) Only one file may be uploaded", Type: "OAuthException", Code: 100})
			return
		}
		up.FileName, up.FileType = part.FileName(), part.Header.Get("Content-Type")
		var dst io.Writer = io.Discard
		if !s.cfg.Discard && !s.cfg.DiscardUploads {
			tmp, err = os.CreateTemp(s.cfg.Dir, "upload-*")
			if err != nil {
				fail(http.StatusInternalServerError, metaErr{Message: "An unknown error has occurred.", Type: "OAuthException", Code: 1})
				return
			}
			tmpPath = tmp.Name()
			dst = tmp
		}
		h := sha256.New()
		n, err := io.Copy(io.MultiWriter(dst, h), part)
		if err != nil {
			if r.Context().Err() == nil {
				fail(http.StatusBadRequest, metaErr{Message: "(#100) Invalid multipart body", Type: "OAuthException", Code: 100})
			}
			return
		}
		up.Size, up.SHA256 = n, hex.EncodeToString(h.Sum(nil))
	}
	up.ReceivedBodyOK = true
	if up.Fields["messaging_product"] != "whatsapp" {
		fail(http.StatusBadRequest, metaErr{Message: "(#100) The parameter messaging_product is required.", Type: "OAuthException", Code: 100})
		return
	}
	if up.SHA256 == "" {
		fail(http.StatusBadRequest, metaErr{Message: "(#100) The parameter file is required.", Type: "OAuthException", Code: 100})
		return
	}
	typ := up.Fields["type"]
	if typ == "" {
		typ = up.FileType
	}
	limit, ok := sizeLimits[typ]
	if !ok {
		fail(http.StatusBadRequest, metaErr{Message: fmt.Sprintf("(#100) Param file must be a file with one of the following types: %s. Received file of type '%s'.",
			strings.Join(SupportedTypes(), ", "), typ), Type: "OAuthException", Code: 100})
		return
	}
	if up.Size == 0 {
		fail(http.StatusBadRequest, metaErr{Message: "(#100) Param file must be a non-empty file", Type: "OAuthException", Code: 100})
		return
	}
	if up.Size > limit {
		fail(http.StatusBadRequest, metaErr{Message: "(#100) File Too Large", Type: "OAuthException", Code: 100})
		return
	}
	id := newID()
	m := &Media{ID: id, Phone: phone, MimeType: typ, SHA256: up.SHA256, Size: up.Size, Created: s.cfg.Now()}
	if tmp != nil {
		_ = tmp.Close()
		m.Path = filepath.Join(s.cfg.Dir, id)
		if err := os.Rename(tmpPath, m.Path); err != nil {
			fail(http.StatusInternalServerError, metaErr{Message: "An unknown error has occurred.", Type: "OAuthException", Code: 1})
			return
		}
		tmp, tmpPath = nil, ""
	}
	s.mu.Lock()
	s.media[id] = m
	s.mu.Unlock()
	up.MediaID, up.Status = id, http.StatusOK
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_, _ = fmt.Fprintf(w, `{"id":"%s"}`, id)
}

func (s *Server) serveMedia(w http.ResponseWriter, r *http.Request, id string) {
	owned, ok := s.phones(r)
	if !ok {
		s.writeMetaError(w, http.StatusUnauthorized, errInvalidToken)
		return
	}
	s.mu.Lock()
	m, found := s.media[id]
	s.mu.Unlock()
	visible := found && slices.Contains(owned, m.Phone) && !m.expired(s.cfg.Now())
	if p := r.URL.Query().Get("phone_number_id"); p != "" && visible {
		// Graph checks the phone against the one that uploaded the media;
		// a customer's media has none, and the parameter is refused.
		if m.FromCustomer {
			s.writeMetaError(w, http.StatusBadRequest, metaErr{
				Message: "(#100) Param phone_number_id is not a valid whatsapp business phone number id ID",
				Type:    "OAuthException", Code: 100})
			return
		}
		visible = p == m.Phone
	}
	if !visible {
		s.writeMetaError(w, http.StatusBadRequest, objectMissing(id))
		return
	}
	if r.Method == http.MethodDelete {
		s.mu.Lock()
		delete(s.media, id)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json; charset=UTF-8")
		_, _ = io.WriteString(w, `{"success":true}`)
		return
	}
	var size any = strconv.FormatInt(m.Size, 10)
	if s.cfg.FileSizeAsNumber {
		size = m.Size
	}
	body, _ := json.Marshal(map[string]any{
		"messaging_product": "whatsapp",
		"url":               s.mediaURL(r, id, time.Now().Add(s.cfg.URLTTL)),
		"mime_type":         m.MimeType,
		"sha256":            m.SHA256,
		"file_size":         size,
		"id":                id,
	})
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	_, _ = w.Write(body)
}

// mediaURL returns a signed URL for the media's bytes that works until exp.
func (s *Server) mediaURL(r *http.Request, id string, exp time.Time) string {
	s.mu.Lock()
	base := s.cfg.CDNBase
	s.mu.Unlock()
	if base == "" {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		base = scheme + "://" + r.Host
	}
	ext := strconv.FormatInt(exp.Unix(), 10)
	return base + CDNPath + "?mid=" + id + "&ext=" + ext + "&hash=" + s.sign(id, ext)
}

func (s *Server) sign(id, ext string) string {
	mac := hmac.New(sha256.New, s.secret)
	mac.Write([]byte(id + "." + ext))
	return hex.EncodeToString(mac.Sum(nil))[:32]
}

func (s *Server) serveCDN(w http.ResponseWriter, r *http.Request, fault *Fault) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// Meta's CDN turns away requests without a User-Agent; the emulator is
	// stricter and also refuses Go's default one, so that a client that
	// forgot to set its own is caught in tests.
	if ua := r.Header.Get("User-Agent"); ua == "" || strings.HasPrefix(ua, "Go-http-client/") {
		http.Error(w, "Sorry, this content isn't available right now", http.StatusForbidden)
		return
	}
	owned, ok := s.phones(r)
	if !ok {
		writeMetaError(w, http.StatusUnauthorized, errInvalidToken)
		return
	}
	q := r.URL.Query()
	id, ext, hash := q.Get("mid"), q.Get("ext"), q.Get("hash")
	if !hmac.Equal([]byte(hash), []byte(s.sign(id, ext))) {
		http.Error(w, "URL signature mismatch", http.StatusForbidden)
		return
	}
	if exp, err := strconv.ParseInt(ext, 10, 64); err != nil || time.Now().Unix() >= exp {
		http.Error(w, "URL signature expired", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	m, found := s.media[id]
	s.mu.Unlock()
	if !found || !slices.Contains(owned, m.Phone) || m.Path == "" {
		http.NotFound(w, r)
		return
	}
	f, err := os.Open(m.Path)
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", m.MimeType)
	w.Header().Set("Cache-Control", "private, max-age=300")
	if fault == nil {
		http.ServeContent(w, r, "", m.Created, f)
		return
	}
	if fault.Kind == IgnoreRange {
		r.Header.Del("Range")
		http.ServeContent(w, r, "", m.Created, f)
		return
	}
	s.serveFaultyBody(w, r, f, m.Size, fault)
}

// serveFaultyBody serves a whole file (no ranges) broken as fault says.
func (s *Server) serveFaultyBody(w http.ResponseWriter, r *http.Request, f *os.File, size int64, fault *Fault) {
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	switch fault.Kind {
	case CutBody:
		_, _ = io.CopyN(w, f, fault.AfterBytes)
		_ = http.NewResponseController(w).Flush()
		panic(http.ErrAbortHandler)
	case Corrupt:
		data, _ := io.ReadAll(f)
		if fault.AfterBytes < int64(len(data)) {
			data[fault.AfterBytes] ^= 0xFF
		}
		_, _ = w.Write(data)
	case Slow:
		buf := make([]byte, 16<<10)
		for {
			n, err := f.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				_ = http.NewResponseController(w).Flush()
			}
			if err != nil {
				return
			}
			select {
			case <-time.After(fault.Delay):
			case <-r.Context().Done():
				return
			case <-s.closed:
				return
			}
		}
	}
}

// newID returns a media id shaped like Meta's: 15 or 16 digits.
func newID() string {
	n, _ := rand.Int(rand.Reader, big.NewInt(9e15))
	return strconv.FormatInt(n.Int64()+1e15, 10)
}

func traceID() string {
	var b [9]byte
	_, _ = rand.Read(b[:])
	return "A" + strings.ToUpper(hex.EncodeToString(b[:]))[:17]
}
