package main

import (
	"bytes"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
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
// file before its verdict: the most work it does for any file.

// probeEach is how many uploads a batch makes on each gateway (1 with
// -smoke).
var probeEach = 8

// videoSize is the video's size: 16 MB, within Meta's 16 MB however read.
const videoSize = 16_000_000

func probeCost(client *http.Client, fresh func(string, ...string) ([]contender, error), runs, each int) error {
	data, err := fixtures.Video(videoSize)
	if err != nil {
		return err
	}
	fmt.Printf("\n| delivery rules: 16 MB H.264 video, moov last | mode | server CPU per upload, checks on | checks off | on ÷ off |\n| --- | --- | --- | --- | --- |\n")
	for _, mode := range []string{"raw", "multipart"} {
		cs, err := fresh("probe", "gateway", "gateway-unchecked")
		if err != nil {
			return err
		}
		cpu := map[string][]time.Duration{}
		for r := 0; r <= runs; r++ { // the first run warms up
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
		on, off := median(cpu["gateway"]), median(cpu["gateway-unchecked"])
		fmt.Printf("| | %s | %v | %v | %.3f |\n", mode, on.Round(10*time.Microsecond), off.Round(10*time.Microsecond),
			float64(on)/float64(off))
	}
	return nil
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
	req, _ := http.NewRequest(http.MethodPost, c.base+"/v2/media/upload", body)
	req.Header.Set("Content-Type", ct)
	req.Header.Set("X-Phone-Number-Id", phone)
	req.Header.Set("Authorization", "Bearer "+apiToken)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("status %d: %s", resp.StatusCode, answer)
	}
	return nil
}
