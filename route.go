package whatsappmedia

import (
	"net/http"
	"strings"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

type routeKind int

const (
	routeNone routeKind = iota
	routeUpload
	routeDownload
	// A path that a lenient router would read as a media route, but that
	// is not written as one: answered 404 by the gateway, never passed on
	// to the app with its body and token.
	routeNearUpload
	routeNearDownload
)

func (k routeKind) String() string {
	switch k {
	case routeUpload:
		return "upload"
	case routeDownload:
		return "download"
	}
	return "near_miss"
}

// allows refuses a method the route does not serve.
func (k routeKind) allows(method string) *apiError {
	switch {
	case k == routeUpload && method != http.MethodPost:
		return methodNotAllowed(http.MethodPost)
	case k == routeDownload && method != http.MethodGet && method != http.MethodHead:
		return methodNotAllowed("GET, HEAD")
	}
	return nil
}

// route matches the request's escaped path against the media routes, so
// that an encoded slash in a media id is seen as such, not as a separator.
// A path that is a media route only once normalised (media.NormalizePath:
// case, repeated or trailing slashes, ";" parameters, escaped letters) is
// a near miss.
func (h *Handler) route(r *http.Request) (routeKind, string) {
	p := r.URL.EscapedPath()
	if rest, ok := strings.CutPrefix(p, h.PathPrefix+"/"); ok {
		if rest == "upload" {
			return routeUpload, ""
		}
		if id, ok := strings.CutSuffix(rest, "/download"); ok {
			return routeDownload, id
		}
	}
	if !mayNearMiss(p) {
		return routeNone, "" // most of the app's traffic: no allocation
	}
	rest, ok := strings.CutPrefix(media.NormalizePath(p), h.nearPrefix)
	switch id, isDownload := strings.CutSuffix(rest, "/download"); {
	case !ok:
	case rest == "upload":
		return routeNearUpload, ""
	case isDownload && id != "" && !strings.Contains(id, "/"):
		return routeNearDownload, ""
	}
	return routeNone, ""
}

// mayNearMiss reports whether p could normalise to a media route: it must
// spell "load" in some case, or hide it in percent-escapes.
func mayNearMiss(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] == '%' || (p[i]|0x20 == 'l' && len(p)-i >= 4 && strings.EqualFold(p[i:i+4], "load")) {
			return true
		}
	}
	return false
}

// nearMiss answers a near miss of a media route, naming the route.
func (h *Handler) nearMiss(route routeKind) *apiError {
	want := "POST " + h.PathPrefix + "/upload"
	if route == routeNearDownload {
		want = "GET " + h.PathPrefix + "/{mediaId}/download"
	}
	return newError(http.StatusNotFound, codeNotFound, "No such route; the media routes are written exactly: did you mean "+want+"?")
}
