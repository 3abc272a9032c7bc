package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"time"
)

// The cost of an upload from a URL (issue 25): the same file uploaded to
// one gateway as a raw body and from a loopback origin (an HTTP server in
// this process, serving it from memory with its length), alternating,
// one at a time: the median time of each, their ratio, the server CPU,
// and the gateway's peak RSS growth over each kind's uploads.

func urlCost(client *http.Client, fresh func(string, ...string) ([]contender, error), sizes []int64, runs int) error {
	fmt.Printf("\n| upload from a URL | size | kind | median | MB/s | × raw | server CPU | peak RSS growth |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, size := range sizes {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte('a' + i%26)
		}
		copy(data, "%PDF-1.7\n")
		origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/pdf")
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			_, _ = w.Write(data)
		}))
		cs, err := fresh("url", "gateway")
		if err != nil {
			origin.Close()
			return err
		}
		gw := cs[0]
		times, cpu, peak := map[string][]time.Duration{}, map[string][]time.Duration{}, map[string]int64{}
		kinds := []string{"raw", "url"}
		for r := 0; r <= runs; r++ { // the first run warms up
			slices.Reverse(kinds)
			for _, kind := range kinds {
				idle := resetPeak(gw.pid)
				cpu0, start := cpuTime(gw.pid), time.Now()
				if err := uploadKind(client, gw, kind, data, origin.URL+"/report.pdf"); err != nil {
					origin.Close()
					return fmt.Errorf("%s upload: %v", kind, err)
				}
				if r == 0 {
					continue
				}
				times[kind] = append(times[kind], time.Since(start))
				cpu[kind] = append(cpu[kind], cpuTime(gw.pid)-cpu0)
				peak[kind] = max(peak[kind], peakRSS(gw.pid)-idle)
			}
		}
		origin.Close()
		raw := median(times["raw"])
		for _, kind := range []string{"raw", "url"} {
			m := median(times[kind])
			fmt.Printf("| | %s | %s | %v | %.0f | %.2f | %v | %.1f MiB |\n", human(size), kind, m.Round(time.Millisecond),
				float64(size)/m.Seconds()/1e6, float64(m)/float64(raw), median(cpu[kind]), float64(peak[kind])/1024)
		}
	}
	return nil
}

func uploadKind(client *http.Client, c contender, kind string, data []byte, url string) error {
	body, ct := io.Reader(bytes.NewReader(data)), "application/pdf"
	if kind == "url" {
		b, _ := json.Marshal(map[string]string{"phoneNumberId": phone, "url": url})
		body, ct = bytes.NewReader(b), "application/json"
	}
	return postUpload(client, c, body, ct)
}

// postUpload sends an upload of type ct to the gateway c, and checks that
// it was answered 200.
func postUpload(client *http.Client, c contender, body io.Reader, ct string) error {
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
