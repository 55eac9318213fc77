#!/usr/bin/env bash
# Turns what `make manifests` generates into the Helm chart: each CRD of
# config/crd/bases becomes a template (behind crds.enabled, kept on uninstall
# with crds.keep, upgraded by `helm upgrade`, which never touches a chart's
# crds/ folder), and the operator rules of config/rbac/role.yaml a file the
# ClusterRole template reads.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p charts/delauto/templates charts/delauto/files
rm -rf charts/delauto/crds
rm -f charts/delauto/templates/crd-*.yaml
for src in config/crd/bases/*.yaml; do
  out=charts/delauto/templates/crd-$(basename "$src" .yaml | sed 's/^[^_]*_//').yaml
  # Template delimiters in the CRD text (descriptions of the greeting
  # template) are printed literally; the metadata gets the chart's labels
  # and, with crds.keep, the resource policy that keeps the CRD (and so every
  # Delivery and CallCampaign) when the release is uninstalled.
  awk -v src="$src" '
    BEGIN {
      print "{{- if .Values.crds.enabled }}"
      print "# Generated from " src " by make manifests; do not edit."
    }
    /^---$/ && NR == 1 { next }
    {
      gsub(/\{\{/, "\001"); gsub(/\}\}/, "\002")
      gsub(/\001/, "{{ \"{{\" }}"); gsub(/\002/, "{{ \"}}\" }}")
    }
    !ann && $0 == "  annotations:" {
      print; ann = 1
      print "    {{- if .Values.crds.keep }}"
      print "    helm.sh/resource-policy: keep"
      print "    {{- end }}"
      next
    }
    !named && /^  name: / {
      print "  labels:"
      print "    {{- include \"delauto.labels\" . | nindent 4 }}"
      print; named = 1
      next
    }
    { print }
    END { print "{{- end }}" }
  ' "$src" > "$out"
done
{
  echo "# Generated from config/rbac/role.yaml by make manifests; do not edit."
  sed -n '/^rules:/,$p' config/rbac/role.yaml
} > charts/delauto/files/operator-rules.yaml
