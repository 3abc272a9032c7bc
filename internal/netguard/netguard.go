// Package netguard decides which addresses the gateway may connect to on
// a caller's behalf (an upload from a URL): only public unicast ones,
// unless an operator allows a range. The decision is made at dial time,
// on the address actually dialed (after DNS, for every address a name
// resolves to, and again after every redirect), through the dialer's
// Control hook, so that a name that resolves to a refused address, or a
// DNS answer that changes between a check and the connection, reaches
// nothing: the hook runs before the socket connects.
package netguard

import (
	"net"
	"net/netip"
	"syscall"
)

// Guard refuses every address that is not public unicast, except those in
// its allowed ranges.
type Guard struct {
	allow []netip.Prefix
}

// New returns a guard that allows the ranges in allow besides public
// unicast addresses.
func New(allow []netip.Prefix) *Guard { return &Guard{allow: allow} }

// RefusedError is a dial the guard refused.
type RefusedError struct {
	Addr   netip.Addr
	Reason string // the range's label: loopback, private, link_local, ...
}

func (e *RefusedError) Error() string {
	return "address " + e.Addr.String() + " is " + e.Reason + ": refused"
}

// refused are the IPv4 ranges that are not public unicast and have no
// netip predicate, with their labels.
var refused = []struct {
	p      netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "this_network"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared"}, // carrier-grade NAT (RFC 6598)
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
	{netip.MustParsePrefix("192.0.2.0/24"), "reserved"},  // documentation
	{netip.MustParsePrefix("198.18.0.0/15"), "reserved"}, // benchmarking
	{netip.MustParsePrefix("198.51.100.0/24"), "reserved"},
	{netip.MustParsePrefix("203.0.113.0/24"), "reserved"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // and the broadcast address
	{netip.MustParsePrefix("64:ff9b:1::/48"), "nat64_local"},
	{netip.MustParsePrefix("fec0::/10"), "site_local"},
	{netip.MustParsePrefix("100::/64"), "reserved"}, // discard
	{netip.MustParsePrefix("2001:db8::/32"), "reserved"},
	{netip.MustParsePrefix("3fff::/20"), "reserved"},      // documentation (RFC 9637)
	{netip.MustParsePrefix("2001:2::/48"), "reserved"},    // benchmarking
	{netip.MustParsePrefix("2001:10::/28"), "reserved"},   // ORCHID
	{netip.MustParsePrefix("2001:20::/28"), "reserved"},   // ORCHIDv2
	{netip.MustParsePrefix("5f00::/16"), "reserved"},      // SRv6 SIDs
	{netip.MustParsePrefix("192.88.99.0/24"), "reserved"}, // the 6to4 relay anycast
}

var (
	nat64   = netip.MustParsePrefix("64:ff9b::/96")    // RFC 6052: the IPv4 address in the last 32 bits
	v4Trans = netip.MustParsePrefix("::ffff:0:0:0/96") // IPv4-translated (RFC 6145): the same
	sixTo4  = netip.MustParsePrefix("2002::/16")       // RFC 3056: the IPv4 address in bits 16 to 47
	teredo  = netip.MustParsePrefix("2001::/32")       // RFC 4380: the client's address, obfuscated
	v4Wrap6 = netip.MustParsePrefix("::/96")           // IPv4-compatible, deprecated
)

// Check returns nil when a may be dialed, else why not.
func (g *Guard) Check(a netip.Addr) *RefusedError {
	a = a.WithZone("")
	for _, p := range g.allow {
		if p.Contains(a) || p.Contains(a.Unmap()) {
			return nil
		}
	}
	if reason := classify(a.Unmap()); reason != "" {
		return &RefusedError{Addr: a, Reason: reason}
	}
	// IPv6 forms that carry an IPv4 address another box unwraps: judged
	// by the address they carry.
	if inner, ok := embedded(a); ok {
		if err := g.Check(inner); err != nil {
			return &RefusedError{Addr: a, Reason: err.Reason}
		}
	}
	return nil
}

// classify labels an address that is not public unicast; "" for one that is.
func classify(a netip.Addr) string {
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate() && a.Is4():
		return "private"
	case a.IsPrivate():
		return "unique_local" // fc00::/7
	case a.IsLinkLocalUnicast():
		return "link_local"
	case a.IsMulticast():
		return "multicast"
	case a.Is6() && teredo.Contains(a):
		return "teredo"
	case a.Is6() && v4Wrap6.Contains(a):
		return "reserved"
	}
	for _, r := range refused {
		if r.p.Contains(a) {
			return r.reason
		}
	}
	return ""
}

// embedded returns the IPv4 address a NAT64 or 6to4 address carries.
func embedded(a netip.Addr) (netip.Addr, bool) {
	b := a.As16()
	switch {
	case !a.Is6():
		return netip.Addr{}, false
	case nat64.Contains(a), v4Trans.Contains(a):
		return netip.AddrFrom4([4]byte(b[12:16])), true
	case sixTo4.Contains(a):
		return netip.AddrFrom4([4]byte(b[2:6])), true
	}
	return netip.Addr{}, false
}

// Control is a net.Dialer Control hook: it refuses a connection to an
// address the guard refuses before the socket connects.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return &RefusedError{Reason: "invalid"}
	}
	if err := g.Check(a); err != nil {
		return err
	}
	return nil
}
