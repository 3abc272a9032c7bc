package main

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/template"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// Demo values, printed at start.
const (
	demoToken          = "demo-premium-token"
	demoDeveloperToken = "demo-developer-token"
	demoMetaToken      = "demo-meta-access-token"
	demoPhone          = "106540352242922"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "demo",
		Usage: "[--listen <addr>] [--admin <addr>|off]",
		Short: "Runs the media gateway locally against an emulated Meta API",
		Long: `
Starts Caddy with the whatsapp_media handler, with demo accounts, an
emulator of Meta's Graph API and media CDN, and a stand-in for the AvenPing
app behind it. No Meta account is needed: the public docs' curl examples
work against it once the host and token are swapped for the values printed
at start. Stop it with Ctrl-C.

The gateway listens on --listen, loopback only by default (its demo tokens
are well known); a host of 0.0.0.0 or none serves the network. Caddy's
admin endpoint, with the purge endpoint and /metrics, listens on --admin.
A port already in use is an error.`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().String("listen", "localhost:8080", "The address the gateway listens on (localhost is 127.0.0.1)")
			cmd.Flags().String("admin", "localhost:2019", "The address of Caddy's admin endpoint, or off")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(runDemo)
		},
	})
}

// demoCaddyfile is the demo's config. The site matches any host on the
// bound address, so that localhost and 127.0.0.1 both work.
var demoCaddyfile = template.Must(template.New("Caddyfile").Parse(`{
	admin {{.Admin}}
	auto_https off
	persist_config off
	{{if ne .Admin "off"}}metrics{{end}}
}

http://:{{.Port}} {
	{{if .Bind}}bind {{.Bind}}{{end}}
	whatsapp_media {
		graph_url {{.GraphURL}}
		{{if .LoopbackOrigins}}url_fetch_allow 127.0.0.1/32{{end}}
		accounts static {
			account demo {
				token         {{.Token}}
				plan          premium
				meta_token    {{.MetaToken}}
				phone_numbers {{.Phone}}
			}
			account demo-developer {
				token         {{.DeveloperToken}}
				plan          developer
				meta_token    {{.MetaToken}}
				phone_numbers {{.Phone}}
			}
		}
	}
	reverse_proxy {{.AppAddr}}
}
`))

// demoAddrs are the demo's addresses, checked before anything starts.
type demoAddrs struct {
	listen string // host:port as given, for the printed commands
	bind   string // the host to bind; empty for every interface
	port   string
	admin  string // host:port, or "off"
}

// parseDemoAddrs checks the flags and that their ports are free. A plain
// listen (without SO_REUSEPORT, which Caddy sets) fails on a port that a
// running demo or any other server holds.
func parseDemoAddrs(listen, admin string) (demoAddrs, error) {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return demoAddrs{}, fmt.Errorf("--listen %q: %v", listen, err)
	}
	a := demoAddrs{listen: listen, bind: host, port: port, admin: admin}
	if host == "localhost" {
		a.bind = "127.0.0.1"
	}
	if host == "0.0.0.0" || host == "::" {
		a.bind = ""
	}
	if err := checkFree(net.JoinHostPort(a.bind, port), "--listen"); err != nil {
		return a, err
	}
	if admin != "off" {
		if err := checkFree(admin, "--admin"); err != nil {
			return a, err
		}
	}
	return a, nil
}

func checkFree(addr, flag string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s %s: the address is in use or not available (is another demo running?): %v", flag, addr, err)
	}
	return ln.Close()
}

func runDemo(fl caddycmd.Flags) (int, error) {
	addrs, err := parseDemoAddrs(fl.String("listen"), fl.String("admin"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	emu, err := metaemu.New(metaemu.Config{Tokens: map[string][]string{demoMetaToken: {demoPhone}}})
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer emu.Close()
	graphURL, stopGraph, err := serveLoopback(emu)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer stopGraph()
	appURL, stopApp, err := serveLoopback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		fmt.Fprintf(w, "{\"success\":true,\"data\":{\"servedBy\":\"the AvenPing app stand-in\",\"path\":%q}}\n", r.URL.Path)
	}))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer stopApp()
	if err := loadDemoConfig(addrs, graphURL, strings.TrimPrefix(appURL, "http://")); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer func() { _ = caddy.Stop() }()

	photo, err := writeSamplePhoto()
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer os.RemoveAll(filepath.Dir(photo))
	// A media id that exists from the start, so that the download command
	// works as printed (as a customer's photo would, from a webhook).
	mediaID, err := addSampleMedia(emu, photo)
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	// The sample photo at a URL, for an upload from a URL.
	photoURL, stopFiles, err := serveFile(photo, "photo.jpg", "image/jpeg")
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer stopFiles()

	printDemo(addrs, graphURL, photo, photoURL, mediaID)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	<-ctx.Done()
	fmt.Println("\nstopping")
	return caddy.ExitCodeSuccess, nil
}

// serveLoopback serves h on a free loopback port.
func serveLoopback(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// writeSamplePhoto writes a small JPEG to try the upload with.
func writeSamplePhoto() (string, error) {
	dir, err := os.MkdirTemp("", "whatsapp-media-demo-*")
	if err != nil {
		return "", err
	}
	img := image.NewRGBA(image.Rect(0, 0, 320, 240))
	for y := 0; y < 240; y++ {
		for x := 0; x < 320; x++ {
			img.Set(x, y, color.RGBA{R: uint8(x * 255 / 320), G: uint8(y * 255 / 240), B: 160, A: 255})
		}
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: 85}); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "photo.jpg")
	return p, os.WriteFile(p, buf.Bytes(), 0o644)
}

// addSampleMedia stores the sample photo at the emulated Meta, as a photo
// a customer sent to the demo's phone number.
func addSampleMedia(emu *metaemu.Server, photo string) (string, error) {
	b, err := os.ReadFile(photo)
	if err != nil {
		return "", err
	}
	return emu.AddCustomerMedia(demoPhone, "image/jpeg", b)
}

// loopbackOrigins reports whether the demo lets uploads from a URL fetch
// from loopback (its own file server): only when the gateway listens on
// loopback itself, so that no one beyond the machine can make it fetch
// from the machine's own services. No production config should.
func loopbackOrigins(a demoAddrs) bool { return a.bind == "127.0.0.1" || a.bind == "::1" }

// serveFile serves the file at path as /name, on a free loopback port.
func serveFile(path, name, typ string) (string, func(), error) {
	u, stop, err := serveLoopback(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/"+name {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", typ)
		http.ServeFile(w, r, path)
	}))
	return u + "/" + name, stop, err
}

// loadDemoConfig runs Caddy with the demo's config.
func loadDemoConfig(a demoAddrs, graphURL, appAddr string) error {
	var cf bytes.Buffer
	err := demoCaddyfile.Execute(&cf, map[string]string{
		"Admin": a.admin, "Port": a.port, "Bind": a.bind, "GraphURL": graphURL, "AppAddr": appAddr,
		"Token": demoToken, "DeveloperToken": demoDeveloperToken, "MetaToken": demoMetaToken, "Phone": demoPhone,
		"LoopbackOrigins": map[bool]string{true: "yes"}[loopbackOrigins(a)],
	})
	if err != nil {
		return err
	}
	// Formatted as Caddy expects, so that the adapter has nothing to warn
	// about (the template's conditional lines leave blank ones).
	formatted := caddyfile.Format(cf.Bytes())
	cfgJSON, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt(formatted, map[string]any{"filename": "demo"})
	if err != nil {
		return fmt.Errorf("adapting the demo config: %v", err)
	}
	for _, w := range warnings {
		fmt.Fprintln(os.Stderr, "warning:", w.String())
	}
	return caddy.Load(cfgJSON, true)
}

// printURLUpload prints the command that uploads the sample photo from
// the demo's file server.
func printURLUpload(base, photoURL string) {
	fmt.Printf(`
Upload from a URL (the demo's file server, on loopback, which the demo's
url_fetch_allow opens; a production gateway fetches public addresses only):
  curl -sS -X POST "%s/v2/media/upload" \
    -H "Authorization: Bearer %s" \
    -H "Content-Type: application/json" \
    -d '{"phoneNumberId": "%s", "url": "%s"}'
`, base, demoToken, demoPhone, photoURL)
}

// printDemo prints the demo's values and commands to try.
func printDemo(a demoAddrs, graphURL, photo, photoURL, mediaID string) {
	host := a.bind
	if host == "" {
		host = "localhost"
	}
	base := "http://" + net.JoinHostPort(host, a.port)
	if a.bind == "127.0.0.1" || a.bind == "::1" {
		base = "http://" + a.listen
	}
	fmt.Printf(`
caddy-whatsapp-media demo
  gateway          %s  (media routes; everything else goes to the app stand-in)
  Meta emulator    %s
  API token        %s   (premium plan)
  developer token  %s   (answers 403 DEVELOPER_PLAN_REQUIRED)
  phoneNumberId    %s
  sample photo     %s
  sample mediaId   %s   (that photo, already at the emulated Meta)

Upload (multipart):
  curl -sS -X POST "%[1]s/v2/media/upload" \
    -H "Authorization: Bearer %[3]s" \
    -F "phoneNumberId=%[5]s" \
    -F "file=@%[6]s;type=image/jpeg"

Upload (raw body):
  curl -sS -X POST "%[1]s/v2/media/upload" \
    -H "Authorization: Bearer %[3]s" \
    -H "X-Phone-Number-Id: %[5]s" \
    -H "X-Filename: photo.jpg" \
    -H "Content-Type: image/jpeg" \
    --data-binary "@%[6]s"

Download (the sample mediaId, or one an upload answered):
  curl -sS --fail-with-body "%[1]s/v2/media/%[7]s/download?disposition=attachment" \
    -H "Authorization: Bearer %[3]s" \
    -o "photo-%[7]s.jpg"
`, base, graphURL, demoToken, demoDeveloperToken, demoPhone, photo, mediaID)
	if loopbackOrigins(a) {
		printURLUpload(base, photoURL)
	}
	if a.admin != "off" {
		fmt.Printf(`
Caddy's admin endpoint: the purge endpoint, then the metrics. The demo's
accounts are static, so no introspection answer is cached and the purge
answers {"purged":0,"caches":0}; in front of the app (accounts introspect)
it drops the cached answers of every introspection cache.
  curl -sS -X POST "http://%[1]s/whatsapp_media/purge" -d '{}'
  curl -sS "http://%[1]s/metrics" | grep caddy_whatsapp_media
`, a.admin)
	}
	if a.bind != "127.0.0.1" && a.bind != "::1" {
		fmt.Printf("\nThe gateway listens beyond loopback (%s): anyone who can reach it can use the demo tokens.\n", a.listen)
	}
	fmt.Print("\nPress Ctrl-C to stop.\n")
}
