package media

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestNormalizePath(t *testing.T) {
	for in, want := range map[string]string{
		"/v2/media/upload":           "/v2/media/upload",
		"/v2/media/upload/":          "/v2/media/upload",
		"/V2/MEDIA/UPLOAD":           "/v2/media/upload",
		"//v2/media/upload":          "/v2/media/upload",
		"/v2//media///upload":        "/v2/media/upload",
		"/v2/media/upload;x":         "/v2/media/upload",
		"/v2;a=b/media/upload;jsess": "/v2/media/upload",
		"/v2/media/%75pload":         "/v2/media/upload",
		"/v2/media/%55PLOAD":         "/v2/media/upload",
		"/v2/media/123/download/":    "/v2/media/123/download",
		"/v2/media/a%2Fb/download":   "/v2/media/a%2fb/download",
		"/":                          "/",
		"":                           "/",
		"/v2/media/%zz":              "/v2/media/%zz",
		"/v2/media/upload%":          "/v2/media/upload%",
		"/v2/media/./upload":         "/v2/media/upload",
		"/v2/media/x/../upload":      "/v2/media/upload",
		"/v2/media/%2e/upload":       "/v2/media/upload",
		"/v2/media/upload/.":         "/v2/media/upload",
		"/../../v2/media/upload":     "/v2/media/upload",
		"/v2/media/123/download/.":   "/v2/media/123/download",
	} {
		assert.Equal(t, want, NormalizePath(in), in)
	}
}
