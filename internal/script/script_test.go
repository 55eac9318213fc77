package script

import (
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
		"{{range .Name}}{{end}}": "does not render",
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
