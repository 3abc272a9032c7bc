package whatsappmedia

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the module's endpoints on Caddy's admin API:
//
//	POST /whatsapp_media/purge  {"token": "<api token>"}           purges that token
//	POST /whatsapp_media/purge  {"token_sha256": "<hex sha-256>"}  purges that token
//	POST /whatsapp_media/purge  {}                                 purges everything
//
// It answers {"purged": <entries removed>, "caches": <caches reached>}:
// the introspection caches of the running configs, which a reload keeps.
// A config with only static accounts has none, and answers
// {"purged": 0, "caches": 0}.
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.whatsapp_media",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{
		Pattern: "/whatsapp_media/purge",
		Handler: caddy.AdminHandlerFunc(handlePurge),
	}}
}

func handlePurge(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: errors.New("method not allowed")}
	}
	key, err := purgeRequest(r.Body)
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	n, caches := purgeIntrospectCaches(key)
	metrics.purges.WithLabelValues("admin").Inc()
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]int{"purged": n, "caches": caches})
}

// purgeRequest reads a purge request's body: the key of the token to purge,
// or nil to purge everything.
func purgeRequest(body io.Reader) (*[sha256.Size]byte, error) {
	var req struct {
		Token       *string `json:"token"`
		TokenSHA256 *string `json:"token_sha256"`
	}
	raw, err := io.ReadAll(io.LimitReader(body, 64<<10))
	if err != nil {
		return nil, err
	}
	if len(raw) > 0 {
		// null, or a field that is null, would decode as {}: purge
		// everything. A mistake must not do that.
		var fields map[string]json.RawMessage
		if json.Unmarshal(raw, &fields) != nil || fields == nil {
			return nil, errors.New(`body must be {"token": "..."}, {"token_sha256": "<hex>"} or {}`)
		}
		for k, v := range fields {
			if string(bytes.TrimSpace(v)) == "null" {
				return nil, fmt.Errorf("%s is null; send {} to purge everything", k)
			}
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return nil, fmt.Errorf(`body must be {"token": "..."}, {"token_sha256": "<hex>"} or {}: %v`, err)
		}
	}
	switch {
	case req.Token != nil && req.TokenSHA256 != nil:
		return nil, errors.New("give token or token_sha256, not both")
	case req.Token != nil:
		if *req.Token == "" {
			return nil, errors.New("token is empty; send {} to purge everything")
		}
		key := tokenKey(*req.Token)
		return &key, nil
	case req.TokenSHA256 != nil:
		if *req.TokenSHA256 == "" {
			return nil, errors.New("token_sha256 is empty; send {} to purge everything")
		}
		key, ok := parseTokenHash(*req.TokenSHA256)
		if !ok {
			return nil, errors.New("token_sha256 must be 64 hex digits")
		}
		return &key, nil
	}
	return nil, nil
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
