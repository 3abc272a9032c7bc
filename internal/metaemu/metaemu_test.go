package metaemu

import (
	"bytes"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	tok   = "meta-token"
	phone = "106540352242922"
)

func newTestServer(t *testing.T, cfg Config) (*Server, *httptest.Server) {
	t.Helper()
	if cfg.Tokens == nil {
		cfg.Tokens = map[string][]string{tok: {phone}}
	}
	s, err := New(cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(func() { _ = s.Close(); srv.Close() })
	return s, srv
}

func do(t *testing.T, method, url, token, ua string, body io.Reader, ct string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("User-Agent", ua)
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, b
}

func form(t *testing.T, fields map[string]string, data []byte, ctype string) (*bytes.Buffer, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		require.NoError(t, mw.WriteField(k, v))
	}
	if data != nil {
		h := make(map[string][]string)
		h["Content-Disposition"] = []string{`form-data; name="file"; filename="f"`}
		h["Content-Type"] = []string{ctype}
		w, err := mw.CreatePart(h)
		require.NoError(t, err)
		_, _ = w.Write(data)
	}
	require.NoError(t, mw.Close())
	return &buf, mw.FormDataContentType()
}

func metaError(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var env struct {
		Error map[string]any `json:"error"`
	}
	require.NoError(t, json.Unmarshal(b, &env), string(b))
	require.NotNil(t, env.Error, string(b))
	assert.NotEmpty(t, env.Error["fbtrace_id"])
	assert.NotEmpty(t, env.Error["message"])
	return env.Error
}

func TestUploadMetadataAndCDN(t *testing.T) {
	s, srv := newTestServer(t, Config{})
	data := []byte("\xFF\xD8\xFF\xE0 a jpeg")
	body, ct := form(t, map[string]string{"messaging_product": "whatsapp", "type": "image/jpeg"}, data, "image/jpeg")
	resp, b := do(t, "POST", srv.URL+"/v23.0/"+phone+"/media", tok, "test", body, ct)
	require.Equal(t, 200, resp.StatusCode, string(b))
	var up struct{ ID string }
	require.NoError(t, json.Unmarshal(b, &up))
	require.NotEmpty(t, up.ID)
	require.Len(t, s.Uploads(), 1)
	assert.Equal(t, up.ID, s.Uploads()[0].MediaID)

	resp, b = do(t, "GET", srv.URL+"/v23.0/"+up.ID, tok, "test", nil, "")
	require.Equal(t, 200, resp.StatusCode)
	var meta map[string]any
	require.NoError(t, json.Unmarshal(b, &meta))
	assert.Equal(t, "11", meta["file_size"], "file_size is a string, as Meta sends it")
	assert.Equal(t, "image/jpeg", meta["mime_type"])
	url := meta["url"].(string)

	resp, b = do(t, "GET", url, tok, "test-agent/1", nil, "")
	require.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, data, b)
	resp, _ = do(t, "GET", url, tok, "", nil, "")
	assert.Equal(t, 403, resp.StatusCode, "the CDN needs a User-Agent")
	resp, _ = do(t, "GET", url, "", "test-agent/1", nil, "")
	assert.Equal(t, 401, resp.StatusCode, "the CDN needs the token")
	resp, _ = do(t, "GET", url+"x", tok, "test-agent/1", nil, "")
	assert.Equal(t, 403, resp.StatusCode, "a tampered URL")
}

func TestExpiredURLAndNumberSize(t *testing.T) {
	s, srv := newTestServer(t, Config{URLTTL: -time.Second, FileSizeAsNumber: true})
	id, err := s.AddMedia(phone, "application/pdf", []byte("%PDF"))
	require.NoError(t, err)
	_, b := do(t, "GET", srv.URL+"/v23.0/"+id, tok, "test", nil, "")
	var meta map[string]any
	require.NoError(t, json.Unmarshal(b, &meta))
	assert.Equal(t, float64(4), meta["file_size"])
	resp, _ := do(t, "GET", meta["url"].(string), tok, "test-agent/1", nil, "")
	assert.Equal(t, 403, resp.StatusCode)
}

func TestUploadErrors(t *testing.T) {
	_, srv := newTestServer(t, Config{})
	cases := []struct {
		name   string
		token  string
		fields map[string]string
		data   []byte
		ctype  string
		status int
		code   float64
	}{
		{"bad token", "nope", map[string]string{"messaging_product": "whatsapp", "type": "image/jpeg"}, []byte("x"), "image/jpeg", 401, 190},
		{"no messaging_product", tok, map[string]string{"type": "image/jpeg"}, []byte("x"), "image/jpeg", 400, 100},
		{"unsupported type", tok, map[string]string{"messaging_product": "whatsapp", "type": "image/gif"}, []byte("x"), "image/gif", 400, 100},
		{"generic type", tok, map[string]string{"messaging_product": "whatsapp", "type": "application/octet-stream"}, []byte("x"), "application/octet-stream", 400, 100},
		{"too large image", tok, map[string]string{"messaging_product": "whatsapp", "type": "image/png"}, make([]byte, 5<<20+1), "image/png", 400, 100},
		{"no file", tok, map[string]string{"messaging_product": "whatsapp", "type": "image/png"}, nil, "", 400, 100},
		{"audio/opus, a name Meta refuses", tok, map[string]string{"messaging_product": "whatsapp", "type": "audio/opus"}, []byte("x"), "audio/opus", 400, 100},
		{"video/3gp, a name Meta does not know", tok, map[string]string{"messaging_product": "whatsapp", "type": "video/3gp"}, []byte("x"), "video/3gp", 400, 100},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body, ct := form(t, c.fields, c.data, c.ctype)
			resp, b := do(t, "POST", srv.URL+"/v23.0/"+phone+"/media", c.token, "test", body, ct)
			assert.Equal(t, c.status, resp.StatusCode)
			assert.Equal(t, c.code, metaError(t, b)["code"])
		})
	}
	body, ct := form(t, map[string]string{"messaging_product": "whatsapp", "type": "image/png"}, []byte("x"), "image/png")
	resp, b := do(t, "POST", srv.URL+"/v23.0/999/media", tok, "test", body, ct)
	assert.Equal(t, 400, resp.StatusCode)
	assert.Equal(t, float64(33), metaError(t, b)["error_subcode"])
}

// TestCustomerMediaAndLifetimes: media a customer sent has no business
// phone, so Graph refuses phone_number_id for it; ids expire after 30
// days (uploaded) or 7 (from a webhook) and then do not exist.
func TestCustomerMediaAndLifetimes(t *testing.T) {
	now := time.Date(2031, 1, 1, 0, 0, 0, 0, time.UTC)
	s, srv := newTestServer(t, Config{Now: func() time.Time { return now }})
	customer, err := s.AddCustomerMedia(phone, "image/jpeg", []byte("photo"))
	require.NoError(t, err)
	uploaded, err := s.AddMedia(phone, "image/jpeg", []byte("photo"))
	require.NoError(t, err)

	resp, _ := do(t, "GET", srv.URL+"/v23.0/"+customer, tok, "test", nil, "")
	assert.Equal(t, 200, resp.StatusCode)
	resp, b := do(t, "GET", srv.URL+"/v23.0/"+customer+"?phone_number_id="+phone, tok, "test", nil, "")
	assert.Equal(t, 400, resp.StatusCode)
	assert.Equal(t, "(#100) Param phone_number_id is not a valid whatsapp business phone number id ID", metaError(t, b)["message"])
	resp, _ = do(t, "GET", srv.URL+"/v23.0/"+uploaded+"?phone_number_id="+phone, tok, "test", nil, "")
	assert.Equal(t, 200, resp.StatusCode)

	now = now.Add(WebhookLifetime)
	resp, b = do(t, "GET", srv.URL+"/v23.0/"+customer, tok, "test", nil, "")
	assert.Equal(t, 400, resp.StatusCode, "a webhook's media outlived 7 days")
	assert.Equal(t, "GraphMethodException", metaError(t, b)["type"])
	resp, _ = do(t, "GET", srv.URL+"/v23.0/"+uploaded, tok, "test", nil, "")
	assert.Equal(t, 200, resp.StatusCode, "uploaded media went before 30 days")
	now = now.Add(UploadedLifetime - WebhookLifetime)
	resp, _ = do(t, "GET", srv.URL+"/v23.0/"+uploaded, tok, "test", nil, "")
	assert.Equal(t, 400, resp.StatusCode, "uploaded media outlived 30 days")
}

// TestErrorEnvelope: Meta's full envelope, subcodes dropped on request,
// and the rate limit's 429.
func TestErrorEnvelope(t *testing.T) {
	s, srv := newTestServer(t, Config{NoSubcodes: true})
	_, b := do(t, "GET", srv.URL+"/v23.0/123", tok, "test", nil, "")
	e := metaError(t, b)
	assert.Equal(t, float64(100), e["code"])
	assert.NotContains(t, e, "error_subcode")

	s.Inject(RateLimitFault("media", 1))
	resp, b := do(t, "GET", srv.URL+"/v23.0/123", tok, "test", nil, "")
	assert.Equal(t, 429, resp.StatusCode)
	e = metaError(t, b)
	assert.Equal(t, float64(80007), e["code"])
	assert.Equal(t, true, e["is_transient"])
	assert.Equal(t, map[string]any{"messaging_product": "whatsapp",
		"details": "The WhatsApp Business Account has reached its rate limit."}, e["error_data"])
}
