package whatsappmedia

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/avenping/caddy-whatsapp-media/internal/fixtures"
	"github.com/avenping/caddy-whatsapp-media/internal/metaemu"
)

func TestTransferCounts(t *testing.T) {
	c := new(transferCounts)
	a1, ae := c.acquire("a", 2, 3)
	require.Nil(t, ae)
	_, ae = c.acquire("a", 2, 3)
	require.Nil(t, ae)
	_, ae = c.acquire("a", 2, 3)
	require.NotNil(t, ae, "a third for a")
	assert.Equal(t, 429, ae.Status)
	assert.Equal(t, codeTooManyTransfers, ae.Code)
	assert.Equal(t, "5", ae.Header.Get("Retry-After"))
	_, ae = c.acquire("b", 2, 3)
	require.Nil(t, ae, "another account has its own share")
	_, ae = c.acquire("c", 2, 3)
	require.NotNil(t, ae, "past max_transfers")
	a1()
	a1() // a release is once
	_, ae = c.acquire("c", 2, 3)
	assert.Nil(t, ae)
	assert.Equal(t, int64(3), c.inUse())
}

// TestTransferShares: an account with max_transfers_per_account transfers
// in progress is refused 429 before anything reaches Meta; another
// account is served meanwhile.
func TestTransferShares(t *testing.T) {
	e := newEnv(t, func(h *Handler) { h.MaxTransfersPerAccount = 2 })
	id := e.media(fixtures.JPEG(100), "image/jpeg")
	e.emu.Inject(metaemu.Fault{Route: "cdn", Kind: metaemu.Hang, Times: 2})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	for i := 0; i < 2; i++ {
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url("/v2/media/"+id+"/download"), nil)
			req.Header.Set("Authorization", "Bearer "+tokPremium)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
			done <- struct{}{}
		}()
	}
	require.Eventually(t, func() bool { return e.emu.InFlight() == 2 }, 5*time.Second, 5*time.Millisecond)
	before := len(e.emu.Requests())
	a := e.do(e.rawUpload(tokPremium, bytes.NewReader(fixtures.JPEG(100)), map[string]string{"Content-Type": "image/jpeg", "X-Phone-Number-Id": phoneA}))
	assert.Equal(t, 429, a.Status, a.Raw)
	assert.Equal(t, codeTooManyTransfers, a.Error)
	assert.Equal(t, "5", a.Header.Get("Retry-After"))
	assert.Len(t, e.emu.Requests(), before, "the refused transfer reached Meta")
	a = e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokEnterprise))
	assert.Equal(t, 200, a.Status, "another account's transfer")
	cancel()
	<-done
	<-done
	require.Eventually(t, func() bool { return e.h.transfers.inUse() == 0 }, 5*time.Second, 5*time.Millisecond)
	a = e.do(mustReq(t, http.MethodGet, e.url("/v2/media/"+id+"/download"), tokPremium))
	assert.Equal(t, 200, a.Status, "the share came back")
}

func TestValidateTransfers(t *testing.T) {
	h := &Handler{MaxTransfersPerAccount: 10, MaxTransfers: 5}
	err := h.validateTransfers()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "at most max_transfers")
}
