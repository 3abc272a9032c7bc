package whatsappmedia

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/netguard"
)

// The origins of uploads from a URL: the client that fetches them, and
// what may be fetched. Every address it dials passes the guard
// (internal/netguard) at dial time, after DNS and after every redirect;
// it follows at most maxOriginRedirects redirects, each checked again,
// sends no cookies and no credentials, and uses no proxy (a proxy would
// be the address dialed, not the origin).

// maxOriginRedirects bounds the redirects followed from a URL.
const maxOriginRedirects = 3

// maxURLLength bounds the URL a caller may name.
const maxURLLength = 4096

// originFetcher fetches the files of uploads from a URL.
type originFetcher struct {
	client    *http.Client
	transport *http.Transport
}

func newOriginFetcher(guard *netguard.Guard, dialTimeout, responseTimeout time.Duration) *originFetcher {
	dialer := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, Control: guard.Control}
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	t := &http.Transport{
		Proxy:                  nil,
		DialContext:            dialer.DialContext,
		Protocols:              protocols,
		TLSClientConfig:        &tls.Config{MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:    dialTimeout,
		ResponseHeaderTimeout:  responseTimeout,
		MaxIdleConnsPerHost:    8,
		IdleConnTimeout:        30 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
		// The bytes as the origin stores them: no transparent gzip.
		DisableCompression: true,
		WriteBufferSize:    4 << 10,
		ReadBufferSize:     64 << 10,
	}
	return &originFetcher{transport: t, client: &http.Client{
		Transport: t,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxOriginRedirects {
				return errTooManyRedirects
			}
			if ae := checkOriginURL(req.URL); ae != nil {
				return &redirectRefusal{ae}
			}
			// Go's client names the previous URL, a signed one say, to the
			// next host: not this one.
			req.Header.Del("Referer")
			return nil
		},
	}}
}

func (f *originFetcher) closeIdle() { f.transport.CloseIdleConnections() }

var errTooManyRedirects = errors.New("too many redirects")

// redirectRefusal is a redirect to a URL the caller could not have named.
type redirectRefusal struct{ ae *apiError }

func (r *redirectRefusal) Error() string { return "redirect refused: " + r.ae.Message }

// parseOriginURL parses the URL a caller named, and checks it.
func parseOriginURL(raw string) (*url.URL, *apiError) {
	if raw == "" {
		return nil, urlInvalid("malformed", "url is required")
	}
	if len(raw) > maxURLLength {
		return nil, urlInvalid("malformed", "url is longer than "+strconv.Itoa(maxURLLength)+" bytes")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, urlInvalid("malformed", "url is not a valid URL")
	}
	return u, checkOriginURL(u)
}

// checkOriginURL refuses a URL that is not absolute http or https, names
// no host, or carries user info.
func checkOriginURL(u *url.URL) *apiError {
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return urlInvalid("scheme", "url must be http or https")
	case u.User != nil:
		return urlInvalid("userinfo", "url must not carry a user name or password")
	case u.Hostname() == "":
		return urlInvalid("malformed", "url has no host")
	}
	return nil
}

func urlInvalid(reason, msg string) *apiError {
	ae := newError(http.StatusBadRequest, codeURLInvalid, msg)
	ae.counter = metrics.urlRefusals.WithLabelValues(reason)
	return ae
}

// originFetch is the fetch of one upload's file: its answer, and the
// cancel that releases a read blocked on it.
type originFetch struct {
	resp   *http.Response
	cancel context.CancelFunc
}

// get fetches u for an upload, and returns the answer, or why there is
// none: 403 for a refused address, 502 for an origin that failed or
// answered other than 2xx, 504 for one too slow to answer.
func (f *originFetcher) get(ctx context.Context, u *url.URL) (*originFetch, *apiError) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		cancel()
		return nil, urlInvalid("malformed", "url is not a valid URL")
	}
	req.Header.Set("User-Agent", userAgent)
	req.Header.Set("Accept", "*/*")
	resp, err := f.client.Do(req)
	if err != nil {
		ae := originError(ctx, redactURL(err))
		cancel()
		return nil, ae
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNonAuthoritativeInfo {
		// Anything else is not the whole file: an error, a redirect past
		// the bound, 204 No Content, a 206 part of it.
		drainClose(resp)
		cancel()
		metrics.urlFetches.WithLabelValues("status").Inc()
		ae := newError(http.StatusBadGateway, codeURLFetchFailed, "The URL answered "+strconv.Itoa(resp.StatusCode)+" "+
			http.StatusText(resp.StatusCode))
		ae.Details = []byte(`{"status":` + strconv.Itoa(resp.StatusCode) + `}`)
		return nil, ae
	}
	if resp.ContentLength < 0 && !slices.Contains(resp.TransferEncoding, "chunked") {
		// Delimited by the connection's close: a file cut short could not
		// be told from a whole one.
		drainClose(resp)
		cancel()
		metrics.urlFetches.WithLabelValues("failed").Inc()
		return nil, newError(http.StatusBadGateway, codeURLFetchFailed,
			"The URL's answer has neither a Content-Length nor chunked framing: a file cut short could not be told from a whole one")
	}
	metrics.urlFetches.WithLabelValues("ok").Inc()
	return &originFetch{resp: resp, cancel: cancel}, nil
}

// redactURL drops the query, fragment and user info from the URL that
// net/http's client names in its errors, which go to the logs: a
// presigned URL's query is a credential of the caller's.
func redactURL(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	shown := "a URL"
	if u, perr := url.Parse(ue.URL); perr == nil {
		shown = (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	}
	return fmt.Errorf("%s %s: %w", ue.Op, shown, ue.Err)
}

// originError answers a fetch that got no answer.
func originError(ctx context.Context, err error) *apiError {
	var refused *netguard.RefusedError
	var redirect *redirectRefusal
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case errors.As(err, &refused):
		ae := newError(http.StatusForbidden, codeURLForbidden,
			"The URL leads to an address uploads may not fetch from ("+strings.ReplaceAll(refused.Reason, "_", " ")+")").withCause(err)
		ae.counter = metrics.urlRefusals.WithLabelValues(refused.Reason)
		return ae
	case errors.As(err, &redirect):
		ae := newError(http.StatusForbidden, codeURLForbidden, "The URL redirects to a URL uploads may not fetch: "+redirect.ae.Message).withCause(err)
		ae.counter = metrics.urlRefusals.WithLabelValues("redirect")
		return ae
	case errors.Is(err, errTooManyRedirects):
		metrics.urlFetches.WithLabelValues("redirects").Inc()
		return newError(http.StatusBadGateway, codeURLFetchFailed, "The URL redirects more than "+strconv.Itoa(maxOriginRedirects)+" times").withCause(err)
	case ctx.Err() != nil: // the client went away: ServeHTTP answers 499
		return newError(http.StatusBadGateway, codeURLFetchFailed, "The fetch of the URL was cancelled").withCause(err)
	case errors.As(err, &netErr) && netErr.Timeout():
		metrics.urlFetches.WithLabelValues("timeout").Inc()
		return errOriginTimeout.withCause(err)
	case errors.As(err, &dnsErr):
		metrics.urlFetches.WithLabelValues("failed").Inc()
		return newError(http.StatusBadGateway, codeURLFetchFailed, "The URL's host could not be resolved").withCause(err)
	}
	metrics.urlFetches.WithLabelValues("failed").Inc()
	return newError(http.StatusBadGateway, codeURLFetchFailed, "The URL could not be fetched").withCause(err)
}
