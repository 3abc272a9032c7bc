package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

// The fairness measures of issue 30, on the built gateway, all bounded in
// count and time:
//   - drains: many refused uploads that keep trickling their bodies; the
//     gateway's resident memory per connection while they are held;
//   - share: one account's many slow uploads against max_transfers_per_account
//     (429s, connections to Meta meanwhile), and another account's upload;
//   - interference: a legitimate upload's time alone and during fast drains.

// fairCounts are the sizes of the measures.
type fairCounts struct{ trickling, slowUploads, fastDrains int }

// fairSizes are the (smaller with -smoke).
var fairSizes = fairCounts{trickling: 1500, slowUploads: 300, fastDrains: 20}

func fair(fresh func(string, ...string) ([]contender, error), metaOpen func() int64, emu *metaemu.Server, n fairCounts) error {
	cs, err := fresh("fair", "gateway")
	if err != nil {
		return err
	}
	gw := cs[0]
	addr := gw.base[len("http://"):]
	fmt.Printf("\n| fairness measure | result | target |\n| --- | --- | --- |\n")
	if err := fairDrains(gw, addr, n.trickling); err != nil {
		return err
	}
	if err := fairShare(gw, addr, metaOpen, emu, n.slowUploads); err != nil {
		return err
	}
	return fairInterference(gw, addr, n.fastDrains)
}

// refusedHead is a refused upload's head: a wrong token, a 100 MiB body.
func refusedHead(addr string) string {
	return "POST /v2/media/upload HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer wrong-token\r\n" +
		"Content-Type: image/jpeg\r\nX-Phone-Number-Id: " + phone + "\r\nContent-Length: " + strconv.Itoa(100<<20) + "\r\n\r\n"
}

// fairDrains holds n refused uploads that send a byte every second after
// their answer, and reports the gateway's resident memory per connection.
func fairDrains(gw contender, addr string, n int) error {
	before := procField(gw.pid, "VmRSS:")
	conns := make([]net.Conn, 0, n)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	answered := 0
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("drains: dial %d: %v", i, err)
		}
		conns = append(conns, c)
		_ = c.SetDeadline(time.Now().Add(60 * time.Second))
		if _, err := io.WriteString(c, refusedHead(addr)+"x"); err != nil {
			return fmt.Errorf("drains: write %d: %v", i, err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode == http.StatusUnauthorized {
			answered++
			resp.Body.Close()
		}
	}
	// Trickle for a few seconds, a byte a connection a second (below the
	// 5 s idle bound): the drains stay held.
	for s := 0; s < 3; s++ {
		time.Sleep(time.Second)
		for _, c := range conns {
			_, _ = c.Write([]byte("x"))
		}
	}
	after := procField(gw.pid, "VmRSS:")
	held := min(n, 1024) // max_draining's default: the rest closed without a drain
	fmt.Printf("| %d refused uploads trickling: gateway memory a connection | %.1f KiB a refused upload, %.1f KiB a drain held (%d held; RSS %d → %d MiB), %d/%d answered | ≤ 32 KiB, every one answered |\n",
		n, float64(after-before)/float64(n), float64(after-before)/float64(held), held, before>>10, after>>10, answered, n)
	return nil
}

// fairShare sends n slow uploads for one account at once, each a first
// chunk then a pause, and counts the 429s and Meta's connections while
// they are held; another account uploads meanwhile.
func fairShare(gw contender, addr string, metaOpen func() int64, emu *metaemu.Server, n int) error {
	var refused, errs atomic.Int64
	var wg sync.WaitGroup
	release := make(chan struct{})
	body := fixtures.JPEG(1 << 20)
	for i := 0; i < n; i++ {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			head := "POST /v2/media/upload HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + apiToken + "\r\n" +
				"Content-Type: image/jpeg\r\nX-Phone-Number-Id: " + phone + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
			_, _ = io.WriteString(c, head)
			_, _ = c.Write(body[:64<<10])
			br := bufio.NewReader(c)
			answered := make(chan int, 1)
			go func() {
				if resp, err := http.ReadResponse(br, nil); err == nil {
					answered <- resp.StatusCode
					resp.Body.Close()
				}
				close(answered)
			}()
			select {
			case st := <-answered:
				if st == http.StatusTooManyRequests {
					refused.Add(1)
				}
				return
			case <-release:
			}
			_, _ = c.Write(body[64<<10:])
			<-answered
		})
	}
	time.Sleep(2 * time.Second) // all n have sent their first chunk
	inFlight, open := emu.InFlight(), metaOpen()
	other, err := otherUpload(gw, 1<<20)
	close(release)
	wg.Wait()
	fmt.Printf("| one account's %d slow uploads: refused 429 | %d (%d errors) | ≥ %d |\n", n, refused.Load(), errs.Load(), n*2/3)
	fmt.Printf("| connections to Meta open meanwhile (requests in flight) | %d (%d) | ≤ 70 |\n", open, inFlight)
	fmt.Printf("| another account's upload meanwhile | %d | 200 |\n", other)
	return err
}

// otherUpload uploads size bytes for the second account and returns the
// status.
func otherUpload(gw contender, size int) (int, error) {
	req, _ := http.NewRequest(http.MethodPost, gw.base+"/v2/media/upload", bytes.NewReader(fixtures.JPEG(size)))
	req.Header.Set("Authorization", "Bearer "+otherToken)
	req.Header.Set("Content-Type", "image/jpeg")
	req.Header.Set("X-Phone-Number-Id", phone)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// fairInterference times a 4 MiB upload alone, then during n clients that
// send refused 100 MiB bodies as fast as they can, for as long as it
// takes (median of 5 each).
func fairInterference(gw contender, addr string, n int) error {
	timeOne := func() (time.Duration, error) {
		var ds []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			status, err := otherUpload(gw, 4<<20)
			if err != nil {
				return 0, err
			}
			if status != http.StatusOK {
				return 0, fmt.Errorf("interference: upload answered %d", status)
			}
			ds = append(ds, time.Since(start))
		}
		return median(ds), nil
	}
	alone, err := timeOne()
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	junk := make([]byte, 1<<20)
	for i := 0; i < n; i++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.DialTimeout("tcp", addr, 5*time.Second)
				if err != nil {
					return
				}
				_ = c.SetDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.WriteString(c, refusedHead(addr))
				for sent := 0; sent < 100<<20; sent += len(junk) {
					if _, err := c.Write(junk); err != nil {
						break
					}
					select {
					case <-stop:
						c.Close()
						return
					default:
					}
				}
				c.Close()
			}
		})
	}
	time.Sleep(500 * time.Millisecond)
	during, err := timeOne()
	close(stop)
	wg.Wait()
	if err != nil {
		return err
	}
	fmt.Printf("| a 4 MiB upload during %d fast drains | %v alone, %v during: %.2f× | ≤ 2× |\n",
		n, alone.Round(time.Millisecond), during.Round(time.Millisecond), float64(during)/float64(alone))
	return nil
}
