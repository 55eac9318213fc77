// Package script renders a campaign's greeting template. The operator
// validates it (a bad template degrades the campaign); the callback server
// renders it for each call.
//
// A greeting is literal text and field references such as {{.Name}} only:
// actions that loop, branch, define templates or call functions are refused
// before anything is rendered, and the output is capped while it is written,
// so no greeting can make a worker spend unbounded time or memory.
package script

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
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

// admissionRule is the CRD's rule on greetings (its patterns, which CEL
// matches as RE2, as Go does): what admission refuses is refused here too,
// also where the template parser would take it (a {{ inside a comment),
// so every greeting the workers render is one admission lets through.
// FuzzRender checks that these are the CRD's patterns.
var admissionRule = []*regexp.Regexp{
	regexp.MustCompile(`[{][{]-?[[:space:]]*[^./[:space:]-]`),
	regexp.MustCompile(`[{][{]-?[[:space:]]*[.][^}]*[|(]`),
}

// maxLen bounds a rendered greeting: a call's words must stay short.
const maxLen = 2000

// errTooLong stops rendering once the output passes maxLen.
var errTooLong = fmt.Errorf("greeting renders to more than %d characters", maxLen)

// Render executes the greeting template with d. The template may hold only
// literal text and references to Data's fields.
func Render(greeting string, d Data) (string, error) {
	t, err := template.New("greeting").Option("missingkey=error").Parse(greeting)
	if err != nil {
		return "", fmt.Errorf("greeting template does not parse: %w", err)
	}
	if err := fieldsOnly(t, greeting); err != nil {
		return "", err
	}
	for _, re := range admissionRule {
		if m := re.FindString(greeting); m != "" {
			return "", notAllowed(strconv.Quote(m))
		}
	}
	w := &cappedWriter{max: maxLen}
	if err := t.Execute(w, d); err != nil {
		if errors.Is(err, errTooLong) {
			return "", errTooLong
		}
		return "", fmt.Errorf("greeting template does not render: %w", err)
	}
	return w.b.String(), nil
}

// fieldsOnly refuses every template action but a plain {{.Field}} naming
// one of Data's fields (and comments); src is the template's text.
func fieldsOnly(t *template.Template, src string) error {
	if len(t.Templates()) > 1 {
		return notAllowed("define or block")
	}
	if t.Tree == nil || t.Tree.Root == nil {
		return nil
	}
	for _, n := range t.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode, *parse.CommentNode:
		case *parse.ActionNode:
			if err := plainField(n, src); err != nil {
				return err
			}
		case *parse.RangeNode:
			return notAllowed("range")
		case *parse.WithNode:
			return notAllowed("with")
		case *parse.IfNode:
			return notAllowed("if")
		case *parse.TemplateNode:
			return notAllowed("template or block")
		default:
			return notAllowed(n.String())
		}
	}
	return nil
}

// plainField accepts {{.Field}} with Field one of Data's fields, written as
// that alone (spaces and trim markers aside): the parser also takes
// {{.Name|}}, a pipe to nothing, which admission refuses.
func plainField(a *parse.ActionNode, src string) error {
	p := a.Pipe
	if p == nil || len(p.Decl) > 0 || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return notAllowed(a.String())
	}
	if pos := int(a.Position()); pos >= 0 && pos <= len(src) {
		raw := src[pos:]
		if end := strings.Index(raw, "}}"); end >= 0 {
			raw = raw[:end]
		}
		raw = strings.TrimRight(strings.TrimSuffix(strings.TrimRight(raw, " \t\r\n"), "-"), " \t\r\n")
		if raw != p.Cmds[0].Args[0].String() {
			return notAllowed("{{" + raw + "}}")
		}
	}
	f, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
	if !ok || len(f.Ident) != 1 {
		return notAllowed(a.String())
	}
	if _, ok := reflect.TypeOf(Data{}).FieldByName(f.Ident[0]); !ok {
		return fmt.Errorf("greeting template does not render: %s is not a field; use %s", a, fieldList())
	}
	return nil
}

func notAllowed(what string) error {
	return fmt.Errorf("greeting may only hold text and field references (%s); %s is not allowed", fieldList(), what)
}

// fieldList names Data's fields as template references.
func fieldList() string {
	t := reflect.TypeOf(Data{})
	names := make([]string, t.NumField())
	for i := range names {
		names[i] = "{{." + t.Field(i).Name + "}}"
	}
	return strings.Join(names, ", ")
}

// cappedWriter fails a write that would take the output past max.
type cappedWriter struct {
	b   strings.Builder
	max int
}

func (w *cappedWriter) Write(p []byte) (int, error) {
	if w.b.Len()+len(p) > w.max {
		return 0, errTooLong
	}
	return w.b.Write(p)
}

// Validate reports whether the greeting renders with sample data; the error
// says what is wrong in words a campaign author understands.
func Validate(greeting string) error {
	sample := NewData("Anna Schmidt", "Example Logistics",
		time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC), time.Date(2026, 12, 2, 11, 0, 0, 0, time.UTC), time.UTC)
	_, err := Render(greeting, sample)
	return err
}
