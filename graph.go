package whatsappmedia

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// userAgent is sent on every request to Meta. Meta's CDN refuses some
// requests that have none, and a stable value lets Meta's logs tell this
// gateway's traffic apart.
const userAgent = "caddy-whatsapp-media/1.0 (+https://github.com/avenping/caddy-whatsapp-media)"

// maxMetaErrorBody bounds how much of an answer from Meta is read into
// memory: its JSON answers are small, and anything larger is not one.
const maxMetaErrorBody = 1 << 20

// newTransport returns the transport for all requests to Meta.
//
// It speaks HTTP/1.1 only, although Meta offers HTTP/2: with a connection
// a transfer, eight 100 MB downloads moved 1.36-1.55x faster (three runs)
// than over Go's HTTP/2 client, which puts them all on one connection and
// allocates per frame (5 to 8 times the bytes, growing with the file).
// BenchmarkMetaProtocol measures both.
//
// The write buffer is 64 KiB, so that each chunk of a chunked upload body
// (header and 32 KiB of data) leaves in one write: a third fewer write
// syscalls for a multipart upload than with net/http's 4 KiB. The read
// buffer keeps the 4 KiB default: a download reads into its own 64 KiB
// buffers, which bypass it, so a larger one made no fewer reads and only
// held 60 KiB more for every connection open to Meta
// (BenchmarkTransportBuffers counts both).
func newTransport(dialTimeout, responseTimeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		Protocols:             protocols,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: responseTimeout,
		WriteBufferSize:       64 << 10,
	}
}

// metaError is an error answer from the Graph API.
type metaError struct {
	Message   string `json:"message"`
	Type      string `json:"type"`
	Code      int    `json:"code"`
	Subcode   int    `json:"error_subcode"`
	FBTraceID string `json:"fbtrace_id"`
}

// upstreamAnswerError turns a non-2xx answer from Meta into the contract's
// envelope: META_API_ERROR with Meta's status (502 for a 5xx) and Meta's
// JSON verbatim in details, or UPSTREAM_ERROR when the answer is not
// Meta's JSON error shape. It reads at most maxMetaErrorBody bytes.
func upstreamAnswerError(resp *http.Response) *apiError {
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxMetaErrorBody+1))
	if err != nil {
		return classifyTransportError(err)
	}
	cause := fmt.Errorf("meta answered status %d", resp.StatusCode)
	if len(body) > maxMetaErrorBody {
		return errUpstreamBadAnswer.withCause(cause)
	}
	var env struct {
		Error *metaError `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == nil {
		return errUpstreamBadAnswer.withCause(cause)
	}
	status := resp.StatusCode
	if status < 400 || status > 499 {
		status = http.StatusBadGateway
	}
	msg := env.Error.Message
	if msg == "" {
		msg = "The WhatsApp API refused the request"
	}
	return &apiError{
		Status: status, Code: codeMetaAPIError, Message: msg,
		Details: json.RawMessage(body),
		cause:   &metaAPIErr{status: resp.StatusCode, meta: *env.Error},
	}
}

// metaAPIErr carries Meta's ids into logs.
type metaAPIErr struct {
	status int
	meta   metaError
}

func (e *metaAPIErr) Error() string {
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
