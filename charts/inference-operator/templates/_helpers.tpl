{{/* Names and labels shared by every template. */}}

{{- define "inference-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release name alone when it already contains the chart name (the usual install). */}}
{{- define "inference-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "inference-operator.gatewayServiceName" -}}
{{- printf "%s-gateway" (include "inference-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "inference-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inference-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "inference-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inference-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "inference-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "inference-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inference-operator
{{- end }}

{{- define "inference-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The URL written into every endpoint's status: the gateway Service, namespace-qualified
     so applications in other namespaces can use it as it is. */}}
{{- define "inference-operator.publicUrl" -}}
{{- printf "http://%s.%s.svc:%d" (include "inference-operator.gatewayServiceName" .) .Release.Namespace (int .Values.service.port) }}
{{- end }}

{{/* Hardening shared by every container the chart runs (pod-security "restricted"). */}}
{{- define "inference-operator.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "inference-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* The `helm test` pod; deliberately outside the Deployment's selector so the Service,
     PodDisruptionBudget and NetworkPolicy never count it as the gateway. */}}
{{- define "inference-operator.testLabels" -}}
app.kubernetes.io/name: {{ include "inference-operator.name" . }}-test
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
