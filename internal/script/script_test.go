package script

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestRenderDefaultGreetingInRecipientZone(t *testing.T) {
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Fatal(err)
	}
	d := NewData("Yui", "Spree", time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 2, 0, 0, 0, time.UTC), tokyo)
	got, err := Render("Hello {{.Name}}, this is {{.Company}}. Your parcel arrives on {{.Date}} between {{.WindowStart}} and {{.WindowEnd}}.", d)
	if err != nil {
		t.Fatal(err)
	}
	want := "Hello Yui, this is Spree. Your parcel arrives on Wednesday, December 2 between 9:00 AM and 11:00 AM."
	if got != want {
		t.Errorf("got  %q\nwant %q", got, want)
	}
}

func TestValidateNamesTheProblem(t *testing.T) {
	for tmpl, want := range map[string]string{
		"Hello {{.Name":          "does not parse",
		"Hello {{.Nmae}}":        "does not render",
		"{{range .Name}}{{end}}": "is not allowed",
	} {
		err := Validate(tmpl)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate(%q) = %v, want an error containing %q", tmpl, err, want)
		}
	}
	if err := Validate("Hi {{.Name}} from {{.Company}}"); err != nil {
		t.Errorf("a good template: %v", err)
	}
}

// TestOnlyFieldReferencesAreAllowed checks that a greeting cannot loop,
// branch, define templates or call functions: such templates used to render
// gigabytes or never finish.
func TestOnlyFieldReferencesAreAllowed(t *testing.T) {
	d := NewData("Anna", "Spree", time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC), time.UTC)
	for _, tmpl := range []string{
		"{{range 9223372036854775807}}{{end}}",
		strings.Repeat("x", 900) + "{{range 100000000}}{{.Name}}{{end}}",
		"{{with .Name}}{{.}}{{end}}",
		"{{if .Name}}hi{{end}}",
		`{{define "x"}}a{{end}}{{template "x"}}`,
		`{{block "x" .}}a{{end}}`,
		`{{printf "%0999d" 1}}`,
		`{{.Name | printf "%s"}}`,
		`{{call .Name}}`,
		`{{$x := .Name}}{{$x}}`,
		`{{"literal"}}`,
		`{{.}}`,
		`{{len .Name}}`,
	} {
		done := make(chan error, 1)
		go func() { _, err := Render(tmpl, d); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "not allowed") || !strings.Contains(err.Error(), "{{.Name}}") {
				t.Errorf("Render(%.60q) = %v, want a refusal naming the allowed fields", tmpl, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("Render(%.60q) did not return", tmpl)
		}
	}
	got, err := Render("{{/* note */}}Hi {{ .Name }}, {{- .Company -}} !", d)
	if err != nil || got != "Hi Anna,Spree!" {
		t.Errorf("comments, spaces and trim markers: got %q, %v", got, err)
	}
}

// TestOutputIsCappedWhileRendering checks that a long greeting is refused
// with a clear error, not rendered whole first.
func TestOutputIsCappedWhileRendering(t *testing.T) {
	long := strings.Repeat("x", 3000)
	d := NewData(long, "Spree", time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC), time.UTC)
	_, err := Render("Hello {{.Name}}", d)
	if err == nil || !errors.Is(err, errTooLong) || !strings.Contains(err.Error(), "more than 2000 characters") {
		t.Errorf("Render of a 3000-character name = %v, want the length refusal", err)
	}
	w := &cappedWriter{max: 10}
	if _, err := w.Write([]byte(strings.Repeat("y", 11))); !errors.Is(err, errTooLong) {
		t.Errorf("a write past the cap = %v", err)
	}
}

// TestPipeToNothingIsRefused: the template parser takes {{.Name|}} as
// {{.Name}}, and a comment may hold {{, but admission refuses both; the
// workers refuse them too, so that every greeting they render is one
// admission lets through (found by FuzzRender).
func TestPipeToNothingIsRefused(t *testing.T) {
	for _, g := range []string{"{{.Name|}}", "{{ .Name | }}", "{{- .Name| -}}", "{{/*{{*/}}", "{{/* {{range}} */}}"} {
		if err := Validate(g); err == nil || !strings.Contains(err.Error(), "is not allowed") {
			t.Errorf("Validate(%q) = %v, want a refusal", g, err)
		}
	}
	for _, g := range []string{"{{.Name}}", "{{ .Name }}", "{{- .Name -}}", "{{-\t.Name\n-}}"} {
		if err := Validate(g); err != nil {
			t.Errorf("Validate(%q) = %v", g, err)
		}
	}
}
