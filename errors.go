package whatsappmedia

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

// Error codes of the JSON error envelope. The README's table says when
// each is answered.
const (
	codeUnauthorized        = "UNAUTHORIZED"
	codeNotFound            = "NOT_FOUND"
	codePlanExpired         = "PLAN_EXPIRED"
	codeDeveloperPlan       = "DEVELOPER_PLAN_REQUIRED"
	codeForbidden           = "FORBIDDEN"
	codeValidation          = "VALIDATION_ERROR"
	codeMethodNotAllowed    = "METHOD_NOT_ALLOWED"
	codePayloadTooLarge     = "PAYLOAD_TOO_LARGE"
	codeUnsupportedType     = "UNSUPPORTED_MEDIA_TYPE"
	codeUpstreamError       = "UPSTREAM_ERROR"
	codeAuthUnavailable     = "AUTH_UNAVAILABLE"
	codeUpstreamTimeout     = "UPSTREAM_TIMEOUT"
	codeMetaAPIError        = "META_API_ERROR"
	codeInternalServerError = "INTERNAL_ERROR"
	codeRangeNotSatisfiable = "RANGE_NOT_SATISFIABLE"
	codeRequestTimeout      = "REQUEST_TIMEOUT"
	codeSpoolFull           = "SPOOL_FULL"
	codeTooManyTransfers    = "TOO_MANY_TRANSFERS"
	codeClientClosed        = "CLIENT_CLOSED_REQUEST"
	codeURLInvalid          = "URL_INVALID"
	codeURLForbidden        = "URL_FORBIDDEN"
	codeURLFetchFailed      = "URL_FETCH_FAILED"
)

// apiError is an answer in the error envelope. Message is
// always text written for the client (or Meta's own message), never a Go
// error string; the underlying cause, if any, is kept for logs only.
type apiError struct {
	Status  int
	Code    string
	Message string
	Details json.RawMessage
	// Header holds extra response headers (Allow, WWW-Authenticate).
	Header http.Header
	cause  error
	// counter, if set, counts the answer when it is given (refuse): a
	// refusal decided deep in a transfer may still yield to another.
	counter prometheus.Counter
}

func (e *apiError) Error() string {
	s := strconv.Itoa(e.Status) + " " + e.Code + ": " + e.Message
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

func (e *apiError) Unwrap() error { return e.cause }

func newError(status int, code, message string) *apiError {
	return &apiError{Status: status, Code: code, Message: message}
}

// withCause returns a copy of e that remembers err for the logs.
func (e *apiError) withCause(err error) *apiError {
	c := *e
	c.cause = err
	return &c
}

func validationError(message string) *apiError {
	return newError(http.StatusBadRequest, codeValidation, message)
}

// Fixed answers. They are templates: handlers copy them with withCause
// when they need to attach a cause, never mutate them.
var (
	errUnauthorized = &apiError{
		Status: http.StatusUnauthorized, Code: codeUnauthorized,
		Message: "Missing or invalid API token",
		Header:  http.Header{"Www-Authenticate": {"Bearer"}},
	}
	errNoWhatsAppAccount = newError(http.StatusNotFound, codeNotFound, "WhatsApp account not found")
	errPlanExpired       = newError(http.StatusForbidden, codePlanExpired, "Your plan has expired")
	errPlanRequired      = newError(http.StatusForbidden, codeDeveloperPlan, "API access requires a Premium or Enterprise plan")
	errPhoneForbidden    = newError(http.StatusForbidden, codeForbidden, "phoneNumberId does not belong to your account")
	errAuthUnavailable   = newError(http.StatusServiceUnavailable, codeAuthUnavailable, "The account service is unavailable, try again later")
	errTooLarge          = newError(http.StatusRequestEntityTooLarge, codePayloadTooLarge, "File exceeds the maximum upload size")
	errUpstream          = newError(http.StatusBadGateway, codeUpstreamError, "Could not reach the WhatsApp API")
	errUpstreamBadAnswer = newError(http.StatusBadGateway, codeUpstreamError, "The WhatsApp API sent an unreadable answer")
	errUpstreamTimeout   = newError(http.StatusGatewayTimeout, codeUpstreamTimeout, "The WhatsApp API did not answer in time")
	errInternal          = newError(http.StatusInternalServerError, codeInternalServerError, "Internal error")
	errClientStalled     = newError(http.StatusRequestTimeout, codeRequestTimeout, "The upload stalled: no bytes arrived for too long")
	errOriginTimeout     = newError(http.StatusGatewayTimeout, codeUpstreamTimeout, "The URL did not answer in time")
	errOriginStalled     = newError(http.StatusGatewayTimeout, codeUpstreamTimeout, "The URL stopped sending the file: no bytes arrived for too long")
	errOriginCut         = newError(http.StatusBadGateway, codeURLFetchFailed, "The URL's answer ended before the whole file was sent")
	errBadPhoneID        = validationError("phoneNumberId must be a Meta phone number id (digits only)")
	errEmptyFile         = validationError("The file is empty")
	// errClientClosed stands for any refusal of a request whose client
	// went away: nobody hears it, and nothing failed on this side. 499
	// is nginx's status for it, seen only in logs and metrics.
	errClientClosed = newError(statusClientClosed, codeClientClosed, "The client closed the request")

	errMediaNotFound       = newError(http.StatusNotFound, codeNotFound, "Media URL not found")
	errHostRefused         = newError(http.StatusBadGateway, codeUpstreamError, "The media URL points outside Meta's media hosts")
	errCDNRefused          = newError(http.StatusBadGateway, codeUpstreamError, "The WhatsApp media CDN refused the request")
	errRangeNotSatisfiable = newError(http.StatusRequestedRangeNotSatisfiable, codeRangeNotSatisfiable, "The requested range cannot be served")
)

// statusClientClosed is nginx's 499, Client Closed Request.
const statusClientClosed = 499

func methodNotAllowed(allow string) *apiError {
	return &apiError{
		Status: http.StatusMethodNotAllowed, Code: codeMethodNotAllowed,
		Message: "Method not allowed",
		Header:  http.Header{"Allow": {allow}},
	}
}

type errorEnvelope struct {
	Success bool            `json:"success"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
	Details json.RawMessage `json:"details,omitempty"`
}

// writeError writes e in the error envelope:
// {"success": false, "error": code, "message": ..., "details": ...}.
func writeError(w http.ResponseWriter, e *apiError) {
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	writeJSON(w, e.Status, errorEnvelope{Error: e.Code, Message: e.Message, Details: e.Details})
}

type successEnvelope struct {
	Success bool `json:"success"`
	Data    any  `json:"data"`
}

func writeSuccess(w http.ResponseWriter, data any) {
	writeJSON(w, http.StatusOK, successEnvelope{Success: true, Data: data})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // only our own plain structs are marshalled here
		body = []byte(`{"success":false,"error":"INTERNAL_ERROR","message":"Internal error"}`)
		status = http.StatusInternalServerError
	}
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
