package links

import (
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var (
	key1 = []byte("0123456789abcdef0123456789abcdef-one")
	key2 = []byte("0123456789abcdef0123456789abcdef-two")
	now  = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
)

func sample() Link {
	return Link{Path: "/v2/media/1234567890/download", Account: "acme", Disposition: "inline",
		Filename: "sea side.jpg", Expires: now.Add(15 * time.Minute), Minter: MinterID("tok")}
}

func TestSignVerify(t *testing.T) {
	l := sample()
	q := Sign(key1, l)
	got, err := Verify([][]byte{key2, key1}, l.Path, q, now)
	require.NoError(t, err)
	assert.Equal(t, l.Account, got.Account)
	assert.Equal(t, l.Filename, got.Filename)
	assert.True(t, l.Expires.Equal(got.Expires))
	// Through a URL and back, as a browser sends it.
	u, err := url.Parse("https://gw.example" + l.Path + "?" + q.Encode())
	require.NoError(t, err)
	_, err = Verify([][]byte{key1}, u.EscapedPath(), u.Query(), now)
	assert.NoError(t, err)
	assert.True(t, IsLink(u.Query()))
	assert.False(t, IsLink(url.Values{"disposition": {"inline"}}))
}

// Every part is bound: a change to any is ErrInvalid.
func TestVerifyRefusesChanges(t *testing.T) {
	l := sample()
	good := Sign(key1, l)
	change := func(k, v string) url.Values {
		q := url.Values{}
		for kk, vv := range good {
			q[kk] = append([]string{}, vv...)
		}
		q.Set(k, v)
		return q
	}
	cases := map[string]struct {
		path string
		q    url.Values
	}{
		"another media":       {"/v2/media/1234567891/download", good},
		"another account":     {l.Path, change("acct", "beta")},
		"another disposition": {l.Path, change("disp", "attachment")},
		"no disposition":      {l.Path, change("disp", "")},
		"another name":        {l.Path, change("name", "x.jpg")},
		"another expiry":      {l.Path, change("exp", "1956528000")},
		"another minter":      {l.Path, change("mint", MinterID("other"))},
		"an unknown key":      {l.Path, change("kid", KeyID(key2))},
		"a bad signature":     {l.Path, change("sig", "AAAA")},
		"no signature":        {l.Path, change("sig", "")},
		"a bad expiry":        {l.Path, change("exp", "soon")},
		"another parameter":   {l.Path, change("disposition", "attachment")},
		"a parameter twice":   {l.Path, func() url.Values { q := change("acct", "acme"); q.Add("acct", "acme"); return q }()},
	}
	for name, c := range cases {
		_, err := Verify([][]byte{key1, key2}, c.path, c.q, now)
		assert.ErrorIs(t, err, ErrInvalid, name)
	}
	// A field cannot borrow from the next: "a\n" + "b" is not "a" + "\nb".
	a, b := sample(), sample()
	a.Account, a.Disposition = "acme\n5:b", ""
	b.Account, b.Disposition = "acme", "b"
	assert.NotEqual(t, canonical(a), canonical(b))
}

func TestVerifyExpiry(t *testing.T) {
	l := sample()
	q := Sign(key1, l)
	_, err := Verify([][]byte{key1}, l.Path, q, l.Expires.Add(-time.Second))
	assert.NoError(t, err)
	_, err = Verify([][]byte{key1}, l.Path, q, l.Expires)
	assert.ErrorIs(t, err, ErrExpired)
	// Rotation: a key dropped no longer verifies its links.
	_, err = Verify([][]byte{key2}, l.Path, q, now)
	assert.ErrorIs(t, err, ErrInvalid)
}

// The format is the one an app can write: a Node function minting the
// same signature (the one the docs will show) is checked against Sign.
func TestNodeMintsTheSameLink(t *testing.T) {
	node := `
const crypto = require('node:crypto');
function signLink(key, { path, account, disposition = '', filename = '', expires, minterToken }) {
  const mint = crypto.createHash('sha256').update(minterToken).digest('hex').slice(0, 16);
  const kid = crypto.createHash('sha256').update(key).digest('hex').slice(0, 8);
  const exp = String(expires);
  let c = 'whatsapp-media-link-v1\n';
  for (const f of [path, account, disposition, filename, exp, mint]) c += Buffer.byteLength(f) + ':' + f + '\n';
  const sig = crypto.createHmac('sha256', key).update(c).digest('base64url');
  return new URLSearchParams({ acct: account, disp: disposition, name: filename, exp, mint, kid, sig });
}
const [key, path, account, disposition, filename, expires, tok] = process.argv.slice(1);
console.log(signLink(key, { path, account, disposition, filename, expires, minterToken: tok }).toString());`
	l := sample()
	out, err := exec.Command("node", "-e", node, string(key1), l.Path, l.Account, l.Disposition, l.Filename,
		"1956528000", "tok").Output()
	require.NoError(t, err)
	q, err := url.ParseQuery(strings.TrimSpace(string(out)))
	require.NoError(t, err)
	got, err := Verify([][]byte{key1}, l.Path, q, now)
	require.NoError(t, err)
	assert.Equal(t, "sea side.jpg", got.Filename)
	assert.Equal(t, MinterID("tok"), got.Minter)
}
