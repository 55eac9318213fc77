package controllers

import "testing"

func TestImageAllowed(t *testing.T) {
	allow := []string{"ghcr.io/delauto/delauto", "registry.example.com/team/", "exact.example.com/w:1.2"}
	for image, want := range map[string]bool{
		"ghcr.io/delauto/delauto":                true,
		"ghcr.io/delauto/delauto:v1":             true,
		"ghcr.io/delauto/delauto@sha256:abc":     true,
		"ghcr.io/delauto/delauto-evil:v1":        false,
		"registry.example.com/team/worker:x":     true,
		"registry.example.com/teammate/worker:x": false,
		"exact.example.com/w:1.2":                true,
		"exact.example.com/w:1.3":                false,
		"":                                       false,
	} {
		if got := imageAllowed(image, allow); got != want {
			t.Errorf("imageAllowed(%q) = %v, want %v", image, got, want)
		}
	}
}
