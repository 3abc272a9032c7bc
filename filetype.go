package whatsappmedia

import (
	"bufio"
	"errors"
	"io"
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
	var wrongKind *media.KindError
	switch {
	case err == nil:
		return t, nil
	case errors.Is(err, media.ErrBadOverride):
		return "", errBadOverrideMIME
	case errors.Is(err, media.ErrBadTypeField):
		return "", errBadTypeField
	case errors.As(err, &wrongKind):
		return "", wrongKindError(wrongKind)
	case errors.As(err, &unsupported):
		return "", newError(http.StatusUnsupportedMediaType, codeUnsupportedType, unsupported.Error())
	default:
		return "", errUndeterminedType
	}
}

var (
	errBadTypeField    = validationError("type is neither a media kind (image, video, audio, document, sticker) nor a MIME type")
	errBadOverrideMIME = validationError("X-Upload-Type is neither a media kind (image, video, audio, document, sticker) nor a MIME type")
)

func wrongKindError(e *media.KindError) *apiError {
	return newError(http.StatusUnsupportedMediaType, codeUnsupportedType, e.Error())
}

var errUndeterminedType = newError(http.StatusUnsupportedMediaType, codeUnsupportedType,
	"Could not determine the file's type; send a Content-Type WhatsApp accepts")

// resolveFileType is resolveMIME for a file read through br, which also
// refuses an empty file (400, whatever its type, and before an
// undetermined type: sniffing found no bytes). The first byte is waited
// for only when the length is not known and nothing else refused the
// file, so that a refusal decided from the headers reads no body.
func resolveFileType(in media.Inputs, br *bufio.Reader, lengthKnown bool) (string, *apiError) {
	t, ae := resolveMIME(in)
	if (ae == nil && !lengthKnown) || ae == errUndeterminedType {
		if _, err := br.Peek(1); errors.Is(err, io.EOF) {
			return "", errEmptyFile
		}
	}
	return t, ae
}
