package script

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"sigs.k8s.io/yaml"
)

// The fuzz targets' seed corpora run in every `go test`; `make fuzz`
// fuzzes them for longer.

// admissionPatterns are the patterns the CRD's rule on script.greeting
// refuses (CEL's matches is RE2, as Go's regexp), read from the generated
// CRD so that the test follows the API.
func admissionPatterns(f *testing.F) []*regexp.Regexp {
	raw, err := os.ReadFile("../../config/crd/bases/delauto.io_callcampaigns.yaml")
	if err != nil {
		f.Fatal(err)
	}
	var crd struct {
		Spec struct {
			Versions []struct {
				Schema struct {
					OpenAPIV3Schema struct {
						Properties map[string]struct {
							Properties map[string]struct {
								Properties map[string]struct {
									MaxLength   int `json:"maxLength"`
									Validations []struct {
										Rule string `json:"rule"`
									} `json:"x-kubernetes-validations"`
								} `json:"properties"`
							} `json:"properties"`
						} `json:"properties"`
					} `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(raw, &crd); err != nil || len(crd.Spec.Versions) == 0 {
		f.Fatalf("the CRD does not parse: %v", err)
	}
	g := crd.Spec.Versions[0].Schema.OpenAPIV3Schema.Properties["spec"].Properties["script"].Properties["greeting"]
	if g.MaxLength != 1000 || len(g.Validations) != 1 {
		f.Fatalf("script.greeting's schema changed (maxLength %d, %d rules): update this test", g.MaxLength, len(g.Validations))
	}
	var out []*regexp.Regexp
	for _, m := range regexp.MustCompile(`!self\.matches\('([^']*)'\)`).FindAllStringSubmatch(g.Validations[0].Rule, -1) {
		out = append(out, regexp.MustCompile(m[1]))
	}
	if len(out) != len(admissionRule) {
		f.Fatalf("rule %q: want %d patterns", g.Validations[0].Rule, len(admissionRule))
	}
	for i, re := range out {
		if re.String() != admissionRule[i].String() {
			f.Fatalf("the CRD's pattern %q is not the workers' %q", re, admissionRule[i])
		}
	}
	return out
}

// FuzzRender renders any greeting with any recipient name, as the callback
// server does for every call. It returns in bounded time with at most
// maxLen bytes or an error that says what is wrong; a greeting without
// actions renders as it is; and a greeting that renders is one admission
// lets through (else a campaign author could not apply a greeting the
// workers would speak).
func FuzzRender(f *testing.F) {
	refused := admissionPatterns(f)
	for _, g := range []string{
		"Hello {{.Name}}, this is {{.Company}}. Your parcel arrives on {{.Date}} between {{.WindowStart}} and {{.WindowEnd}}.",
		"Guten Tag {{.Name}}, hier ist der {{.Company}}. Wir bringen Ihr Paket am {{.Date}} zwischen {{.WindowStart}} und {{.WindowEnd}} Uhr.",
		"{{/* note */}}Hi {{ .Name }}, {{- .Company -}} !",
		"Hello {{.Name", "Hello {{.Nmae}}", "{{range .Name}}{{end}}", "{{range 9223372036854775807}}{{end}}",
		"{{with .Name}}{{.}}{{end}}", "{{if .Name}}hi{{end}}", `{{define "x"}}a{{end}}{{template "x"}}`,
		`{{block "x" .}}a{{end}}`, `{{printf "%0999d" 1}}`, `{{.Name | printf "%s"}}`, `{{call .Name}}`,
		`{{$x := .Name}}{{$x}}`, `{{"literal"}}`, `{{.}}`, `{{len .Name}}`, "{{/* (a|b) */}}{{.Name}}",
		strings.Repeat("{{.Name}}", 300), strings.Repeat("x", 2001), "{{.Name.Foo}}", "{{(.Name)}}", "{{ .Name}}",
		"{{- /* c */ -}}", "}}{{", "{{", "plain text, no actions",
	} {
		f.Add(g, "Anna Schmidt")
	}
	f.Add("{{.Name}}", strings.Repeat("Ä", 1500))
	at := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, greeting, name string) {
		d := NewData(name, "Spree Parcel Service", at, at.Add(2*time.Hour), time.UTC)
		start := time.Now()
		out, err := Render(greeting, d)
		if took := time.Since(start); took > 10*time.Second {
			t.Fatalf("Render(%.80q) took %s", greeting, took)
		}
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "greeting template does not parse") && !strings.HasPrefix(msg, "greeting template does not render") &&
				!strings.HasPrefix(msg, "greeting may only hold text and field references") && err != errTooLong {
				t.Fatalf("Render(%.80q) error does not say what is wrong: %v", greeting, err)
			}
			return
		}
		if len(out) > maxLen {
			t.Fatalf("Render(%.80q) rendered %d bytes", greeting, len(out))
		}
		if !strings.Contains(greeting, "{{") && out != greeting {
			t.Fatalf("Render(%.80q) changed text without actions: %.80q", greeting, out)
		}
		if utf8.ValidString(greeting) && utf8.RuneCountInString(greeting) <= 1000 && Validate(greeting) == nil {
			for _, re := range refused {
				if re.MatchString(greeting) {
					t.Fatalf("greeting %q renders, but admission refuses it (%s)", greeting, re)
				}
			}
		}
	})
}
