package whatsappmedia

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRouting(t *testing.T) {
	e := newEnv(t)
	for _, p := range []string{"/", "/v2/messages", "/v2/media", "/v2/media/", "/v2/media/uploads", "/v2/media/download", "/v2/mediax/upload"} {
		resp, err := http.Get(e.url(p))
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, "app", resp.Header.Get("X-Next"), p)
	}
	for _, c := range []struct{ method, path, allow string }{
		{"GET", "/v2/media/upload", "POST"},
		{"PUT", "/v2/media/upload", "POST"},
		{"POST", "/v2/media/123/download", "GET, HEAD"},
	} {
		req, _ := http.NewRequest(c.method, e.url(c.path), nil)
		a := e.do(req)
		assert.Equal(t, 405, a.Status)
		assert.Equal(t, codeMethodNotAllowed, a.Error)
		assert.Equal(t, c.allow, a.Header.Get("Allow"))
	}
	assert.Empty(t, e.emu.Requests())
}
