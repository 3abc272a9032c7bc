package whatsappmedia

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// userAgent is sent on every request to Meta. Meta's CDN refuses some
// requests that have none, and a stable value lets Meta's logs tell this
// gateway's traffic apart.
const userAgent = "caddy-whatsapp-media/1.0 (+https://github.com/avenping/caddy-whatsapp-media)"

// maxMetaAnswer bounds how much of an answer from Meta is read into
// memory: its JSON answers are small, and anything larger is not one.
const maxMetaAnswer = 1 << 20

// maxRedirects bounds the redirects followed from a media URL.
const maxRedirects = 5

// The upstreams, as labelled in metrics.
const (
	upstreamGraph = "graph" // Meta's Graph API: uploads and media metadata
	upstreamCDN   = "cdn"   // Meta's media CDN: the bytes of a media object
)

// graphClient makes every request to Meta: uploads and metadata to the
// Graph API, media bytes from the CDN. Each is built by newRequest and
// sent by do.
type graphClient struct {
	base      string   // graph_url and graph_version: https://graph.facebook.com/v23.0
	hosts     hostList // where media URLs may point
	client    *http.Client
	transport *http.Transport
}

func newGraphClient(base string, hosts hostList, dialTimeout, responseTimeout time.Duration, maxConns int) *graphClient {
	t := newTransport(dialTimeout, responseTimeout)
	// A transfer holds at most one connection at a time, to one host: as
	// many as max_transfers may be open to each of Meta's hosts.
	t.MaxConnsPerHost = maxConns
	return &graphClient{
		base: base, hosts: hosts, transport: t,
		client: &http.Client{
			Transport: t,
			// Never followed by the client: a Graph API redirect is an
			// answer, and getCDN checks each media redirect itself.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// newTransport returns the transport for all requests to Meta.
//
// It speaks HTTP/1.1 only, although Meta offers HTTP/2: with a connection
// a transfer, downloads moved faster and allocated far less than over Go's
// HTTP/2 client, which puts them all on one connection and allocates per
// frame. BenchmarkMetaProtocol measures both.
//
// The idle pool keeps up to 256 connections a host (1024 in all), so that
// a steady load of that many concurrent transfers reuses its connections
// instead of opening (over TLS: a handshake with Meta) and closing one for
// each transfer past the pool. With the former 32, 64 concurrent
// transfers opened 0.39 new connections a transfer after warm-up; with
// 256, none (go run ./bench -tls -ops conns; BENCHMARKS.md). An idle
// connection holds its buffers, about 68 KiB, until IdleConnTimeout.
//
// The write buffer is 64 KiB, so that each chunk of a chunked upload body
// (header and 32 KiB of data) leaves in one write: fewer write syscalls
// for a multipart upload than with net/http's 4 KiB. The read buffer keeps
// the 4 KiB default: a download reads into its own 64 KiB buffers, which
// bypass it, so a larger one made no fewer reads and only held more
// memory for every connection open to Meta (BenchmarkTransportBuffers
// counts both).
func newTransport(dialTimeout, responseTimeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		Protocols:             protocols,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: responseTimeout,
		WriteBufferSize:       64 << 10,
	}
}

func (g *graphClient) closeIdle() { g.transport.CloseIdleConnections() }

// metaRequest is a request to one of Meta's upstreams.
type metaRequest struct {
	*http.Request
	upstream string // upstreamGraph or upstreamCDN
}

// newRequest builds a request to an upstream of Meta's, carrying the
// account's Meta token. Graph API calls ask for JSON; CDN requests ask for
// the bytes as stored, without transparent decompression, so that lengths
// and the digest are the file's own.
func (g *graphClient) newRequest(ctx context.Context, upstream, method, url, metaToken string, body io.Reader) (metaRequest, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return metaRequest{}, err
	}
	req.Header = http.Header{
		"Authorization": {"Bearer " + metaToken},
		"User-Agent":    {userAgent},
	}
	if upstream == upstreamCDN {
		req.Header.Set("Accept-Encoding", "identity")
	} else {
		req.Header.Set("Accept", "application/json")
	}
	return metaRequest{req, upstream}, nil
}

// do sends req and records how long the upstream took to answer.
func (g *graphClient) do(req metaRequest) (*http.Response, error) {
	start := time.Now()
	resp, err := g.client.Do(req.Request)
	if err == nil {
		observeUpstream(req.upstream, start)
	}
	return resp, err
}

// metaFile is a file on its way to Meta.
type metaFile struct {
	mimeType string
	filename string
	body     io.Reader // the file's bytes
	size     int64     // -1 when unknown
}

// upload sends f to Meta's POST /{phone-number-id}/media. The multipart
// body is a fixed prefix (the messaging_product and type fields and the
// file part's headers), the file's bytes read straight from f.body, and a
// fixed suffix: no goroutine and no copy between the client's body and
// the transport, and when the file's size is known the exact
// Content-Length follows. The caller closes the answer's body; net/http
// may still be reading f.body after upload returns (Meta answered early).
func (g *graphClient) upload(ctx context.Context, metaToken, phone string, f metaFile) (*http.Response, error) {
	prefix, suffix, contentType := media.Frame(f.mimeType, f.filename)
	body := io.MultiReader(bytes.NewReader(prefix), f.body, strings.NewReader(suffix))
	req, err := g.newRequest(ctx, upstreamGraph, http.MethodPost, g.base+"/"+phone+"/media", metaToken, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", contentType)
	req.ContentLength = -1
	if f.size >= 0 {
		req.ContentLength = int64(len(prefix)) + f.size + int64(len(suffix))
	}
	return g.do(req)
}

// uploadAnswer reads Meta's answer to an upload: Meta's refusal, or the
// new media's id. An answer that claims success before the whole file was
// sent is refused: a file is never reported as uploaded that was not sent
// in full.
func uploadAnswer(resp *http.Response, sent bool) (string, *apiError) {
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return "", upstreamAnswerError(resp)
	}
	if !sent {
		return "", errUpstreamBadAnswer.withCause(errors.New("meta answered before the whole file was sent"))
	}
	var answer struct {
		ID string `json:"id"`
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxMetaAnswer))
	if err != nil {
		return "", classifyTransportError(err)
	}
	if json.Unmarshal(raw, &answer) != nil || !media.IsDigits(answer.ID, 64) {
		return "", errUpstreamBadAnswer.withCause(errors.New("meta upload answer has no media id"))
	}
	return answer.ID, nil
}

// mediaMetadata is the Graph API's answer about a media object.
type mediaMetadata struct {
	URL      string       `json:"url"`
	MimeType string       `json:"mime_type"`
	SHA256   string       `json:"sha256"`
	FileSize flexibleSize `json:"file_size"`
	ID       string       `json:"id"`

	digest []byte // SHA256 decoded; nil when Meta's value is unusable
}

// flexibleSize is file_size as Meta sends it: a JSON string or a number.
// -1 means absent or unusable.
type flexibleSize int64

func (s *flexibleSize) UnmarshalJSON(b []byte) error {
	*s = -1
	v := strings.Trim(string(b), `"`)
	if n, err := media.ParseDigits(v); err == nil {
		*s = flexibleSize(n)
	}
	return nil
}

// fetchMetadata asks the Graph API for a media object's metadata. It never
// sends phone_number_id: Graph refuses it for media a customer sent (no
// business phone uploaded it), which most downloads are (docs/meta.md).
func (g *graphClient) fetchMetadata(ctx context.Context, metaToken, mediaID string) (mediaMetadata, *apiError) {
	u := g.base + "/" + mediaID
	req, err := g.newRequest(ctx, upstreamGraph, http.MethodGet, u, metaToken, nil)
	if err != nil {
		return mediaMetadata{}, errInternal.withCause(err)
	}
	resp, err := g.do(req)
	if err != nil {
		return mediaMetadata{}, classifyTransportError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return mediaMetadata{}, metadataRefusal(upstreamAnswerError(resp))
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxMetaAnswer+1))
	if err != nil {
		return mediaMetadata{}, classifyTransportError(err)
	}
	info := mediaMetadata{FileSize: -1}
	if len(raw) > maxMetaAnswer || json.Unmarshal(raw, &info) != nil {
		return mediaMetadata{}, errUpstreamBadAnswer.withCause(errors.New("unreadable media metadata"))
	}
	if info.URL == "" {
		return mediaMetadata{}, errMediaNotFound.withCause(errors.New("media metadata has no url"))
	}
	if d, err := hex.DecodeString(info.SHA256); err == nil && len(d) == sha256.Size {
		info.digest = d
	}
	return info, nil
}

// metadataRefusal answers Meta's "no such media" as 404 NOT_FOUND, with
// Meta's JSON in details; any other refusal as is. Graph says it with code
// 100 and type GraphMethodException; the subcode 33 that used to come with
// it is deprecated (docs/meta.md), so either tells.
func metadataRefusal(ae *apiError) *apiError {
	var me *metaRefusal
	if errors.As(ae.cause, &me) && me.status == http.StatusBadRequest && me.meta.Code == 100 &&
		(me.meta.Subcode == 33 || me.meta.Type == "GraphMethodException") {
		nf := errMediaNotFound.withCause(ae.cause)
		nf.Details = ae.Details
		return nf
	}
	return ae
}

// fetchMedia GETs the media's bytes from the CDN: the range rng, or the
// whole file when rng is nil. A 404 or 403 means the URL went stale: it
// gets fresh metadata from refresh once and tries once more, and updates
// info to the metadata the answer belongs to.
func (g *graphClient) fetchMedia(ctx context.Context, metaToken string, info *mediaMetadata, rng *media.Range,
	refresh func() (mediaMetadata, *apiError)) (*http.Response, *apiError) {
	for attempt := 0; ; attempt++ {
		resp, ae := g.getCDN(ctx, metaToken, info.URL, rng)
		if ae != nil {
			return nil, ae
		}
		switch resp.StatusCode {
		case http.StatusOK, http.StatusPartialContent:
			if ae := checkCDNFraming(resp, rng, int64(info.FileSize)); ae != nil {
				resp.Body.Close()
				return nil, ae
			}
			return resp, nil
		case http.StatusNotFound, http.StatusForbidden:
			drainClose(resp)
			if attempt > 0 {
				return nil, errMediaNotFound.withCause(fmt.Errorf("cdn answered %d twice", resp.StatusCode))
			}
			fresh, ae := refresh()
			if ae != nil {
				return nil, ae
			}
			*info = fresh
		case http.StatusRequestedRangeNotSatisfiable:
			drainClose(resp)
			return nil, errRangeNotSatisfiable
		case http.StatusTooManyRequests:
			defer drainClose(resp)
			return nil, upstreamAnswerError(resp) // 429 with Retry-After, Meta's JSON or not
		default:
			drainClose(resp)
			return nil, errCDNRefused.withCause(fmt.Errorf("cdn answered %d", resp.StatusCode))
		}
	}
}

// checkCDNFraming refuses a 206 for another range than the one asked,
// and a 206 to a request without one. A 200 to a range request is the
// whole file (the CDN ignored the range), which the caller deals with.
func checkCDNFraming(resp *http.Response, rng *media.Range, size int64) *apiError {
	if resp.StatusCode != http.StatusPartialContent {
		return nil
	}
	if rng == nil {
		return errUpstreamBadAnswer.withCause(errors.New("cdn answered 206 to a request without range"))
	}
	if cr := resp.Header.Get("Content-Range"); cr != rng.ContentRange(size) {
		return errUpstreamBadAnswer.withCause(fmt.Errorf("cdn answered range %q", cr))
	}
	return nil
}

// getCDN sends one GET for a media URL, following redirects itself so that
// every hop is checked against the allow-list before the Meta token goes
// there.
func (g *graphClient) getCDN(ctx context.Context, metaToken, rawURL string, rng *media.Range) (*http.Response, *apiError) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errUpstreamBadAnswer.withCause(errors.New("unparsable media url"))
	}
	for hop := 0; ; hop++ {
		if !g.hosts.allows(u) {
			return nil, errHostRefused.withCause(fmt.Errorf("media host %q is not allowed", u.Host))
		}
		req, err := g.newRequest(ctx, upstreamCDN, http.MethodGet, u.String(), metaToken, nil)
		if err != nil {
			return nil, errUpstreamBadAnswer.withCause(err)
		}
		if rng != nil {
			req.Header.Set("Range", "bytes="+strconv.FormatInt(rng.Start, 10)+"-"+strconv.FormatInt(rng.End, 10))
		}
		resp, err := g.do(req)
		if err != nil {
			return nil, classifyTransportError(err)
		}
		if resp.StatusCode < 300 || resp.StatusCode > 399 || resp.StatusCode == http.StatusNotModified {
			return resp, nil
		}
		loc := resp.Header.Get("Location")
		drainClose(resp)
		if loc == "" || hop >= maxRedirects {
			return nil, errCDNRefused.withCause(fmt.Errorf("cdn redirect without location or more than %d redirects", maxRedirects))
		}
		next, err := u.Parse(loc)
		if err != nil {
			return nil, errUpstreamBadAnswer.withCause(errors.New("unparsable redirect location"))
		}
		u = next
	}
}

// drainClose discards a small remainder of a body, so the connection can
// be reused, and closes it.
func drainClose(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// graphError is an error answer from the Graph API.
type graphError struct {
	Message   string `json:"message"`
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Subcode   int    `json:"error_subcode"`
	FBTraceID string `json:"fbtrace_id"`
}

// upstreamAnswerError turns a non-2xx answer from Meta into the error
// envelope: META_API_ERROR with Meta's status (502 for a 5xx) and Meta's
// JSON verbatim in details, or UPSTREAM_ERROR when the answer is not
// Meta's JSON error shape. It reads at most maxMetaAnswer bytes.
func upstreamAnswerError(resp *http.Response) *apiError {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetaAnswer+1))
	if err != nil {
		return classifyTransportError(err)
	}
	ae := metaAnswer(resp.StatusCode, body)
	// A rate limit, or a Meta that is unavailable, says when to come back.
	if ae.Status == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		ae.Header = http.Header{"Retry-After": {retryAfter(resp.Header)}}
	}
	return ae
}

// metaAnswer is the envelope of Meta's non-2xx answer of status with body.
func metaAnswer(status int, body []byte) *apiError {
	cause := fmt.Errorf("meta answered status %d", status)
	var env struct {
		Error *graphError `json:"error"`
	}
	switch {
	case len(body) <= maxMetaAnswer && json.Unmarshal(body, &env) == nil && env.Error != nil:
	case status == http.StatusTooManyRequests:
		return &apiError{Status: status, Code: codeMetaAPIError,
			Message: "The WhatsApp API is limiting requests; try again later", cause: cause}
	default:
		return errUpstreamBadAnswer.withCause(cause)
	}
	answer := status
	if answer < 400 || answer > 499 {
		answer = http.StatusBadGateway
	}
	if rateLimitCodes[env.Error.Code] {
		answer = http.StatusTooManyRequests
	}
	msg := env.Error.Message
	if msg == "" {
		msg = "The WhatsApp API refused the request"
	}
	return &apiError{
		Status: answer, Code: codeMetaAPIError, Message: msg,
		Details: json.RawMessage(body),
		cause:   &metaRefusal{status: status, meta: *env.Error},
	}
}

// rateLimitCodes are Graph's error codes for a rate limit (docs/meta.md):
// answered 429 whatever HTTP status Meta sent them with, which has varied.
var rateLimitCodes = map[int]bool{4: true, 17: true, 32: true, 613: true, 80007: true, 130429: true}

// defaultRetryAfter is the Retry-After, in seconds, of a rate limit or an
// unavailable Meta that did not say when to come back.
const defaultRetryAfter = 60

// retryAfter is when a client may try again after Meta's answer with
// header h: Meta's own Retry-After in seconds, else the longest
// estimated_time_to_regain_access (minutes) of its X-Business-Use-Case-Usage
// header, else defaultRetryAfter.
func retryAfter(h http.Header) string {
	if v := strings.TrimSpace(h.Get("Retry-After")); v != "" && media.IsDigits(v, 9) {
		return v
	}
	var usage map[string][]struct {
		Minutes int `json:"estimated_time_to_regain_access"`
	}
	if v := h.Get("X-Business-Use-Case-Usage"); v != "" && len(v) < 16<<10 && json.Unmarshal([]byte(v), &usage) == nil {
		longest := 0
		for _, entries := range usage {
			for _, e := range entries {
				longest = max(longest, e.Minutes)
			}
		}
		if longest > 0 && longest < 24*60 {
			return strconv.Itoa(longest * 60)
		}
	}
	return strconv.Itoa(defaultRetryAfter)
}

// metaRefusal carries Meta's ids into logs.
type metaRefusal struct {
	status int
	meta   graphError
}

func (e *metaRefusal) Error() string {
	return "meta error " + strconv.Itoa(e.meta.Code) + " (subcode " + strconv.Itoa(e.meta.Subcode) +
		", status " + strconv.Itoa(e.status) + ", fbtrace_id " + e.meta.FBTraceID + "): " + e.meta.Message
}

// classifyTransportError maps a failed exchange with Meta to 504 for
// timeouts and 502 for everything else.
func classifyTransportError(err error) *apiError {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return errUpstreamTimeout.withCause(err)
	}
	return errUpstream.withCause(err)
}
