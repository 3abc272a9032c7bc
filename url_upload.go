package whatsappmedia

import (
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// maxURLRequest bounds the JSON body of an upload from a URL.
const maxURLRequest = 16 << 10

// urlUpload is the JSON body of an upload from a URL.
type urlUpload struct {
	PhoneNumberID string `json:"phoneNumberId"`
	URL           string `json:"url"`
	Type          string `json:"type"`
	Filename      string `json:"filename"`
}

// uploadFromURL serves POST {prefix}/upload with a JSON body naming a
// URL: the gateway fetches it (origin.go) and streams the answer to Meta
// exactly as a raw upload streams its body, with the same limits, type
// checks and delivery rules. phone is the X-Phone-Number-Id header's,
// already checked against the account, if one was given.
func (h *Handler) uploadFromURL(w http.ResponseWriter, r *http.Request, acct *Account, phone string, pre *prelude) *apiError {
	if r.ContentLength > maxURLRequest {
		return validationError("The JSON body of an upload from a URL may be at most 16 KiB")
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxURLRequest+1))
	if err != nil {
		return clientBodyError(err)
	}
	var req urlUpload
	if len(raw) > maxURLRequest || json.Unmarshal(raw, &req) != nil {
		return validationError(`The body must be a JSON object: {"phoneNumberId": "...", "url": "https://...", "type": "...", "filename": "..."}`)
	}
	pre.end() // the request's body is read: the origin's is the file
	switch given := strings.TrimSpace(req.PhoneNumberID); {
	case given != "" && phone != "" && given != phone:
		return validationError("phoneNumberId and X-Phone-Number-Id differ")
	case given != "":
		if ae := authorizePhone(acct, given); ae != nil {
			return ae
		}
		phone = given
		setPhoneVar(r, phone)
	case phone == "":
		return validationError("phoneNumberId is required")
	}
	u, ae := parseOriginURL(req.URL)
	if ae != nil {
		return ae
	}
	if ae := checkURLType(req.Type); ae != nil {
		return ae // before the fetch: nothing the origin sends could help
	}
	origin, ae := h.origins.get(r.Context(), u)
	if ae != nil {
		return ae
	}
	defer origin.cancel()
	defer origin.resp.Body.Close()
	return h.uploadFetched(w, r, acct, phone, req, u, origin)
}

// uploadFetched sends the origin's answer to Meta.
func (h *Handler) uploadFetched(w http.ResponseWriter, r *http.Request, acct *Account, phone string, req urlUpload,
	u *url.URL, origin *originFetch) *apiError {
	resp := origin.resp
	if resp.ContentLength == 0 {
		return errEmptyFile
	}
	// Until the transfer's own stall guard takes over, this one watches
	// the origin's first bytes, read to tell the file's type.
	gb := &guardedBody{ReadCloser: resp.Body}
	gb.guard = newStallGuard(time.Duration(h.StallTimeout), origin.cancel)
	br := sniffReaders.get(gb)
	defer sniffReaders.put(br)
	in := media.Inputs{
		Override: req.Type,
		PartType: resp.Header.Get("Content-Type"),
		Filename: originFilename(req.Filename, resp.Header.Get("Content-Disposition"), u),
		Head:     peeker(br),
	}
	mimeType, ae := resolveFileType(in, br, resp.ContentLength > 0)
	if ae == nil {
		if limit, tooLarge := h.sizeLimit(mimeType); resp.ContentLength > limit {
			ae = tooLarge // before the head is read
		} else {
			in.Head() // read under this guard; sendToMeta finds it buffered
		}
	}
	gb.guard.stop()
	if gb.guard.fired() {
		return errOriginStalled
	}
	gb.guard = nil
	if ae != nil {
		return ae
	}
	return h.sendToMeta(w, r, acct, metaUpload{phone: phone, head: in.Head, origin: origin, file: metaFile{
		mimeType: mimeType, filename: in.Filename, body: br, size: resp.ContentLength,
	}})
}

// checkURLType refuses a type that names neither a media kind nor a type
// WhatsApp accepts (400, 415), as it would be refused after the fetch.
func checkURLType(t string) *apiError {
	if strings.TrimSpace(t) == "" || media.Kind(t) != "" {
		return nil
	}
	if _, ae := resolveMIME(media.Inputs{Override: t}); ae != nil && ae != errUndeterminedType {
		if ae == errBadOverrideMIME {
			return errBadTypeField // the JSON's type is the override here
		}
		return ae
	}
	return nil
}

// originFilename is the file's name: the caller's, else the origin's
// Content-Disposition's, else the URL's last path segment; sanitized as
// every upload's name is.
func originFilename(given, disposition string, u *url.URL) string {
	name := given
	if name == "" && disposition != "" {
		if _, params, err := mime.ParseMediaType(disposition); err == nil {
			name = params["filename"]
		}
	}
	if name == "" {
		if seg := path.Base(u.EscapedPath()); seg != "/" && seg != "." {
			name = media.DecodeFilename(seg)
		}
	}
	return media.SanitizeFilename(name)
}

// originBodyError answers an upload whose origin's answer broke off.
func originBodyError(err error) *apiError { return errOriginCut.withCause(err) }
