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
type transferCounts struct{ shares }

func (*transferCounts) Destruct() error { return nil }

func loadTransferCounts() *transferCounts {
	v, _, _ := transferPool.LoadOrNew(transferPoolKey, func() (caddy.Destructor, error) {
		return new(transferCounts), nil
	})
	return v.(*transferCounts)
}

// acquire takes a transfer of account's, and returns its release, or an
// answer when the account already has perAccount transfers, or all
// accounts together total.
func (c *transferCounts) acquire(account string, perAccount, total int) (func(), *apiError) {
	switch c.take(account, 1, int64(perAccount), int64(total)) {
	case shareAccountFull:
		return nil, tooManyTransfers("Too many transfers in progress for this account (at most " +
			strconv.Itoa(perAccount) + " at once); retry when one has finished")
	case shareAllFull:
		return nil, tooManyTransfers("The gateway is serving as many transfers as it may; retry shortly")
	}
	var once sync.Once
	return func() { once.Do(func() { c.give(account, 1) }) }, nil
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
