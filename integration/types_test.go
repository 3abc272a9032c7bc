package integration

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// TestEndToEndTypes: media kinds as hints and declared types checked
// against the bytes, through the built binary, driven by curl.
func TestEndToEndTypes(t *testing.T) {
	skipShort(t)
	t.Setenv("E2E_META_TOKEN", metaToken)
	emu, graphURL := startEmulator(t)
	p := startCaddy(t, gatewayBlock(graphURL, startApp(t), ""))
	dir := t.TempDir()
	file := func(typ string) string {
		path := filepath.Join(dir, "file"+fixtures.SampleExtensions[typ])
		require.NoError(t, os.WriteFile(path, fixtures.Sample(typ), 0o600))
		return path
	}
	auth := []string{"-sS", "-X", "POST", p.base + "/v2/media/upload", "-H", "Authorization: Bearer " + apiToken, "-w", "\nstatus=%{http_code}"}

	out := curl(t, append(auth, "-H", "X-Phone-Number-Id: "+phone, "-H", "X-Upload-Type: image",
		"--data-binary", "@"+file("image/jpeg"))...)
	assert.Contains(t, out, `"mimeType":"image/jpeg"`, "X-Upload-Type: image with a JPEG")

	out = curl(t, append(auth, "-F", "phoneNumberId="+phone, "-F", "type=document", "-F", "file=@"+file("application/pdf"))...)
	assert.Contains(t, out, `"mimeType":"application/pdf"`, "type=document with a PDF")

	docx := "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
	out = curl(t, append(auth, "-F", "phoneNumberId="+phone, "-F", "file=@"+file(docx))...)
	assert.Contains(t, out, `"mimeType":"`+docx+`"`, "a .docx")

	exe := make([]byte, 4096)
	copy(exe, "MZ")
	exe[0x3C] = 0x80
	copy(exe[0x80:], "PE\x00\x00\x4c\x01")
	exePath := filepath.Join(dir, "setup.jpg")
	require.NoError(t, os.WriteFile(exePath, exe, 0o600))
	before := len(emu.Requests())
	for _, args := range [][]string{
		{"-H", "X-Phone-Number-Id: " + phone, "-H", "Content-Type: image/jpeg", "--data-binary", "@" + exePath},
		{"-F", "phoneNumberId=" + phone, "-F", "file=@" + exePath + ";type=image/jpeg"},
	} {
		out = curl(t, append(auth, args...)...)
		assert.Contains(t, out, `"error":"UNSUPPORTED_MEDIA_TYPE"`, "an executable sent as a JPEG")
		assert.Contains(t, out, "status=415")
	}
	assert.Len(t, emu.Requests(), before, "nothing reached Meta")
}
