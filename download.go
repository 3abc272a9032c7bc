package whatsappmedia

import "net/http"

// serveDownload serves GET and HEAD {prefix}/{mediaId}/download (contract
// section 6).
func (h *Handler) serveDownload(w http.ResponseWriter, r *http.Request, mediaID string) *apiError {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return methodNotAllowed("GET, HEAD")
	}
	if _, ae := h.authenticate(r); ae != nil {
		return ae
	}
	if !isDigits(mediaID, 32) {
		return validationError("mediaId must be 1 to 32 digits")
	}
	return newError(http.StatusNotImplemented, "NOT_IMPLEMENTED", "Downloads are not served yet")
}
