package whatsappmedia

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

func TestAPIToken(t *testing.T) {
	cases := []struct {
		name string
		hdr  http.Header
		want string
	}{
		{"none", http.Header{}, ""},
		{"bearer", http.Header{"Authorization": {"Bearer abc"}}, "abc"},
		{"bearer lower case", http.Header{"Authorization": {"bearer abc"}}, "abc"},
		{"bearer upper case", http.Header{"Authorization": {"BEARER abc"}}, "abc"},
		{"x-api-token", http.Header{"X-Api-Token": {"xyz"}}, "xyz"},
		{"authorization wins", http.Header{"Authorization": {"Bearer abc"}, "X-Api-Token": {"xyz"}}, "abc"},
		{"basic falls back to x-api-token", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}, "X-Api-Token": {"xyz"}}, "xyz"},
		{"basic alone", http.Header{"Authorization": {"Basic dXNlcjpwYXNz"}}, ""},
		{"bearer without token", http.Header{"Authorization": {"Bearer "}}, ""},
		{"two authorization headers", http.Header{"Authorization": {"Bearer a", "Bearer b"}}, ""},
		{"two x-api-token headers", http.Header{"X-Api-Token": {"a", "b"}}, ""},
		{"token with space", http.Header{"Authorization": {"Bearer a b"}}, ""},
		{"oversized token", http.Header{"Authorization": {"Bearer " + strings.Repeat("a", 20000)}}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			assert.Equal(t, c.want, apiToken(c.hdr))
		})
	}
}

// TestAccessRules checks the access rules' order and codes (auth.go),
// that every refusal is decided before one byte of the body is read, and
// that Meta is never contacted.
func TestAccessRules(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name   string
		hdr    http.Header
		phone  string
		status int
		code   string
	}{
		{"no token", nil, phoneA, 401, codeUnauthorized},
		{"unknown token", http.Header{"Authorization": {"Bearer nope"}}, phoneA, 401, codeUnauthorized},
		{"no linked whatsapp account", http.Header{"Authorization": {"Bearer " + tokNoMeta}}, phoneA, 404, codeNotFound},
		{"no linked account wins over expiry", http.Header{"Authorization": {"Bearer " + tokNoMetaExp}}, phoneA, 404, codeNotFound},
		{"plan expired", http.Header{"Authorization": {"Bearer " + tokExpired}}, phoneA, 403, codePlanExpired},
		{"expiry wins over plan", http.Header{"Authorization": {"Bearer " + tokExpiredDev}}, phoneA, 403, codePlanExpired},
		{"developer plan", http.Header{"Authorization": {"Bearer " + tokDeveloper}}, phoneA, 403, codeDeveloperPlan},
		{"developer plan via x-api-token", http.Header{"X-Api-Token": {tokDeveloper}}, phoneA, 403, codeDeveloperPlan},
		{"phone of another account", http.Header{"Authorization": {"Bearer " + tokPremium}}, phoneOther, 403, codeForbidden},
		{"enterprise via token_sha256, foreign phone", http.Header{"X-Api-Token": {tokEnterprise}}, phoneB, 403, codeForbidden},
		{"plan checked before phone", http.Header{"Authorization": {"Bearer " + tokDeveloper}}, phoneOther, 403, codeDeveloperPlan},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := &readTracker{r: strings.NewReader("file bytes")}
			req := httptest.NewRequest(http.MethodPost, "/v2/media/upload", body)
			for k, v := range c.hdr {
				req.Header[k] = v
			}
			req.Header.Set("X-Phone-Number-Id", c.phone)
			req.Header.Set("Content-Type", "image/jpeg")
			rec := e.serveDirect(req)
			require.Equal(t, c.status, rec.Code, rec.Body.String())
			var a answer
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &a))
			assert.False(t, a.Success)
			assert.Equal(t, c.code, a.Error)
			assert.NotEmpty(t, a.Message)
			assert.Equal(t, "application/json; charset=utf-8", rec.Header().Get("Content-Type"))
			if c.status == 401 {
				assert.Equal(t, "Bearer", rec.Header().Get("WWW-Authenticate"))
			} else {
				assert.Empty(t, rec.Header().Get("WWW-Authenticate"))
			}
			assert.False(t, body.read.Load(), "the body was read before the refusal")
			assert.Empty(t, e.emu.Requests(), "Meta was contacted")
		})
	}
	t.Run("multipart phone of another account", func(t *testing.T) {
		a := e.do(e.formUpload(tokPremium, field("phoneNumberId", phoneOther), filePart("a.jpg", "image/jpeg", fixtures.JPEG(100))))
		assert.Equal(t, 403, a.Status)
		assert.Equal(t, codeForbidden, a.Error)
		assert.Empty(t, e.emu.Requests())
	})
	t.Run("multipart phone of another account after the file", func(t *testing.T) {
		a := e.do(e.formUpload(tokPremium, filePart("a.jpg", "image/jpeg", fixtures.JPEG(100)), field("phoneNumberId", phoneOther)))
		assert.Equal(t, 403, a.Status)
		assert.Equal(t, codeForbidden, a.Error)
		assert.Empty(t, e.emu.Requests())
	})
}

// TestUnauthorizedHints: a 401 names the likely mistake in the headers.
func TestUnauthorizedHints(t *testing.T) {
	for _, c := range []struct {
		hdr  http.Header
		hint string
	}{
		{http.Header{"Authorization": {tokPremium}}, `needs the word Bearer: "Authorization: Bearer <token>"`},
		{http.Header{"Authorization": {"Token " + tokPremium}}, `send the token as "Authorization: Bearer <token>" or in X-API-Token`},
		{http.Header{"Authorization": {"Bearer " + tokPremium, "Bearer " + tokPremium}}, "give the token once"},
		{http.Header{"Authorization": {"Bearer"}}, ""},
		{http.Header{"Authorization": {"Bearer nope"}}, ""},
		{nil, ""},
	} {
		a := unauthorized(c.hdr)
		assert.Equal(t, 401, a.Status)
		assert.True(t, strings.HasPrefix(a.Message, errUnauthorized.Message), a.Message)
		if c.hint == "" {
			assert.Equal(t, errUnauthorized.Message, a.Message, c.hdr)
		} else {
			assert.Contains(t, a.Message, c.hint, c.hdr)
		}
	}
	e := newEnv(t)
	req := httptest.NewRequest(http.MethodGet, "/v2/media/1/download", nil)
	req.Header.Set("Authorization", tokPremium)
	rec := e.serveDirect(req)
	assert.Equal(t, 401, rec.Code)
	assert.Contains(t, rec.Body.String(), "needs the word Bearer")
	assert.Equal(t, "Missing or invalid API token", errUnauthorized.Message, "the template was changed")
}

type failingSource struct{}

func (failingSource) Lookup(context.Context, string) (*Account, error) {
	return nil, errors.New("connection refused")
}

func TestAccountSourceDownFailsClosed(t *testing.T) {
	e := newEnv(t)
	e.h.accounts = failingSource{}
	req := httptest.NewRequest(http.MethodPost, "/v2/media/upload", strings.NewReader("x"))
	req.Header.Set("Authorization", "Bearer "+tokPremium)
	rec := e.serveDirect(req)
	assert.Equal(t, http.StatusServiceUnavailable, rec.Code)
	assert.Contains(t, rec.Body.String(), `"error":"AUTH_UNAVAILABLE"`)
	assert.NotContains(t, rec.Body.String(), "connection refused")
}

func TestStaticLookup(t *testing.T) {
	// Every lookup walks all accounts: a wrong token and a right one do
	// the same comparisons. This checks the answers; the shape is in the
	// code (no early return inside the loop).
	e := newEnv(t)
	src := e.h.accounts.(*StaticAccounts)
	a, err := src.Lookup(context.Background(), tokEnterprise)
	require.NoError(t, err)
	assert.Equal(t, "enterprise", a.ID)
	_, err = src.Lookup(context.Background(), tokEnterprise+"x")
	assert.ErrorIs(t, err, ErrUnknownToken)
	_, err = src.Lookup(context.Background(), "")
	assert.ErrorIs(t, err, ErrUnknownToken)
}

func TestHostileHeaders(t *testing.T) {
	e := newEnv(t)
	id := e.media(fixtures.JPEG(1000), "image/jpeg")
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
		req.Header.Set("Range", "bytes=99999999999999999999999-")
		a := e.do(req)
		assert.Equal(t, 416, a.Status)
	})
	assert.Empty(t, e.routeRequests("cdn"))
}

// TestPlanRefusalNamesTheAccount: a refusal after the token is known (a
// plan rule) is logged with the account it belongs to.
func TestPlanRefusalNamesTheAccount(t *testing.T) {
	e := newEnv(t)
	core, logs := observer.New(zap.DebugLevel)
	e.h.logger = zap.New(core)
	req := httptest.NewRequest(http.MethodGet, "/v2/media/1/download", nil)
	req.Header.Set("Authorization", "Bearer "+tokDeveloper)
	rec := e.serveDirect(req)
	require.Equal(t, 403, rec.Code)
	entries := logs.FilterMessage("media request refused").All()
	require.Len(t, entries, 1)
	assert.Equal(t, "developer", entries[0].ContextMap()["account"])
}
