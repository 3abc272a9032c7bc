package whatsappmedia

// Fuzz targets that need the handler's package (and so Caddy, which makes
// each execution slow). The pure logic is fuzzed in internal/media. CI runs
// each briefly; long runs on this project's machine (2 cores, 2026-11-25), recorded:
//
//	go test -run '^$' -fuzz '^FuzzCaddyfile$' -fuzztime 10m .
//
// FuzzFormParse: 144,068 executions in 120 s, no failure (slow: the test binary imports Caddy)
// FuzzCaddyfile: 1,154,469 executions (338,914 + 815,555); the first run stopped at 338,914 on
//                an input the lexer rejects, which made caddyfile.NewTestDispenser exit the process
//                (the target now lexes first; the input is in the corpus)

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// FuzzFormParse feeds arbitrary multipart bodies to the form walker: it
// must never panic, and never hold more than the overhead limit.
func FuzzFormParse(f *testing.F) {
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"phoneNumberId\"\r\n\r\n106540352242922\r\n--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\nxyz\r\n--b--\r\n"))
	f.Add([]byte("--b\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n--b--\r\n"))
	f.Add([]byte("--b\r\n\r\n\r\n--b--"))
	f.Fuzz(func(t *testing.T, body []byte) {
		fb := &formBody{r: io.NopCloser(bytes.NewReader(body)), limit: multipartOverhead}
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

// FuzzCaddyfile checks that no Caddyfile input panics the parser.
func FuzzCaddyfile(f *testing.F) {
	f.Add("max_size 10MiB\naccounts static {\naccount a {\ntoken t\n}\n}")
	f.Add("accounts introspect http://x {\nheader A b\ntimeout 1s\n}")
	f.Add("media_hosts *.fbcdn.net\ngraph_version v23.0")
	f.Fuzz(func(t *testing.T, body string) {
		// caddyfile.NewTestDispenser exits the process on input the lexer
		// rejects (found by this target): lex first, as Caddy does.
		tokens, err := caddyfile.Tokenize([]byte("whatsapp_media {\n"+body+"\n}"), "Caddyfile")
		if err != nil {
			return
		}
		var h Handler
		_ = h.UnmarshalCaddyfile(caddyfile.NewDispenser(tokens))
	})
}
