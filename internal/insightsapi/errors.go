package insightsapi

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error is the JSON body of every refusal and failure: Code is the HTTP
// status, Reason a word a program can switch on, Parameter the query or
// path parameter that was refused (bad requests only).
type Error struct {
	Code      int    `json:"code"`
	Reason    string `json:"reason"`
	Message   string `json:"message"`
	Parameter string `json:"parameter,omitempty"`
}

// The reasons of Error.
const (
	ReasonBadParameter = "BadParameter"
	ReasonUnauthorized = "Unauthorized"
	ReasonForbidden    = "Forbidden"
	ReasonNotFound     = "NotFound"
	ReasonNotAllowed   = "MethodNotAllowed"
	ReasonUnavailable  = "ServiceUnavailable"
	ReasonInternal     = "InternalError"
	ReasonTimeout      = "Timeout"
)

func (e *Error) Error() string { return e.Message }

// badParam is a 400 naming the parameter.
func badParam(name, format string, args ...any) *Error {
	return &Error{Code: http.StatusBadRequest, Reason: ReasonBadParameter, Parameter: name,
		Message: name + ": " + fmt.Sprintf(format, args...)}
}

// writeError writes e as JSON.
func writeError(w http.ResponseWriter, e *Error) {
	body, _ := json.Marshal(e)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if e.Code == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", `Bearer realm="delauto"`)
	}
	w.WriteHeader(e.Code)
	_, _ = w.Write(append(body, '\n'))
}
