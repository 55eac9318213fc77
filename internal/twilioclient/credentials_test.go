package twilioclient

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const (
	testSID = "AC0123456789abcdef0123456789abcdef"
	tokenA  = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	tokenB  = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

// writeCreds writes the folder as the kubelet updates a Secret volume: the
// new files appear at once (a rename).
func writeCreds(t *testing.T, dir, sid, token string) {
	t.Helper()
	for name, v := range map[string]string{AccountSIDFile: sid, AuthTokenFile: token} {
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestCredentialsFollowARotatedToken(t *testing.T) {
	dir := t.TempDir()
	writeCreds(t, dir, testSID, tokenA)
	c, err := LoadCredentials(dir, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	c.now = func() time.Time { return now }
	if sid, tok := c.Current(); sid != testSID || tok != tokenA {
		t.Fatalf("Current() = %s, %s", sid, tok)
	}
	if changed, err := c.Reload(); changed || err != nil {
		t.Fatalf("Reload() without a change = %v, %v", changed, err)
	}
	writeCreds(t, dir, testSID, tokenB)
	if changed, err := c.Reload(); !changed || err != nil {
		t.Fatalf("Reload() after the rotation = %v, %v", changed, err)
	}
	if _, tok := c.Current(); tok != tokenB {
		t.Fatalf("token in force %s, want the new one", tok)
	}
	// Webhooks Twilio signed just before the rotation still validate.
	if got := c.Tokens(); !slices.Equal(got, []string{tokenB, tokenA}) {
		t.Fatalf("Tokens() during the overlap = %v", got)
	}
	now = now.Add(time.Hour + time.Second)
	if got := c.Tokens(); !slices.Equal(got, []string{tokenB}) {
		t.Fatalf("Tokens() after the overlap = %v", got)
	}
	// A Secret being rewritten, or holding something malformed, changes
	// nothing; another account is refused.
	writeCreds(t, dir, testSID, "not-a-token")
	if _, err := c.Reload(); err == nil {
		t.Fatal("a malformed token was taken")
	}
	writeCreds(t, dir, "AC"+strings.Repeat("f", 32), tokenA)
	if _, err := c.Reload(); err == nil || !strings.Contains(err.Error(), "account SID") {
		t.Fatalf("another account: %v", err)
	}
	if sid, tok := c.Current(); sid != testSID || tok != tokenB {
		t.Fatalf("after refused reloads Current() = %s, %s; want the last good ones", sid, tok)
	}
}

func TestLoadCredentialsNamesTheProblem(t *testing.T) {
	dir := t.TempDir()
	if _, err := LoadCredentials(dir, 0); err == nil || !strings.Contains(err.Error(), AccountSIDFile) || !strings.Contains(err.Error(), AuthTokenFile) {
		t.Fatalf("LoadCredentials of an empty folder = %v, want both files named", err)
	}
}
