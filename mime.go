package whatsappmedia

import (
	"errors"
	"net/http"

	"github.com/avenping/caddy-whatsapp-media/internal/media"
)

// resolveMIME picks the MIME type to send to Meta (media.Resolve) and
// turns its failures into answers: 400 for an override that is not a
// MIME type, 415 for a type WhatsApp does not accept or that cannot be
// determined.
func resolveMIME(in media.Inputs) (string, *apiError) {
	t, err := media.Resolve(in)
	var unsupported *media.UnsupportedError
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, media.ErrBadOverride):
		return "", validationError("X-Upload-Type is not a MIME type")
	case errors.As(err, &unsupported):
		return "", newError(http.StatusUnsupportedMediaType, codeUnsupportedType, unsupported.Error())
	default:
		return "", newError(http.StatusUnsupportedMediaType, codeUnsupportedType,
			"Could not determine the file's type; send a Content-Type WhatsApp accepts")
	}
}
