package relay

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"syscall"
	"time"
)

// ErrForbiddenAddress is a relay webhook whose host resolves to an address
// the worker must not reach: private, loopback, link-local (cloud metadata),
// shared (CGNAT), unspecified or multicast. Config.AllowPrivate permits them.
var ErrForbiddenAddress = errors.New("relay webhook address is private, loopback or link-local")

// ErrInsecureURL is a relay webhook URL that is not an absolute https URL
// (http is accepted only with Config.AllowPrivate).
var ErrInsecureURL = errors.New("relay webhook URL must be an absolute https:// URL")

// refused are IPv4 ranges beyond those netip classifies: "this network"
// and the shared address space of carrier-grade NAT.
var refused = []netip.Prefix{netip.MustParsePrefix("0.0.0.0/8"), netip.MustParsePrefix("100.64.0.0/10")}

// publicAddr reports whether a may be dialled for a relay webhook.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range refused {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// dialControl refuses connections to addresses that are not public; it runs
// after name resolution, on the address actually dialled, so a DNS name
// pointing inside the cluster is refused too.
func dialControl(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q is not an IP address", ErrForbiddenAddress, address)
	}
	if !publicAddr(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrForbiddenAddress, ap.Addr())
	}
	return nil
}

// NewHTTPClient is the relay's webhook client: a 10 s timeout, no redirects
// followed (a 3xx is a failed send), no proxy from the environment, and,
// unless allowPrivate, no connection to private, loopback or link-local
// addresses.
func NewHTTPClient(allowPrivate bool) *http.Client {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if !allowPrivate {
		d.Control = dialControl
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.DialContext = d.DialContext
	return &http.Client{
		Timeout:       10 * time.Second,
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// checkWebhookURL refuses a webhook URL that is not https (or http, with
// allowHTTP). The URL is not quoted: it may carry credentials.
func checkWebhookURL(raw string, allowHTTP bool) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" || !(u.Scheme == "https" || allowHTTP && u.Scheme == "http") {
		return ErrInsecureURL
	}
	return nil
}
