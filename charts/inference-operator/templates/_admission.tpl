{{- /*
The inference-id policy's settings (api/policies.py, variables prefixes and
requireNamespacePrefix) from admission.*: a CEL map of id prefix to the namespaces allowed
to use it (an entry listed twice has its namespaces merged) and a bool. Called by crds.yaml
with (list $ policy); it edits the policy in place.
*/ -}}
{{- define "inference-operator.inferenceIdSettings" -}}
{{- $admission := (index . 0).Values.admission }}
{{- $prefixes := dict }}
{{- range $admission.inferenceIdPrefixes }}
{{- $_ := set $prefixes .prefix (concat (get $prefixes .prefix | default list) .namespaces | uniq) }}
{{- end }}
{{- $settings := dict "prefixes" (toJson $prefixes) "requireNamespacePrefix" (toJson $admission.requireNamespacePrefix) }}
{{- range (index . 1).spec.variables }}
{{- if hasKey $settings .name }}
{{- $_ := set . "expression" (get $settings .name) }}
{{- end }}
{{- end }}
{{- end }}
