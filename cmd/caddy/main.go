// Command caddy is Caddy with its standard modules and the whatsapp_media
// handler, so that `go run ./cmd/caddy ...` works without xcaddy. It also
// has a `demo` subcommand that runs the gateway on localhost against an
// emulated Meta Graph API.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/avenping/caddy-whatsapp-media"
)

func main() {
	caddycmd.Main()
}
