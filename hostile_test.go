package whatsappmedia

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
	file := string(jpegBytes(2000))
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

// TestHostileFilenames checks that no file name can add or rename a form
// field at Meta, or a header at the client.
func TestHostileFilenames(t *testing.T) {
	const bnd = "xyzzy"
	for _, name := range []string{
		`a.jpg"; name="messaging_product`,
		"a.jpg\"\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nimage/png\r\n--x",
		"..\\..\\a;b.jpg",
		"a\x00b.jpg",
		"\xff\xfe.jpg",
		"%22%0d%0a.jpg",
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			data := jpegBytes(3000)
			// Mode A: the name as a quoted-string in the part header,
			// escaped as a browser would (quotes and CR/LF percent-encoded).
			esc := strings.NewReplacer(`"`, "%22", "\r", "%0D", "\n", "%0A").Replace(name)
			body := rawForm(bnd,
				"Content-Disposition: form-data; name=\"phoneNumberId\"\r\n\r\n"+phoneA,
				"Content-Disposition: form-data; name=\"file\"; filename=\""+esc+"\"\r\nContent-Type: image/jpeg\r\n\r\n"+string(data))
			a := e.do(e.rawUpload(tokPremium, strings.NewReader(body), map[string]string{"Content-Type": "multipart/form-data; boundary=" + bnd}))
			if strings.Contains(name, "\x00") {
				// A NUL is not allowed in a header at all: the form is refused.
				assert.Equal(t, 400, a.Status, a.Raw)
				assert.Equal(t, codeValidation, a.Error)
				assert.Empty(t, e.emu.Requests())
				return
			}
			up := e.checkStored(a, data, "image/jpeg")
			assert.Equal(t, map[string]string{"messaging_product": "whatsapp", "type": "image/jpeg"}, up.Fields)
			assert.NotContains(t, up.FileName, `"`)
			assert.NotContains(t, up.FileName, "\r")

			// Mode B: the name in X-Filename (header values cannot carry
			// CR/LF, so only the rest is tried there).
			if !strings.ContainsAny(name, "\r\n\x00") {
				e.emu.Reset()
				a = e.do(e.rawUpload(tokPremium, strings.NewReader(string(data)), map[string]string{
					"X-Phone-Number-Id": phoneA, "Content-Type": "image/jpeg", "X-Filename": name}))
				up = e.checkStored(a, data, "image/jpeg")
				assert.Equal(t, map[string]string{"messaging_product": "whatsapp", "type": "image/jpeg"}, up.Fields)
			}
		})
	}
}

func TestHostileHeaders(t *testing.T) {
	e := newEnv(t)
	id := e.media(jpegBytes(1000), "image/jpeg")
	t.Run("20 KB token", func(t *testing.T) {
		a := e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), strings.Repeat("t", 20<<10)))
		assert.Equal(t, 401, a.Status)
		assert.Equal(t, codeUnauthorized, a.Error)
	})
	t.Run("two Authorization headers", func(t *testing.T) {
		req := mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium)
		req.Header.Add("Authorization", "Bearer "+tokEnterprise)
		a := e.do(req)
		assert.Equal(t, 401, a.Status)
	})
	t.Run("many ranges", func(t *testing.T) {
		rs := make([]string, 1000)
		for i := range rs {
			rs[i] = "0-0"
		}
		req := mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium)
		req.Header.Set("Range", "bytes="+strings.Join(rs, ","))
		a := e.do(req)
		assert.Equal(t, 416, a.Status)
	})
	t.Run("absurd range", func(t *testing.T) {
		req := mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium)
		req.Header.Set("Range", "bytes=-99999999999999999999999")
		a := e.do(req)
		assert.Equal(t, 416, a.Status)
	})
	assert.Empty(t, e.routeRequests("cdn"))
}
