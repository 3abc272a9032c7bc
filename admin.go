package whatsappmedia

import (
	"bytes"
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
//	POST /whatsapp_media/purge  {"token": "<api token>"}  purges that token
//	POST /whatsapp_media/purge  {}                        purges everything
//
// It answers {"purged": <entries removed>}. It reaches the account caches
// of the running config, including after a reload.
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
	var req struct {
		Token *string `json:"token"`
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
	}
	if len(body) > 0 {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf(`body must be {"token": "..."} or {}: %v`, err)}
		}
	}
	token := ""
	if req.Token != nil {
		if *req.Token == "" {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: errors.New("token is empty; send {} to purge everything")}
		}
		token = *req.Token
	}
	n := purgeIntrospectCaches(token)
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(map[string]int{"purged": n})
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
