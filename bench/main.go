// Command bench measures the gateway side by side with the floor and the
// baseline, in one run, alternating the contenders:
//
//   - gateway: uploads (mode A and B) and downloads through whatsapp_media;
//   - reverse_proxy: the same Caddy binary with plain reverse_proxy moving
//     the same bytes (a pre-encoded multipart body, the CDN URL) to the
//     same emulator: the floor for any Caddy-based gateway;
//   - direct: the client talking to the emulator, no proxy: the loopback
//     limit;
//   - buffered: a server that does what the app's routes do (read the whole
//     file into memory, then send it).
//
// It prints a Markdown table: median wall time, MB/s, the ratio to
// reverse_proxy, the CPU time the serving process used for a batch, and
// its peak RSS growth (/proc/<pid>/status VmHWM at the end of the cell
// minus VmRSS when idle, the serving processes being started anew and
// warmed up with one 1 KB transfer for every cell), then 1 KB uploads per
// second at 32-way concurrency. Run it from the repository root:
//
//	go run ./bench                 # the full table (about ten minutes)
//	go run ./bench -smoke          # small sizes, to check that it works
//	go run ./bench -ops download -sizes 100MB -conc 8 -runs 20 -pprof
//	                               # one cell, with pprof on the Caddy contenders
//	go run ./bench -ops download,download-cold -sizes 50KB,1MB
//	                               # small downloads, repeat and cold
//	go run ./bench -ops probe -runs 9
//	                               # the delivery rules' CPU (bench/probe.go)
//	go run ./bench -ops upload-url -sizes 100MB -runs 9
//	                               # uploads from a URL against raw ones (bench/url.go)
//
// download repeats the same media, as a dashboard previewing it would:
// after the first run the gateway has its metadata cached and asks Graph
// nothing. download-cold runs the gateway with media_cache_ttl 0, so that
// every download asks Graph, then the CDN. The last column counts the
// gateway's Graph metadata requests per download.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

const (
	apiToken   = "bench-token"
	otherToken = "bench-other-token"
	metaToken  = "bench-meta-token"
	phone      = "106540352242922"
)

func main() {
	buffered := flag.String("buffered-server", "", "internal: run the buffered baseline server on this address, against -graph")
	graph := flag.String("graph", "", "internal: the emulator's URL for -buffered-server")
	smoke := flag.Bool("smoke", false, "small sizes and one run: check that the harness works")
	sizesFlag := flag.String("sizes", "1MB,10MB,100MB", "file sizes")
	concFlag := flag.String("conc", "1,8,32", "concurrency levels")
	runs := flag.Int("runs", 5, "runs of each measurement (the median is printed)")
	each := flag.Int("each", 1, "transfers each client makes one after the other in a run (for small files: a run long enough to time)")
	useTLS := flag.Bool("tls", false, "serve the emulator over TLS (HTTP/2 offered, as Meta does); the Caddy processes trust it through SSL_CERT_FILE")
	pprof := flag.Bool("pprof", false, "serve Caddy's admin API (with /debug/pprof/) for the gateway and reverse_proxy, on ports printed at start")
	opsFlag := flag.String("ops", "upload-raw,upload-multipart,download,download-cold,rps", "what to measure")
	flag.Parse()
	if *buffered != "" {
		serveBuffered(*buffered, *graph)
		return
	}
	sizes, conc := parseSizes(*sizesFlag), parseInts(*concFlag)
	rpsFor := 3 * time.Second
	ops := strings.Split(*opsFlag, ",")
	if *smoke {
		sizes, conc, *runs, rpsFor = []int64{64 << 10}, []int{1, 2}, 1, 500*time.Millisecond
		ops, fairSizes = append(ops, "fair", "probe", "upload-url"), fairCounts{trickling: 50, slowUploads: 80, fastDrains: 3}
		probeEach, probeSeconds = 1, 1
	}
	if err := run(ops, sizes, conc, *runs, *each, rpsFor, *pprof, *useTLS); err != nil {
		log.Fatal(err)
	}
}

// contender is one way of moving the bytes.
type contender struct {
	name string
	base string // URL of the server the client talks to
	pid  int    // the serving process, 0 for direct
	// admin is the Caddy contender's admin address (with pprof), "off"
	// unless -pprof or the probe op asks for it.
	admin string
}

func run(ops []string, sizes []int64, conc []int, runs, each int, rpsFor time.Duration, pprof, useTLS bool) error {
	dir, err := os.MkdirTemp("", "whatsapp-media-bench-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "caddy")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/caddy").CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/caddy: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	emu, err := metaemu.New(metaemu.Config{Tokens: map[string][]string{metaToken: {phone}}, DiscardUploads: true,
		URLTTL: time.Hour, Dir: filepath.Join(dir, "media")})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "media"), 0o700); err != nil {
		return err
	}
	// Every connection made to the emulator (Meta) is counted, and those
	// open.
	var metaConns, metaClosed atomic.Int64
	emuSrv := httptest.NewUnstartedServer(emu)
	emuSrv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			metaConns.Add(1)
		case http.StateClosed, http.StateHijacked:
			metaClosed.Add(1)
		}
	}
	transport := &http.Transport{MaxIdleConnsPerHost: 128, DisableCompression: true}
	var extraEnv []string
	if useTLS {
		emuSrv.EnableHTTP2 = true
		emuSrv.StartTLS()
		transport.TLSClientConfig = emuSrv.Client().Transport.(*http.Transport).TLSClientConfig
		certFile := filepath.Join(dir, "emulator.pem")
		if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: emuSrv.Certificate().Raw}), 0o600); err != nil {
			return err
		}
		extraEnv = append(extraEnv, "SSL_CERT_FILE="+certFile)
		emu.SetCDNBase(emuSrv.URL)
	} else {
		emuSrv.Start()
	}
	defer emuSrv.Close()
	client := &http.Client{Transport: transport}

	// addPDF stores a random PDF of size bytes at the emulator and returns
	// it with its media id and CDN URL.
	addPDF := func(size int64) (data []byte, id, cdnURL string, err error) {
		data = make([]byte, size)
		_, _ = rand.Read(data)
		copy(data, "%PDF-1.7\n")
		if id, err = emu.AddMedia(phone, "application/pdf", data); err != nil {
			return nil, "", "", err
		}
		cdnURL, err = mediaURL(client, emuSrv.URL, id)
		return data, id, cdnURL, err
	}
	// A small file for warming up each serving process.
	warm, warmID, warmURL, err := addPDF(1000)
	if err != nil {
		return err
	}

	var procs []*exec.Cmd
	stopAll := func() {
		for _, p := range procs {
			_ = p.Process.Kill()
			_ = p.Wait()
		}
		procs = nil
		client.CloseIdleConnections()
	}
	defer stopAll()
	start := func(name, op string) (contender, error) {
		addr := freeAddr()
		var cmd *exec.Cmd
		admin := "off"
		if name == "buffered" {
			cmd = exec.Command(self, "-buffered-server", addr, "-graph", emuSrv.URL)
		} else {
			cfg := filepath.Join(dir, name+".Caddyfile")
			if pprof || op == "probe" { // the probe's share is read from a profile
				admin = freeAddr()
			}
			if pprof {
				fmt.Fprintf(os.Stderr, "%s: go tool pprof http://%s/debug/pprof/profile?seconds=10\n", name, admin)
			}
			if err := os.WriteFile(cfg, []byte(caddyfile(name, addr, emuSrv.URL, admin, op == "download-cold")), 0o600); err != nil {
				return contender{}, err
			}
			cmd = exec.Command(bin, "run", "--config", cfg, "--adapter", "caddyfile")
		}
		cmd.Env = append(append(os.Environ(), "HOME="+dir), extraEnv...)
		if err := cmd.Start(); err != nil {
			return contender{}, err
		}
		procs = append(procs, cmd)
		if err := waitListening(addr); err != nil {
			return contender{}, fmt.Errorf("%s: %v", name, err)
		}
		return contender{name: name, base: "http://" + addr, pid: cmd.Process.Pid, admin: admin}, nil
	}
	// fresh starts the serving processes anew, so that each cell's peak
	// RSS growth is measured from an idle process that no earlier cell
	// has grown.
	fresh := func(op string, names ...string) ([]contender, error) {
		stopAll()
		var cs []contender
		for _, name := range names {
			if name == "direct" {
				cs = append(cs, contender{name: "direct", base: emuSrv.URL})
				continue
			}
			c, err := start(name, op)
			if err != nil {
				return nil, err
			}
			cs = append(cs, c)
		}
		return cs, nil
	}

	fmt.Printf("# whatsapp_media benchmark\n\n%s, %d CPUs; %d run(s) a cell, median shown; %d transfer(s) a client a run.\n\n",
		time.Now().UTC().Format(time.RFC3339), cpuCount(), runs, each)
	shaMBps := sha256Speed()
	fmt.Printf("SHA-256 on one core of this machine: %.0f MB/s, the CPU a download spends verifying Meta's digest.\n\n", shaMBps)
	fmt.Println("| op | size | conc | contender | median | MB/s | × reverse_proxy | server CPU | peak RSS growth | Graph metadata requests per download | CPU × verified floor |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, op := range ops {
		if op == "rps" || op == "conns" || op == "fair" || op == "probe" || op == "upload-url" {
			continue
		}
		for _, size := range sizes {
			data, id, cdnURL, err := addPDF(size)
			if err != nil {
				return err
			}
			for _, n := range conc {
				names := []string{"gateway", "reverse_proxy", "direct", "buffered"}
				if op == "upload-multipart" {
					names = names[:3] // the buffered baseline takes raw bodies
				}
				contenders, err := fresh(op, names...)
				if err != nil {
					return err
				}
				idle := map[string]int64{}
				for _, c := range contenders {
					if err := once(client, c, strings.TrimSuffix(op, "-cold"), warm, warmID, warmURL); err != nil {
						return fmt.Errorf("%s %s warm-up: %v", c.name, op, err)
					}
					// A repeat download: the media was downloaded before.
					if op == "download" {
						if err := once(client, c, op, data, id, cdnURL); err != nil {
							return fmt.Errorf("%s %s warm-up: %v", c.name, op, err)
						}
					}
					idle[c.name] = resetPeak(c.pid)
				}
				times := map[string][]time.Duration{}
				cpu := map[string][]time.Duration{}
				graphReqs := map[string]int{}
				for r := 0; r < runs; r++ {
					for _, c := range contenders {
						cpu0, graph0 := cpuTime(c.pid), metadataRequests(emu)
						d, err := batch(client, c, strings.TrimSuffix(op, "-cold"), data, id, cdnURL, n, each)
						graphReqs[c.name] += metadataRequests(emu) - graph0
						if err != nil {
							return fmt.Errorf("%s %s %d×%d: %v", c.name, op, n, size, err)
						}
						times[c.name] = append(times[c.name], d)
						cpu[c.name] = append(cpu[c.name], cpuTime(c.pid)-cpu0)
					}
				}
				floor := median(times["reverse_proxy"])
				// The verified floor of a download: reverse_proxy's CPU
				// plus one SHA-256 of the bytes, at the speed measured above.
				shaCPU := time.Duration(float64(size*int64(n*each)) / (shaMBps * 1e6) * float64(time.Second))
				verifiedFloor := median(cpu["reverse_proxy"]) + shaCPU
				for _, c := range contenders {
					m := median(times[c.name])
					mbps := float64(size) * float64(n*each) / m.Seconds() / 1e6
					rssText, cpuText := "n/a", "n/a"
					if c.pid != 0 {
						rssText = fmt.Sprintf("%.1f MiB", float64(peakRSS(c.pid)-idle[c.name])/1024)
						cpuText = median(cpu[c.name]).String()
					}
					graph := "–" // reverse_proxy and direct are given the CDN URL
					if strings.HasPrefix(op, "download") && (c.name == "gateway" || c.name == "buffered") {
						graph = fmt.Sprintf("%.2f", float64(graphReqs[c.name])/float64(runs*n*each))
					}
					vs := "–"
					if strings.HasPrefix(op, "download") && c.name == "gateway" && verifiedFloor > 0 {
						vs = fmt.Sprintf("%.2f", float64(median(cpu[c.name]))/float64(verifiedFloor))
					}
					fmt.Printf("| %s | %s | %d | %s | %v | %.0f | %.2f | %s | %s | %s | %s |\n", op, human(size), n, c.name,
						m.Round(time.Millisecond), mbps, float64(m)/float64(floor), cpuText, rssText, graph, vs)
				}
			}
		}
	}
	if slices.Contains(ops, "conns") {
		if err := connsUnderLoad(client, fresh, &metaConns, emu, addPDF); err != nil {
			return err
		}
	}
	if slices.Contains(ops, "upload-url") {
		if err := urlCost(client, fresh, sizes, runs); err != nil {
			return err
		}
	}
	if slices.Contains(ops, "probe") {
		if err := probeCost(client, fresh, runs, probeEach); err != nil {
			return err
		}
	}
	if slices.Contains(ops, "fair") {
		metaOpen := func() int64 { return metaConns.Load() - metaClosed.Load() }
		if err := fair(fresh, metaOpen, emu, fairSizes); err != nil {
			return err
		}
	}
	if !slices.Contains(ops, "rps") {
		return nil
	}
	fmt.Printf("\n| 1 KB uploads/s at 32-way | requests/s | × reverse_proxy |\n| --- | --- | --- |\n")
	contenders, err := fresh("rps", "gateway", "reverse_proxy")
	if err != nil {
		return err
	}
	rps := map[string]float64{}
	for _, c := range contenders {
		rps[c.name] = smallUploads(client, c, rpsFor)
	}
	for _, name := range []string{"gateway", "reverse_proxy"} {
		fmt.Printf("| %s | %.0f | %.2f |\n", name, rps[name], rps[name]/rps["reverse_proxy"])
	}
	return nil
}

// metadataRequests counts the Graph metadata requests the emulator has
// answered.
func metadataRequests(emu *metaemu.Server) int {
	n := 0
	for _, r := range emu.Requests() {
		if r.Route == "media" {
			n++
		}
	}
	return n
}

func caddyfile(name, addr, graph, admin string, cold bool) string {
	global := "{\n\tadmin " + admin + "\n\tauto_https off\n\tpersist_config off\n}\n\n"
	if name == "reverse_proxy" {
		return global + "http://" + addr + " {\n\treverse_proxy " + strings.TrimPrefix(graph, "http://") + "\n}\n"
	}
	return global + "http://" + addr + ` {
	whatsapp_media {
		graph_url ` + graph + `
		max_size 200MiB` + map[bool]string{true: "\n\t\tmedia_cache_ttl 0", false: ""}[cold] +
		map[bool]string{true: "\n\t\tformat_checks off", false: ""}[name == "gateway-unchecked"] + `
		url_fetch_allow 127.0.0.1/32
		accounts static {
			account bench {
				token ` + apiToken + `
				plan premium
				meta_token ` + metaToken + `
				phone_numbers ` + phone + `
			}
			account other {
				token ` + otherToken + `
				plan premium
				meta_token ` + metaToken + `
				phone_numbers ` + phone + `
			}
		}
	}
}
`
}

// batch moves data with n clients at once, each moving it each times in
// a row, and returns the wall time.
func batch(client *http.Client, c contender, op string, data []byte, id, cdnURL string, n, each int) (time.Duration, error) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			for k := 0; k < each && err == nil; k++ {
				err = once(client, c, op, data, id, cdnURL)
			}
			errs <- err
		}()
	}
	wg.Wait()
	d := time.Since(start)
	close(errs)
	for err := range errs {
		if err != nil {
			return 0, err
		}
	}
	return d, nil
}

// once moves the file once, the way the contender moves it.
func once(client *http.Client, c contender, op string, data []byte, id, cdnURL string) error {
	var req *http.Request
	proxied := c.name == "reverse_proxy" || c.name == "direct"
	switch {
	case op == "download" && proxied:
		u := c.base + strings.TrimPrefix(cdnURL, cdnURL[:strings.Index(cdnURL, "/whatsapp_business")])
		req, _ = http.NewRequest(http.MethodGet, u, nil)
		req.Header.Set("Authorization", "Bearer "+metaToken)
		req.Header.Set("User-Agent", "bench/1")
	case op == "download":
		req, _ = http.NewRequest(http.MethodGet, c.base+"/v2/media/"+id+"/download", nil)
		req.Header.Set("Authorization", "Bearer "+apiToken)
	case proxied:
		// What Meta receives: the pre-encoded multipart body.
		body, ct := metaBody(data)
		req, _ = http.NewRequest(http.MethodPost, c.base+"/v23.0/"+phone+"/media", body)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+metaToken)
	case op == "upload-multipart":
		body, ct := clientForm(data)
		req, _ = http.NewRequest(http.MethodPost, c.base+"/v2/media/upload", body)
		req.Header.Set("Content-Type", ct)
		req.Header.Set("Authorization", "Bearer "+apiToken)
	default:
		req, _ = http.NewRequest(http.MethodPost, c.base+"/v2/media/upload", bytes.NewReader(data))
		req.Header.Set("Content-Type", "application/pdf")
		req.Header.Set("X-Phone-Number-Id", phone)
		req.Header.Set("Authorization", "Bearer "+apiToken)
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d", resp.StatusCode)
	}
	if op == "download" && n != int64(len(data)) {
		return fmt.Errorf("got %d of %d bytes", n, len(data))
	}
	return nil
}

// metaBody is the multipart body the gateway sends Meta, streamed.
func metaBody(data []byte) (io.Reader, string) {
	return streamForm(data, "messaging_product", "whatsapp", "type", "application/pdf")
}

// clientForm is a curl-shaped form: phoneNumberId, then the file.
func clientForm(data []byte) (io.Reader, string) {
	return streamForm(data, "phoneNumberId", phone)
}

// streamForm streams a multipart form: the fields (name, value pairs),
// then a PDF file part holding data.
func streamForm(data []byte, fields ...string) (io.Reader, string) {
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	go func() {
		for i := 0; i+1 < len(fields); i += 2 {
			_ = mw.WriteField(fields[i], fields[i+1])
		}
		h := make(map[string][]string)
		h["Content-Disposition"] = []string{`form-data; name="file"; filename="file.pdf"`}
		h["Content-Type"] = []string{"application/pdf"}
		w, _ := mw.CreatePart(h)
		_, _ = w.Write(data)
		pw.CloseWithError(mw.Close())
	}()
	return pr, mw.FormDataContentType()
}

// smallUploads counts 1 KB uploads completed per second at 32-way
// concurrency.
func smallUploads(client *http.Client, c contender, d time.Duration) float64 {
	data := make([]byte, 1000)
	copy(data, "%PDF-1.7\n")
	var done atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if once(client, c, "upload-raw", data, "", "") == nil {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(done.Load()) / d.Seconds()
}

func mediaURL(client *http.Client, graph, id string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, graph+"/v23.0/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+metaToken)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	s := string(b)
	i := strings.Index(s, `"url":"`)
	if i < 0 {
		return "", fmt.Errorf("no url in %s", s)
	}
	s = s[i+7:]
	return strings.ReplaceAll(s[:strings.Index(s, `"`)], `\u0026`, "&"), nil
}

// sha256Speed measures SHA-256 throughput on one core, in MB/s.
func sha256Speed() float64 {
	buf := make([]byte, 64<<10)
	h := sha256.New()
	start := time.Now()
	var n int
	for time.Since(start) < 300*time.Millisecond {
		for range 16 {
			h.Write(buf)
			n += len(buf)
		}
	}
	return float64(n) / time.Since(start).Seconds() / 1e6
}

// cpuTime is the CPU time (user and system) a process has used so far,
// from /proc/<pid>/stat, in clock ticks of 10ms.
func cpuTime(pid int) time.Duration {
	if pid == 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command name, which is in parentheses: utime
	// and stime are the 14th and 15th fields of the line.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// resetPeak resets the process's peak RSS and returns its RSS now (KiB).
func resetPeak(pid int) int64 {
	if pid == 0 {
		return 0
	}
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	return procField(pid, "VmRSS:")
}

func peakRSS(pid int) int64 {
	if pid == 0 {
		return 0
	}
	return procField(pid, "VmHWM:")
}

func procField(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), field) {
			n, _ := strconv.ParseInt(strings.Fields(sc.Text())[1], 10, 64)
			return n
		}
	}
	return 0
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func freeAddr() string {
	addr, err := fixtures.FreeAddr()
	if err != nil {
		log.Fatal(err)
	}
	return addr
}

func waitListening(addr string) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("nothing listens on %s", addr)
}

func parseSizes(s string) []int64 {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(f)), "B")
		mult := int64(1)
		switch {
		case strings.HasSuffix(f, "M"):
			mult, f = 1_000_000, strings.TrimSuffix(f, "M")
		case strings.HasSuffix(f, "K"):
			mult, f = 1_000, strings.TrimSuffix(f, "K")
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			log.Fatalf("bad size %q", s)
		}
		out = append(out, n*mult)
	}
	return out
}

func parseInts(s string) []int {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			log.Fatalf("bad number %q", s)
		}
		out = append(out, n)
	}
	return out
}

func human(n int64) string {
	switch {
	case n >= 1_000_000:
		return fmt.Sprintf("%d MB", n/1_000_000)
	case n >= 1_000:
		return fmt.Sprintf("%d KB", n/1_000)
	}
	return fmt.Sprintf("%d B", n)
}

func cpuCount() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// connsUnderLoad measures the connections a contender opens to Meta under
// a steady load: rounds of 64 concurrent transfers (32 uploads, 32
// downloads of 1 MB), after ten rounds of warm-up. Over TLS, every new
// connection is a handshake with Meta. The warm-up is that long because
// net/http's transport puts a connection back in its pool in a goroutine
// of its own: now and then a request of the next round finds none idle
// and dials; the pool keeps that spare, and after a few rounds there are
// enough.
func connsUnderLoad(client *http.Client, fresh func(string, ...string) ([]contender, error),
	metaConns *atomic.Int64, emu *metaemu.Server, addPDF func(int64) ([]byte, string, string, error)) error {
	const conc, rounds, warm = 64, 10, 10
	data, id, cdnURL, err := addPDF(1_000_000)
	if err != nil {
		return err
	}
	fmt.Printf("\n| 64 concurrent transfers (32 uploads, 32 downloads of 1 MB) | new connections to Meta per transfer, after warm-up |\n| --- | --- |\n")
	for _, name := range []string{"gateway", "reverse_proxy"} {
		cs, err := fresh("conns", name)
		if err != nil {
			return err
		}
		var before int64
		for r := 0; r < warm+rounds; r++ {
			if r == warm {
				before = metaConns.Load()
			}
			var wg sync.WaitGroup
			errs := make(chan error, conc)
			for i := 0; i < conc; i++ {
				op := "download"
				if i%2 == 0 {
					op = "upload-raw"
				}
				wg.Go(func() { errs <- once(client, cs[0], op, data, id, cdnURL) })
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					return fmt.Errorf("%s: %v", name, err)
				}
			}
		}
		fmt.Printf("| %s | %.2f |\n", name, float64(metaConns.Load()-before)/float64(rounds*conc))
	}
	return nil
}
