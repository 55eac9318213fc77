package dialer

import (
	"errors"
	"io"
	"net"
	"regexp"
	"strconv"
	"syscall"

	"github.com/twilio/twilio-go/client"
)

// failure is what a failed create-call request means for the attempt.
type failure int

const (
	// rateLimited: 429 / 20429. Twilio did not process the request.
	rateLimited failure = iota + 1
	// rejected: a 4xx Twilio gives for a number that cannot be called; the
	// attempt fails for good.
	rejected
	// refused: any other 4xx (bad credentials, a parameter Twilio refuses,
	// the codes in CampaignConfigCodes): no call was made, and the cause is
	// the campaign's or the worker's configuration, not the recipient: the
	// attempt is put back, and the campaign is flagged for the operator
	// (Degraded, with the code).
	refused
	// notSent: the request never reached Twilio (connection refused, DNS).
	notSent
	// ambiguous: the request may have created a call (timeout, connection
	// reset, 5xx, an unreadable response).
	ambiguous
)

// RejectedCodes are the Twilio error codes that make an attempt fail for
// good: the recipient's number cannot be called (invalid, unreachable,
// blocked, no voice).
var RejectedCodes = map[int]bool{
	13223: true, // Dial: invalid phone number format
	13224: true, // Dial: invalid phone number
	21211: true, // invalid To number
	21214: true, // To number cannot be reached
	21216: true, // the account may not call this number (blocked)
	21217: true, // the number does not appear to be valid
	21401: true, // invalid phone number
	21407: true, // this phone number type does not support voice
}

// CampaignConfigCodes are Twilio error codes about the campaign's own
// configuration (its caller IDs, its account's permissions), never the
// recipient's number: the attempt waits and is tried again, and the
// campaign turns Degraded with the code until the operator fixes it. Like
// every 4xx not in RejectedCodes they are refused; they are listed so that
// no one moves them back into RejectedCodes, where they would fail
// deliveries for good.
var CampaignConfigCodes = map[int]bool{
	21210: true, // From is not a verified or purchased number of the account
	21212: true, // invalid From number
	21215: true, // geographic permission: calls to this country or region are not enabled
}

// decodeStatusRE finds the HTTP status twilio-go reports when an error
// response was not Twilio's JSON (a proxy's HTML page).
var decodeStatusRE = regexp.MustCompile(`HTTP error code: (\d{3})`)

// classify says what a create-call error means, and the label it is counted
// under (the Twilio code, or the transport failure).
func classify(err error) (kind failure, code int, label string) {
	var te *client.TwilioRestError
	if errors.As(err, &te) {
		code, label = te.Code, strconv.Itoa(te.Code)
		if te.Code == 0 {
			label = "http_" + strconv.Itoa(te.Status)
		}
		switch {
		case te.Status == 429 || te.Code == 20429:
			return rateLimited, code, label
		case te.Status >= 500:
			return ambiguous, code, label
		case CampaignConfigCodes[te.Code]:
			return refused, code, label
		case RejectedCodes[te.Code]:
			return rejected, code, label
		case te.Status >= 400:
			return refused, code, label
		}
		return ambiguous, code, label
	}
	if m := decodeStatusRE.FindStringSubmatch(err.Error()); m != nil {
		status, _ := strconv.Atoi(m[1])
		label = "http_" + m[1]
		switch {
		case status == 429:
			return rateLimited, 20429, label
		case status >= 400 && status < 500:
			return refused, 0, label
		}
		return ambiguous, 0, label
	}
	var ne net.Error
	var oe *net.OpError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr), errors.Is(err, syscall.ECONNREFUSED),
		errors.As(err, &oe) && oe.Op == "dial":
		return notSent, 0, "connect" // no connection, so no request
	case errors.As(err, &ne) && ne.Timeout():
		return ambiguous, 0, "timeout"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ambiguous, 0, "reset"
	}
	return ambiguous, 0, "other"
}
