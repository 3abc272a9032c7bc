package whatsappmedia

import "sync"

// shares counts what callers hold of a resource that all accounts share
// (transfers in progress, spooled bytes), in all and by account, so that
// no account, and no crowd of them, takes it all.
type shares struct {
	mu        sync.Mutex
	used      int64
	byAccount map[string]int64
}

// Which bound a take would pass.
const (
	shareTaken       = iota
	shareAccountFull // the account's own share
	shareAllFull     // all accounts' together
)

// take gives account n more, unless that would pass perAccount for it or
// total for all; it says which.
func (s *shares) take(account string, n, perAccount, total int64) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.byAccount[account]+n > perAccount:
		return shareAccountFull
	case s.used+n > total:
		return shareAllFull
	}
	if s.byAccount == nil {
		s.byAccount = make(map[string]int64)
	}
	s.used += n
	s.byAccount[account] += n
	return shareTaken
}

// give returns n of account's.
func (s *shares) give(account string, n int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.used -= n
	if s.byAccount[account] -= n; s.byAccount[account] <= 0 {
		delete(s.byAccount, account)
	}
}

// inUse is what all accounts hold now.
func (s *shares) inUse() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}
