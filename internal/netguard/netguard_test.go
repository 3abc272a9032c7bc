package netguard

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The guard's decisions, on addresses only: no test dials any of them.
func TestCheck(t *testing.T) {
	cases := map[string]string{ // address: the refusal's label, "" for allowed
		"0.0.0.0":                       "unspecified",
		"0.1.2.3":                       "this_network",
		"127.0.0.1":                     "loopback",
		"127.0.0.2":                     "loopback",
		"10.0.0.1":                      "private",
		"172.16.5.4":                    "private",
		"172.31.255.255":                "private",
		"192.168.1.1":                   "private",
		"169.254.169.254":               "link_local",
		"100.64.0.1":                    "shared",
		"100.127.255.254":               "shared",
		"224.0.0.1":                     "multicast",
		"239.255.255.250":               "multicast",
		"255.255.255.255":               "reserved",
		"240.0.0.1":                     "reserved",
		"192.0.2.10":                    "reserved",
		"198.18.0.1":                    "reserved",
		"::":                            "unspecified",
		"::1":                           "loopback",
		"fe80::1":                       "link_local",
		"fe80::1%eth0":                  "link_local",
		"fc00::1":                       "unique_local",
		"fd12:3456::1":                  "unique_local",
		"ff02::1":                       "multicast",
		"ff05::2":                       "multicast",
		"fec0::1":                       "site_local",
		"::ffff:127.0.0.1":              "loopback",
		"::ffff:169.254.169.254":        "link_local",
		"::ffff:10.1.2.3":               "private",
		"::ffff:0.0.0.0":                "unspecified",
		"64:ff9b::7f00:1":               "loopback",   // NAT64 of 127.0.0.1
		"64:ff9b::a9fe:a9fe":            "link_local", // NAT64 of 169.254.169.254
		"64:ff9b::c0a8:101":             "private",
		"64:ff9b::6440:1":               "shared",
		"64:ff9b:1::a00:1":              "nat64_local",
		"2002:7f00:1::1":                "loopback", // 6to4 of 127.0.0.1
		"2002:a9fe:a9fe::1":             "link_local",
		"2001::1":                       "teredo",
		"::7f00:1":                      "reserved", // IPv4-compatible
		"2001:db8::1":                   "reserved",
		"100::1":                        "reserved",
		"::ffff:0:7f00:1":               "loopback", // IPv4-translated
		"::ffff:0:a00:1":                "private",
		"3fff::1":                       "reserved",
		"2001:2::1":                     "reserved",
		"2001:10::1":                    "reserved",
		"2001:20::1":                    "reserved",
		"5f00::1":                       "reserved",
		"192.88.99.1":                   "reserved",
		"::ffff:0:808:808":              "",
		"93.184.215.14":                 "",
		"8.8.8.8":                       "",
		"172.32.0.1":                    "",
		"100.128.0.1":                   "",
		"2606:4700:4700::1111":          "",
		"64:ff9b::808:808":              "", // NAT64 of 8.8.8.8
		"2002:808:808::1":               "",
		"::ffff:8.8.4.4":                "",
		"2a03:2880:f12f:83:face:b00c::": "",
	}
	g := New(nil)
	for addr, want := range cases {
		a, err := netip.ParseAddr(addr)
		require.NoError(t, err, addr)
		got := ""
		if r := g.Check(a); r != nil {
			got = r.Reason
		}
		assert.Equal(t, want, got, addr)
	}
}

func TestAllow(t *testing.T) {
	g := New([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("10.8.0.0/16")})
	for addr, allowed := range map[string]bool{
		"127.0.0.1": true, "::ffff:127.0.0.1": true, "127.0.0.2": false, "::1": false,
		"10.8.3.4": true, "10.9.0.1": false, "169.254.169.254": false,
	} {
		assert.Equal(t, allowed, g.Check(netip.MustParseAddr(addr)) == nil, addr)
	}
}

// The dialer hook takes the address as net.Dialer gives it.
func TestControl(t *testing.T) {
	g := New([]netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")})
	assert.NoError(t, g.Control("tcp4", "127.0.0.1:8080", nil))
	var r *RefusedError
	require.True(t, errors.As(g.Control("tcp4", "127.0.0.2:80", nil), &r))
	assert.Equal(t, "loopback", r.Reason)
	require.True(t, errors.As(g.Control("tcp6", "[fe80::1%lo]:443", nil), &r))
	assert.Equal(t, "link_local", r.Reason)
	assert.Error(t, g.Control("tcp", "no-port", nil))
}
