package defaults

import (
	"testing"
	"time"
)

func TestPositiveKeepsSettingsAndFillsTheRest(t *testing.T) {
	set, unset, negative := 3*time.Second, time.Duration(0), -time.Second
	for _, v := range []*time.Duration{&unset, &negative} {
		Positive(v, 5*time.Second)
	}
	Positive(&set, 5*time.Second)
	if set != 3*time.Second || unset != 5*time.Second || negative != 5*time.Second {
		t.Errorf("set %s, unset %s, negative %s; want 3s, 5s, 5s", set, unset, negative)
	}
}

func TestZeroFillsOnlyTheZeroValue(t *testing.T) {
	empty, named := "", "pod-1"
	Zero(&empty, "relay")
	Zero(&named, "relay")
	if empty != "relay" || named != "pod-1" {
		t.Errorf("empty %q, named %q; want relay, pod-1", empty, named)
	}
}
