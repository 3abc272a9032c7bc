package media

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"io"
	"mime/multipart"
	"net/textproto"
)

// Frame returns the bytes that go before and after the file's
// bytes in the multipart body to Meta, and that body's Content-Type. Both
// are written by mime/multipart itself, so the framing is exactly what
// multipart.Writer would produce around the file.
func Frame(mimeType, filename string) (prefix []byte, suffix, contentType string) {
	var pre, suf bytes.Buffer
	sw := &switchWriter{w: &pre}
	mw := multipart.NewWriter(sw)
	_ = mw.SetBoundary(randomBoundary())
	_ = mw.WriteField("messaging_product", "whatsapp")
	_ = mw.WriteField("type", mimeType)
	hdr := make(textproto.MIMEHeader, 2)
	hdr.Set("Content-Disposition", `form-data; name="file"; filename="`+filename+`"`)
	hdr.Set("Content-Type", mimeType)
	_, _ = mw.CreatePart(hdr)
	sw.w = &suf
	_ = mw.Close()
	return pre.Bytes(), suf.String(), mw.FormDataContentType()
}

type switchWriter struct{ w io.Writer }

func (s *switchWriter) Write(p []byte) (int, error) { return s.w.Write(p) }

func randomBoundary() string {
	var b [24]byte
	_, _ = rand.Read(b[:])
	return "whatsapp-media-" + hex.EncodeToString(b[:])
}
