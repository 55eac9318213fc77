// Package script renders a campaign's greeting template. The operator
// validates it (a bad template degrades the campaign); the callback server
// renders it for each call.
package script

import (
	"fmt"
	"strings"
	"text/template"
	"time"
)

// Data is what a greeting template may use.
type Data struct {
	// Name is the recipient's name.
	Name string
	// Company is the campaign's company name.
	Company string
	// Date is the delivery day, for example "Wednesday, December 2".
	Date string
	// WindowStart and WindowEnd are the delivery window's local times, for
	// example "9:00 AM".
	WindowStart string
	WindowEnd   string
}

// NewData fills Data for a delivery window in the recipient's time zone.
func NewData(name, company string, start, end time.Time, loc *time.Location) Data {
	s, e := start.In(loc), end.In(loc)
	return Data{
		Name:        name,
		Company:     company,
		Date:        s.Format("Monday, January 2"),
		WindowStart: s.Format("3:04 PM"),
		WindowEnd:   e.Format("3:04 PM"),
	}
}

// maxLen bounds a rendered greeting: a call's words must stay short.
const maxLen = 2000

// Render executes the greeting template with d.
func Render(greeting string, d Data) (string, error) {
	t, err := template.New("greeting").Option("missingkey=error").Parse(greeting)
	if err != nil {
		return "", fmt.Errorf("greeting template does not parse: %w", err)
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", fmt.Errorf("greeting template does not render: %w", err)
	}
	if b.Len() > maxLen {
		return "", fmt.Errorf("greeting renders to %d characters, more than %d", b.Len(), maxLen)
	}
	return b.String(), nil
}

// Validate reports whether the greeting renders with sample data; the error
// says what is wrong in words a campaign author understands.
func Validate(greeting string) error {
	sample := NewData("Anna Schmidt", "Example Logistics",
		time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC), time.UTC)
	_, err := Render(greeting, sample)
	return err
}
