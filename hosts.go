package whatsappmedia

import (
	"fmt"
	"net/url"
	"strings"
)

// DefaultMediaHosts are Meta's media hosts, where the Meta token may go
// when downloading.
var DefaultMediaHosts = []string{"lookaside.fbsbx.com", "*.fbsbx.com", "*.fbcdn.net", "*.whatsapp.net"}

// hostList is the allow-list of hosts that media URLs, and redirects from
// them, may point to.
type hostList struct {
	exact    map[string]bool
	suffixes []string // ".fbsbx.com" for "*.fbsbx.com"
	// graphHost may be reached over plain http when graph_url is http
	// (an emulator in tests), and on graph_url's port; every other host
	// needs https on port 443.
	graphHost   string
	graphPort   string
	graphHTTPOK bool
}

// newHostList compiles patterns: a host name, or "*." and a domain for
// every name below that domain (not the domain itself).
func newHostList(patterns []string, graph *url.URL) (hostList, error) {
	l := hostList{exact: make(map[string]bool)}
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		switch {
		case strings.HasPrefix(p, "*."):
			d := p[1:]
			if len(d) < 4 || strings.ContainsAny(d[1:], "*/:") || !strings.Contains(d[1:], ".") {
				return l, fmt.Errorf("media_hosts: bad pattern %q", p)
			}
			l.suffixes = append(l.suffixes, d)
		case p != "" && !strings.ContainsAny(p, "*/:@"):
			l.exact[p] = true
		default:
			return l, fmt.Errorf("media_hosts: bad pattern %q", p)
		}
	}
	if graph != nil {
		l.graphHost = strings.ToLower(graph.Hostname())
		l.graphPort = portOf(graph)
		l.exact[l.graphHost] = true
		l.graphHTTPOK = graph.Scheme == "http"
	}
	return l, nil
}

// portOf is u's port, or its scheme's default.
func portOf(u *url.URL) string {
	if p := u.Port(); p != "" {
		return p
	}
	if u.Scheme == "http" {
		return "80"
	}
	return "443"
}

// allows reports whether the Meta token may be sent to u: a listed host,
// over https on port 443, or graph_url's own host on graph_url's port.
func (l hostList) allows(u *url.URL) bool {
	if u == nil || u.User != nil {
		return false
	}
	host := strings.ToLower(u.Hostname())
	isGraph := host == l.graphHost && portOf(u) == l.graphPort
	switch {
	case host == "":
		return false
	case u.Scheme == "http" && (!l.graphHTTPOK || !isGraph):
		return false
	case u.Scheme != "http" && u.Scheme != "https":
		return false
	case !isGraph && portOf(u) != "443":
		return false
	}
	if l.exact[host] {
		return true
	}
	for _, s := range l.suffixes {
		if strings.HasSuffix(host, s) {
			return true
		}
	}
	return false
}
