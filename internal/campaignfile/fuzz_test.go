package campaignfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	v1 "github.com/delauto/delauto/api/v1alpha1"
	"github.com/delauto/delauto/internal/phone/phonetest"
)

// The fuzz targets' seed corpora run in every `go test`; `make fuzz`
// fuzzes them for longer.

// sampleFiles are the campaign files of the sample campaigns, as the
// operator writes them.
func sampleFiles(f *testing.F) [][]byte {
	paths, err := filepath.Glob("../../config/samples/delauto_v1alpha1_callcampaign*.yaml")
	if err != nil || len(paths) == 0 {
		f.Fatalf("no sample campaigns: %v", err)
	}
	var out [][]byte
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		var cc v1.CallCampaign
		if err := yaml.UnmarshalStrict(raw, &cc); err != nil {
			f.Fatalf("%s: %v", p, err)
		}
		data, err := Marshal(Config{Namespace: cc.Namespace, Name: cc.Name, Spec: cc.Spec})
		if err != nil {
			f.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// FuzzParse feeds any bytes to the campaign file parser, which every worker
// runs on the file the operator writes (and on files written by hand). A
// file that loads writes back to a file that loads to the same campaign,
// its call settings are usable, and an error names the file, and quotes no
// phone number.
func FuzzParse(f *testing.F) {
	for _, data := range sampleFiles(f) {
		f.Add(data)
		f.Add(bytes.Replace(data, []byte(`"+493012345670"`), []byte(`+493012345670`), 1))
		f.Add(bytes.Replace(data, []byte(`"callsPerSecond"`), []byte(`"+493012345670"`), 1))
		f.Add(data[:len(data)/2])
	}
	f.Add([]byte(`{"namespace":"ns","name":"c","spec":{"twilio":{"fromNumbers":["+493012345670"]}}}`))
	f.Add([]byte(`{"namespace":"ns","name":"c","spec":{"twilio":{"fromNumbers":[4930123456]}}}`))
	f.Add([]byte(`{"namespace":"ns","name":"c","spec":{"script":{"timeLimit":"-5s"},"twilio":{"fromNumbers":["x"],"callsPerSecond":-1}}}`))
	f.Add([]byte(`{"namespace":"","name":"c"}`))
	f.Add([]byte(`{not json`))
	f.Add([]byte(`{"namespace":"ns","name":"c","spec":{}}{"trailing":1}`))
	const path = "/etc/delauto/campaign/campaign.json"
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, path)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "campaign file "+path) {
				t.Fatalf("error does not name the file: %s", msg)
			}
			if phonetest.ShowsNumber(msg) {
				t.Fatalf("error quotes a phone number: %s", msg)
			}
			return
		}
		if c.Namespace == "" || c.Name == "" || len(c.Spec.Twilio.FromNumbers) == 0 {
			t.Fatalf("loaded an incomplete campaign %+v", c)
		}
		s := Settings(&c.Spec)
		if s.RingTimeout <= 0 || s.TimeLimit <= 0 || s.InstructionsMaxLength <= 0 || s.CallsPerSecond < 1 {
			t.Fatalf("call settings %+v", s)
		}
		again, err := Marshal(*c)
		if err != nil {
			t.Fatalf("a loaded campaign does not encode: %v", err)
		}
		c2, err := Parse(again, path)
		if err != nil {
			t.Fatalf("a loaded campaign, written back, does not load: %v\n%s", err, again)
		}
		third, err := Marshal(*c2)
		if err != nil || !bytes.Equal(again, third) {
			t.Fatalf("writing and loading changed the campaign:\n%s\n%s", again, third)
		}
	})
}
