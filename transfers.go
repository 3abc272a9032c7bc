package whatsappmedia

import (
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Defaults of the transfer shares.
const (
	DefaultMaxTransfersPerAccount = 64
	DefaultMaxTransfers           = 4096
)

// transfersRetryAfter is the Retry-After of a refusal for a full share.
const transfersRetryAfter = 5 * time.Second

// transferPool holds the process's one transferCounts, shared by the
// handlers of every loaded config: a reload keeps counting the transfers
// that the old config still serves.
var transferPool = caddy.NewUsagePool()

const transferPoolKey = "transfers"

// transferCounts counts the media requests being served, in all and by
// account, so that no account, and no crowd of them, takes every
// connection to Meta.
type transferCounts struct {
	mu         sync.Mutex
	total      int
	perAccount map[string]int
}

func (*transferCounts) Destruct() error { return nil }

func loadTransferCounts() *transferCounts {
	v, _, _ := transferPool.LoadOrNew(transferPoolKey, func() (caddy.Destructor, error) {
		return &transferCounts{perAccount: make(map[string]int)}, nil
	})
	return v.(*transferCounts)
}

// acquire takes a transfer of account's, and returns its release, or an
// answer when the account already has perAccount transfers, or all
// accounts together total.
func (c *transferCounts) acquire(account string, perAccount, total int) (func(), *apiError) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.perAccount[account] >= perAccount:
		return nil, tooManyTransfers("Too many transfers in progress for this account (at most " +
			strconv.Itoa(perAccount) + " at once); retry when one has finished")
	case c.total >= total:
		return nil, tooManyTransfers("The gateway is serving as many transfers as it may; retry shortly")
	}
	c.total++
	c.perAccount[account]++
	var once sync.Once
	return func() {
		once.Do(func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.total--
			if c.perAccount[account]--; c.perAccount[account] <= 0 {
				delete(c.perAccount, account)
			}
		})
	}, nil
}

// inProgress is the number of transfers in progress.
func (c *transferCounts) inProgress() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

func tooManyTransfers(message string) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Code: codeTooManyTransfers, Message: message,
		Header: http.Header{"Retry-After": {strconv.Itoa(int(transfersRetryAfter.Seconds()))}}}
}

// validateTransfers checks the shares' options.
func (h *Handler) validateTransfers() error {
	if h.MaxTransfersPerAccount < 0 || h.MaxTransfers < 0 || h.MaxTransfersPerAccount > h.MaxTransfers {
		return fmt.Errorf("max_transfers_per_account (%d) must be positive and at most max_transfers (%d)",
			h.MaxTransfersPerAccount, h.MaxTransfers)
	}
	return nil
}

// takeTransfer takes one of acct's transfers for the request, within
// max_transfers_per_account and max_transfers.
func (h *Handler) takeTransfer(acct *Account) (func(), *apiError) {
	return h.transfers.acquire(acct.ID, h.MaxTransfersPerAccount, h.MaxTransfers)
}
