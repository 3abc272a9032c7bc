package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// The client matrix: every answer the gateway decides before it has read
// a request's body must reach clients that write their whole body before
// they read (Go's client, a raw socket, Node's fetch, Python's urllib,
// curl without Expect), and curl with Expect: 100-continue. It runs the
// built binary, so that Caddy's body wrapper is in the way as in
// production.

const noMetaToken = "it-nometa-token"

// clientSizes are the body sizes every client is tried with.
var clientSizes = []int{1 << 20, 8 << 20, 32 << 20}

// refusal is a request the gateway refuses before consuming its body.
type refusal struct {
	name     string
	method   string
	path     func(size int) string
	mode     string // multipart (phoneNumberId, then the file) or raw
	header   map[string]string
	fields   map[string]string // multipart fields before the file
	fileType string
	status   int
	code     string
}

func uploadPath(int) string { return "/v2/media/upload" }

// limitedPath is served by a handler whose max_size is 3/4 of size.
func limitedPath(size int) string { return "/limit" + strconv.Itoa(size) + "/media/upload" }

func refusals() []refusal {
	auth := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	raw := func(tok string, extra ...string) map[string]string {
		h := auth(tok)
		h["Content-Type"] = "image/jpeg"
		h["X-Phone-Number-Id"] = phone
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	form := map[string]string{"phoneNumberId": phone}
	return []refusal{
		{"401 unknown token", "POST", uploadPath, "multipart", auth("wrong-token"), form, "image/jpeg", 401, "UNAUTHORIZED"},
		{"403 developer plan", "POST", uploadPath, "multipart", auth(devToken), form, "image/jpeg", 403, "DEVELOPER_PLAN_REQUIRED"},
		{"404 no WhatsApp account", "POST", uploadPath, "multipart", auth(noMetaToken), form, "image/jpeg", 404, "NOT_FOUND"},
		{"405 method", "PUT", uploadPath, "raw", raw(apiToken), nil, "", 405, "METHOD_NOT_ALLOWED"},
		{"413 too large", "POST", limitedPath, "raw", raw(apiToken), nil, "", 413, "PAYLOAD_TOO_LARGE"},
		{"415 type", "POST", uploadPath, "raw", raw(apiToken, "Content-Type", "application/x-msdownload"), nil, "", 415, "UNSUPPORTED_MEDIA_TYPE"},
		{"400 no phone number", "POST", uploadPath, "raw", map[string]string{"Authorization": "Bearer " + apiToken, "Content-Type": "image/jpeg"}, nil, "", 400, "VALIDATION_ERROR"},
		{"400 Meta refuses mid-upload", "POST", uploadPath, "multipart", auth(apiToken), form, "image/jpeg", 400, "META_API_ERROR"},
		{"404 near miss", "POST", func(int) string { return "/v2/media/upload/" }, "multipart", auth(apiToken), form, "image/jpeg", 404, "NOT_FOUND"},
		{"415 bytes not of the type", "POST", uploadPath, "raw", raw(apiToken, "Content-Type", "application/pdf"), nil, "", 415, "UNSUPPORTED_MEDIA_TYPE"},
	}
}

// metaRefusal is what the emulator answers every upload with, at once,
// without reading the body.
var metaRefusal = metaemu.Fault{Route: "upload", Kind: metaemu.Answer, Status: 400, ContentType: "application/json",
	Body: []byte(`{"error":{"message":"(#100) Invalid parameter","type":"OAuthException","code":100,"fbtrace_id":"AbCd"}}`)}

// matrixGateway runs the built binary with a handler for the media routes
// and one for each size, whose max_size is 3/4 of it (and so within the
// lingering bound: max_size + 16 MiB).
func matrixGateway(t *testing.T) *caddyProcess {
	t.Helper()
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	emu.Inject(metaRefusal)
	accounts := fmt.Sprintf(`accounts static {
				account acme {
					token_sha256  %s
					plan          premium
					meta_token    {env.E2E_META_TOKEN}
					phone_numbers %s
				}
				account dev {
					token         %s
					plan          developer
					meta_token    {env.E2E_META_TOKEN}
					phone_numbers %s
				}
				account nometa {
					token         %s
					plan          premium
				}
			}`, fixtures.SHA256Hex([]byte(apiToken)), phone, devToken, phone, noMetaToken)
	var site strings.Builder
	site.WriteString("\troute {\n")
	for _, size := range clientSizes {
		fmt.Fprintf(&site, "\t\twhatsapp_media {\n\t\t\tpath_prefix /limit%d/media\n\t\t\tmax_size %d\n\t\t\tgraph_url %s\n\t\t\t%s\n\t\t}\n",
			size, size/4*3, graphURL, accounts)
	}
	fmt.Fprintf(&site, "\t\twhatsapp_media {\n\t\t\tgraph_url %s\n\t\t\t%s\n\t\t}\n", graphURL, accounts)
	fmt.Fprintf(&site, "\t\treverse_proxy %s\n\t}", startApp(t))
	return startCaddy(t, func(string) string { return site.String() })
}

// bodyFile writes a JPEG-looking file of size bytes for the clients.
func bodyFile(t *testing.T, dir string, size int) string {
	t.Helper()
	path := filepath.Join(dir, "body-"+strconv.Itoa(size)+".jpg")
	if _, err := os.Stat(path); err != nil {
		require.NoError(t, os.WriteFile(path, fixtures.JPEG(size), 0o600))
	}
	return path
}

// clientResult is what a client saw: an answer, or an error (a reset, a
// broken pipe).
type clientResult struct {
	Status     int    `json:"status"`
	RetryAfter string `json:"retryAfter"`
	Body       string `json:"body"`
	Error      string `json:"error"`
}

// check asserts that the complete JSON answer of rf arrived.
func (rf refusal) check(t *testing.T, who string, res clientResult) bool {
	t.Helper()
	if !assert.Empty(t, res.Error, "%s: the client lost the answer", who) {
		return false
	}
	var env struct {
		Success *bool  `json:"success"`
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	ok := assert.Equal(t, rf.status, res.Status, "%s: %s", who, res.Body)
	ok = assert.NoError(t, json.Unmarshal([]byte(res.Body), &env), "%s: %q", who, res.Body) && ok
	ok = assert.NotNil(t, env.Success, who) && assert.False(t, *env.Success, who) && ok
	ok = assert.Equal(t, rf.code, env.Error, who) && ok
	return assert.NotEmpty(t, env.Message, who) && ok
}

// body builds the request body rf sends, and its Content-Type (empty for
// raw bodies, whose type is in rf.header).
func (rf refusal) body(t *testing.T, data []byte) ([]byte, string) {
	t.Helper()
	if rf.mode == "raw" {
		return data, ""
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range rf.fields {
		require.NoError(t, mw.WriteField(k, v))
	}
	fw, err := mw.CreatePart(map[string][]string{
		"Content-Disposition": {`form-data; name="file"; filename="photo.jpg"`},
		"Content-Type":        {rf.fileType},
	})
	require.NoError(t, err)
	_, _ = fw.Write(data)
	require.NoError(t, mw.Close())
	return buf.Bytes(), mw.FormDataContentType()
}

// goClient sends rf with Go's net/http client, which sends no Expect
// header: the whole body goes out before the answer is read.
func goClient(t *testing.T, client *http.Client, base string, rf refusal, data []byte) clientResult {
	t.Helper()
	body, ct := rf.body(t, data)
	req, err := http.NewRequest(rf.method, base+rf.path(len(data)), bytes.NewReader(body))
	require.NoError(t, err)
	for k, v := range rf.header {
		req.Header.Set(k, v)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := client.Do(req)
	if err != nil {
		return clientResult{Error: err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return clientResult{Error: err.Error()}
	}
	return clientResult{Status: resp.StatusCode, RetryAfter: resp.Header.Get("Retry-After"), Body: string(b)}
}

// rawRequest is rf as bytes on the wire, with extra header lines.
func rawRequest(t *testing.T, addr string, rf refusal, data []byte, extra ...string) []byte {
	t.Helper()
	body, ct := rf.body(t, data)
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", rf.method, rf.path(len(data)), addr, len(body))
	for k, v := range rf.header {
		fmt.Fprintf(&b, "%s: %s\r\n", k, v)
	}
	if ct != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ct)
	}
	for _, h := range extra {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n")
	b.Write(body)
	return b.Bytes()
}

// rawClient writes the whole request on a fresh connection, and only then
// reads the answer.
func rawClient(t *testing.T, addr string, rf refusal, data []byte) clientResult {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
	if _, err := conn.Write(rawRequest(t, addr, rf, data)); err != nil {
		return clientResult{Error: "write: " + err.Error()}
	}
	return readRawAnswer(bufio.NewReader(conn))
}

func readRawAnswer(br *bufio.Reader) clientResult {
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return clientResult{Error: "read: " + err.Error()}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return clientResult{Error: "read body: " + err.Error()}
	}
	return clientResult{Status: resp.StatusCode, Body: string(b)}
}

// specFor is the request description the node and python clients take.
func specFor(base, file string, rf refusal, size int) string {
	b, _ := json.Marshal(map[string]any{
		"url": base + rf.path(size), "method": rf.method, "headers": rf.header,
		"mode": rf.mode, "fields": rf.fields, "fileType": rf.fileType, "file": file,
	})
	return string(b)
}

// runClient runs an external client and decodes the JSON it prints.
func runClient(t *testing.T, name string, args ...string) clientResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).Output()
	require.NoError(t, err, "%s %s", name, strings.Join(args, " "))
	var res clientResult
	require.NoError(t, json.Unmarshal(out, &res), "%s printed %q", name, out)
	return res
}

// curlClient sends rf with curl, with or without Expect: 100-continue.
func curlClient(t *testing.T, base, file string, rf refusal, size int, expect bool) clientResult {
	t.Helper()
	args := []string{"-sS", "-X", rf.method, base + rf.path(size), "-w", "\n%{http_code}"}
	for k, v := range rf.header {
		args = append(args, "-H", k+": "+v)
	}
	if expect {
		args = append(args, "-H", "Expect: 100-continue")
	} else {
		args = append(args, "-H", "Expect:")
	}
	if rf.mode == "raw" {
		args = append(args, "--data-binary", "@"+file)
	} else {
		for k, v := range rf.fields {
			args = append(args, "-F", k+"="+v)
		}
		args = append(args, "-F", "file=@"+file+";type="+rf.fileType)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "curl", args...).Output()
	if err != nil {
		return clientResult{Error: fmt.Sprintf("curl: %v: %s", err, out)}
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	status, _ := strconv.Atoi(s[i+1:])
	return clientResult{Status: status, Body: s[:i]}
}

func TestClientsHearEveryRefusal(t *testing.T) {
	skipShort(t)
	p := matrixGateway(t)
	dir := t.TempDir()
	clients, _ := filepath.Abs("testdata/clients")

	t.Run("Go and a raw socket, 8 MB, 20 tries", func(t *testing.T) {
		data := fixtures.JPEG(8 << 20)
		client := &http.Client{Timeout: 60 * time.Second}
		defer client.CloseIdleConnections()
		for _, rf := range refusals() {
			t.Run(rf.name, func(t *testing.T) {
				for i := 0; i < 20; i++ {
					if !rf.check(t, "go #"+strconv.Itoa(i), goClient(t, client, p.base, rf, data)) ||
						!rf.check(t, "raw #"+strconv.Itoa(i), rawClient(t, p.addr, rf, data)) {
						return
					}
				}
			})
		}
	})

	for _, size := range clientSizes {
		file := bodyFile(t, dir, size)
		data, err := os.ReadFile(file)
		require.NoError(t, err)
		for _, rf := range refusals() {
			t.Run(fmt.Sprintf("%d MB/%s", size>>20, rf.name), func(t *testing.T) {
				rf.check(t, "curl with Expect", curlClient(t, p.base, file, rf, size, true))
				rf.check(t, "curl without Expect", curlClient(t, p.base, file, rf, size, false))
				spec := specFor(p.base, file, rf, size)
				rf.check(t, "node fetch", runClient(t, "node", filepath.Join(clients, "fetch.mjs"), spec))
				rf.check(t, "python urllib", runClient(t, "python3", filepath.Join(clients, "urllib_client.py"), spec))
				if size != 8<<20 { // 8 MB had its 20 tries above
					rf.check(t, "go", goClient(t, http.DefaultClient, p.base, rf, data))
					rf.check(t, "raw", rawClient(t, p.addr, rf, data))
				}
			})
		}
	}
}

// TestRefusalConnectionReuse: a refused body drained to its end closes the
// connection after its answer; a body declared beyond the lingering bound
// is not read at all.
func TestRefusalConnectionReuse(t *testing.T) {
	skipShort(t)
	p := matrixGateway(t)
	unauthorized := refusals()[0]

	t.Run("a drained connection answers then closes", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.addr)
		require.NoError(t, err)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(60 * time.Second))
		br := bufio.NewReader(conn)
		_, err = conn.Write(rawRequest(t, p.addr, unauthorized, fixtures.JPEG(8<<20)))
		require.NoError(t, err)
		unauthorized.check(t, "first", readRawAnswer(br))
		// Drained to its end, then closed: one refused body a connection.
		_, err = br.ReadByte()
		assert.ErrorIs(t, err, io.EOF, "the drained connection stayed open")
	})

	t.Run("a body declaring 10 GiB is not read", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.addr)
		require.NoError(t, err)
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		head := fmt.Sprintf("POST /v2/media/upload HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer wrong-token\r\n"+
			"Content-Type: image/jpeg\r\nX-Phone-Number-Id: %s\r\nContent-Length: %d\r\n\r\n", p.addr, phone, int64(10)<<30)
		_, err = conn.Write([]byte(head))
		require.NoError(t, err)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		unauthorized.check(t, "10 GiB", clientResult{Status: resp.StatusCode, Body: string(b)})
		assert.True(t, resp.Close, "the connection must close rather than read 10 GiB")
		// Nothing was sent: the gateway closes at once instead of waiting
		// for the body.
		start := time.Now()
		_, err = br.ReadByte()
		assert.ErrorIs(t, err, io.EOF)
		assert.Less(t, time.Since(start), 5*time.Second)
	})
}
