package main

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
)

// The cost of the delivery rules (issue 24): the same 16 MB H.264 video
// uploaded to two gateways, one with format_checks on (the default) and
// one with it off, alternating, in both modes; the server CPU an upload
// takes on each (the process's threads' CPU time, over a batch), and
// their ratio. The video's
// moov box comes after its media data, so that the probe walks the whole
// file before its verdict: the most work a real video asks of it (a file
// of tiny headers is given up on, BenchmarkProbe).

// probeEach is how many uploads a batch makes on each gateway, and
// probeSeconds how long the profile of the checks-on gateway lasts (1 and
// 1 with -smoke).
var probeEach, probeSeconds = 24, 15

// videoSize is the video's size: 16 MB, within Meta's 16 MB however read.
const videoSize = 16_000_000

func probeCost(client *http.Client, fresh func(string, ...string) ([]contender, error), runs, each int) error {
	data, err := fixtures.Video(videoSize)
	if err != nil {
		return err
	}
	fmt.Printf("\n| delivery rules: 16 MB H.264 video, moov last | mode | server CPU per upload, checks on | checks off | on ÷ off, by run | the probe's share of the checks-on gateway's CPU (pprof) |\n| --- | --- | --- | --- | --- | --- |\n")
	for _, mode := range []string{"raw", "multipart"} {
		cs, err := fresh("probe", "gateway", "gateway-unchecked")
		if err != nil {
			return err
		}
		cpu := map[string][]time.Duration{}
		for r := 0; r <= runs; r++ { // the first run warms up
			// Each run takes the two in the other order, so that neither
			// is always the one that follows.
			slices.Reverse(cs)
			for _, c := range cs {
				cpu0 := schedTime(c.pid)
				for k := 0; k < each; k++ {
					if err := uploadVideo(client, c, mode, data); err != nil {
						return fmt.Errorf("%s %s: %v", c.name, mode, err)
					}
				}
				if r > 0 {
					cpu[c.name] = append(cpu[c.name], (schedTime(c.pid)-cpu0)/time.Duration(each))
				}
			}
		}
		// The ratio of each run's two batches, taken one after the other:
		// their median, and the middle half of them (the noise).
		var ratios []float64
		for i := range cpu["gateway"] {
			ratios = append(ratios, float64(cpu["gateway"][i])/float64(cpu["gateway-unchecked"][i]))
		}
		slices.Sort(ratios)
		q := len(ratios) / 4
		share, err := probeShare(client, cs, mode, data)
		if err != nil {
			return err
		}
		fmt.Printf("| | %s | %v | %v | %.3f (middle half %.3f–%.3f) | %s |\n", mode, median(cpu["gateway"]).Round(10*time.Microsecond),
			median(cpu["gateway-unchecked"]).Round(10*time.Microsecond), ratios[len(ratios)/2], ratios[q], ratios[len(ratios)-1-q], share)
	}
	return nil
}

// probeShare profiles the checks-on gateway's CPU for a few seconds of
// uploads, and returns the share of it in the probe: probeReader.Read's
// own time and media.(*Probe).Write's with what it calls, out of all.
// Unlike the ratio of two batches, it does not drown in the machine's
// noise.
func probeShare(client *http.Client, cs []contender, mode string, data []byte) (string, error) {
	i := slices.IndexFunc(cs, func(c contender) bool { return c.name == "gateway" })
	c := cs[i]
	type result struct {
		body []byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.Get("http://" + c.admin + "/debug/pprof/profile?seconds=" + strconv.Itoa(probeSeconds))
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		done <- result{b, err}
	}()
	var prof result
	for uploads := 0; ; uploads++ {
		select {
		case prof = <-done:
		default:
			if err := uploadVideo(client, c, mode, data); err != nil {
				return "", err
			}
			continue
		}
		break
	}
	if prof.err != nil {
		return "", prof.err
	}
	f, err := os.CreateTemp("", "probe-*.pprof")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	_, _ = f.Write(prof.body)
	_ = f.Close()
	out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0", f.Name()).Output()
	if err != nil {
		return "", fmt.Errorf("go tool pprof: %v", err)
	}
	var total, probe time.Duration
	for _, line := range strings.Split(string(out), "\n") {
		if _, after, ok := strings.Cut(line, "% of "); ok && strings.HasSuffix(line, " total") {
			total, _ = time.ParseDuration(strings.TrimSuffix(after, " total"))
		}
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		switch f[5] {
		case "github.com/avenping/caddy-whatsapp-media.(*probeReader).Read":
			probe += pprofDuration(f[0])
		case "github.com/avenping/caddy-whatsapp-media/internal/media.(*Probe).Write":
			probe += pprofDuration(f[3])
		}
	}
	if total == 0 {
		return "", fmt.Errorf("no CPU samples in the profile:\n%s", out)
	}
	const sample = 10 * time.Millisecond // pprof's default rate, 100 Hz
	return fmt.Sprintf("%.2f%% (%d of %d samples)", 100*float64(probe)/float64(total), probe/sample, total/sample), nil
}

// pprofDuration reads a duration as pprof prints it ("0", "10ms", "1.20s").
func pprofDuration(s string) time.Duration {
	d, _ := time.ParseDuration(s)
	return d
}

// schedTime is the CPU time a process's threads have had so far, in
// nanoseconds: the first field of each /proc/<pid>/task/<tid>/schedstat.
// Its resolution, unlike /proc/<pid>/stat's 10 ms ticks, tells apart a
// difference of a few percent in a batch of uploads.
func schedTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var total int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			total += ns
		}
	}
	return time.Duration(total)
}

func uploadVideo(client *http.Client, c contender, mode string, data []byte) error {
	var body io.Reader = bytes.NewReader(data)
	ct := "video/mp4"
	if mode == "multipart" {
		var buf bytes.Buffer
		mw := multipart.NewWriter(&buf)
		_ = mw.WriteField("phoneNumberId", phone)
		w, _ := mw.CreatePart(map[string][]string{"Content-Disposition": {`form-data; name="file"; filename="clip.mp4"`},
			"Content-Type": {"video/mp4"}})
		_, _ = w.Write(data)
		_ = mw.Close()
		body, ct = &buf, mw.FormDataContentType()
	}
	return postUpload(client, c, body, ct)
}
