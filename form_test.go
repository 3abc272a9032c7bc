package whatsappmedia

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// rawForm builds a multipart body by hand, so that tests can send what no
// well-behaved writer would.
func rawForm(boundary string, parts ...string) string {
	var b strings.Builder
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return b.String()
}

func TestHostileForms(t *testing.T) {
	const bnd = "xyzzy"
	phonePart := "Content-Disposition: form-data; name=\"phoneNumberId\"\r\n\r\n" + phoneA
	file := string(fixtures.JPEG(2000))
	cases := []struct {
		name   string
		ct     string
		body   string
		status int
	}{
		{"phoneNumberId over 1 KiB", "multipart/form-data; boundary=" + bnd,
			rawForm(bnd, "Content-Disposition: form-data; name=\"phoneNumberId\"\r\n\r\n"+strings.Repeat("1", 1100)), 400},
		{"boundary over 70 characters", "multipart/form-data; boundary=" + strings.Repeat("b", 71),
			rawForm(strings.Repeat("b", 71), phonePart), 400},
		{"boundary with a space only", "multipart/form-data; boundary=\" \"", rawForm(" ", phonePart), 400},
		{"no parts at all", "multipart/form-data; boundary=" + bnd, "--" + bnd + "--\r\n", 400},
		{"garbage body", "multipart/form-data; boundary=" + bnd, "this is not multipart", 400},
		{"file without closing boundary", "multipart/form-data; boundary=" + bnd,
			"--" + bnd + "\r\n" + phonePart + "\r\n--" + bnd + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n" + file, 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t)
			a := e.do(e.rawUpload(tokPremium, strings.NewReader(c.body), map[string]string{"Content-Type": c.ct}))
			assert.Equal(t, c.status, a.Status, a.Raw)
			assert.Equal(t, codeValidation, a.Error)
			for _, up := range e.emu.Uploads() {
				assert.Empty(t, up.MediaID, "Meta stored a file from a refused request")
			}
		})
	}
}

// FuzzFormParse feeds arbitrary multipart bodies to the form walker: it
// must never panic, and never hold more than the overhead limit. CI runs
// it briefly (the pure logic is fuzzed in internal/media, much faster).
// A long run on this project's machine (2 cores, 2026-11-25): 144,068
// executions in 120 s, no failure (slow: the test binary imports Caddy).
func FuzzFormParse(f *testing.F) {
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"phoneNumberId\"\r\n\r\n106540352242922\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\nxyz\r\n--b--\r\n"))
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n--b--\r\n"))
	f.Add([]byte("--b\r\n\r\n\r\n--b--"))
	f.Fuzz(func(t *testing.T, body []byte) {
		fb := &formOverhead{r: io.NopCloser(bytes.NewReader(body)), limit: multipartOverhead}
		req, _ := http.NewRequest(http.MethodPost, "/", nil)
		fm := &form{acct: &Account{PhoneNumberIDs: []string{"106540352242922"}}, mr: multipart.NewReader(fb, "b"), r: req, body: fb}
		for i := 0; i < 2*maxParts; i++ {
			part, ae := fm.nextFile()
			if ae != nil || part == nil {
				return
			}
			fb.inFile = true
			_, _ = io.Copy(io.Discard, part)
			fb.inFile = false
		}
	})
}
