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

{{/* The Service clients call, and in fleet mode the gateways' Deployment, ServiceAccount,
     Role, PodDisruptionBudget and HorizontalPodAutoscaler. */}}
{{- define "inference-operator.gatewayServiceName" -}}
{{- printf "%s-gateway" (include "inference-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "inference-operator.gatewayMetricsServiceName" -}}
{{- printf "%s-metrics" (include "inference-operator.gatewayServiceName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "inference-operator.fleet" -}}
{{- if eq .Values.gateway.mode "fleet" }}true{{ end }}
{{- end }}

{{/* Peer admission (gateway.peerAdmission): fleet mode only, a sidecar has no peers. */}}
{{- define "inference-operator.peerAdmission" -}}
{{- if and (include "inference-operator.fleet" .) .Values.gateway.peerAdmission.enabled }}true{{ end }}
{{- end }}

{{/* The headless Service whose EndpointSlices name the ready gateways and their peer port. */}}
{{- define "inference-operator.peersServiceName" -}}
{{- printf "%s-peers" (include "inference-operator.gatewayServiceName" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The audience of the token gateways present to each other (gateway/peering/identity.py). */}}
{{- define "inference-operator.peerTokenAudience" -}}
inference-operator.dev/gateway-peers
{{- end }}

{{/* The shard Secrets the operator writes and every gateway reads
     (api/gateway_config.py): <fullname>-gateway-config-0 .. -<configShards - 1>. */}}
{{- define "inference-operator.configSecret" -}}
{{- printf "%s-gateway-config" (include "inference-operator.fullname" .) }}
{{- end }}

{{- define "inference-operator.configSecretNames" -}}
{{- $base := include "inference-operator.configSecret" . }}
{{- range $index := until (int .Values.gateway.configShards) }}
- {{ printf "%s-%d" $base $index }}
{{- end }}
{{- end }}

{{- define "inference-operator.gatewayServiceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "inference-operator.gatewayServiceName" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required in fleet mode when serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
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

{{/* The operator's pod (with the gateway sidecar in sidecar mode) and the fleet's gateway
     pods: disjoint, so no selector of one ever counts the other. The operator's is the one
     earlier releases used (a Deployment's selector cannot change on upgrade); the fleet's
     gateways have a name of their own. */}}
{{- define "inference-operator.operatorSelectorLabels" -}}
{{ include "inference-operator.selectorLabels" . }}
{{- end }}

{{- define "inference-operator.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "inference-operator.name" . }}-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: gateway
{{- end }}

{{- define "inference-operator.gatewayLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "inference-operator.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: inference-operator
{{- end }}

{{/* The pods that serve the public port: the Service, ServiceMonitor and NetworkPolicy
     ingress point at them. */}}
{{- define "inference-operator.servingSelectorLabels" -}}
{{- if include "inference-operator.fleet" . }}
{{- include "inference-operator.gatewaySelectorLabels" . }}
{{- else }}
{{- include "inference-operator.operatorSelectorLabels" . }}
{{- end }}
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

{{/* The ServiceAccount token, CA and namespace the kubelet would mount into every container,
     as a volume mounted only into the containers that call the API server. */}}
{{- define "inference-operator.kubeApiAccessVolume" -}}
- name: kube-api-access
  projected:
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                fieldPath: metadata.namespace
{{- end }}

{{- define "inference-operator.kubeApiAccessMount" -}}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end }}

{{/* Tracing, configured by the OpenTelemetry SDK's own variables (docs/operations.md),
     when tracing.endpoint is set: items of a container's env; called with
     (dict "root" $ "service" name). */}}
{{- define "inference-operator.tracingEnv" -}}
{{- with .root.Values.tracing }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_EXPORTER_OTLP_PROTOCOL
  value: http/protobuf
- name: OTEL_SERVICE_NAME
  value: {{ $.service }}
- name: OTEL_TRACES_SAMPLER
  value: {{ .sampler | quote }}
{{- with .samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
{{- with .resourceAttributes }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ . | quote }}
{{- end }}
{{- if .captureContent }}
- name: OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT
  value: SPAN_ONLY
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* The gateway container, in config mode (it watches the shard Secrets), for both modes;
     called with (dict "root" $ "fleet" bool). */}}
{{- define "inference-operator.gatewayContainer" -}}
{{- $ := .root -}}
- name: gateway
  image: {{ include "inference-operator.image" $ }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    - gateway
    - --host=0.0.0.0
    - --port={{ $.Values.gateway.port }}
    - --metrics-host=0.0.0.0
    - --metrics-port={{ $.Values.gateway.metricsPort }}
    - --config-secret={{ include "inference-operator.configSecret" $ }}
    - --config-shards={{ $.Values.gateway.configShards }}
    - --namespace={{ $.Release.Namespace }}
    {{- if include "inference-operator.peerAdmission" $ }}
    - --peers-service={{ include "inference-operator.peersServiceName" $ }}
    - --peer-port={{ $.Values.gateway.peerAdmission.port }}
    - --peer-token-file=/var/run/secrets/inference-operator.dev/peer/token
    {{- else if .fleet }}
    - --peers-service={{ include "inference-operator.gatewayServiceName" $ }}
    {{- end }}
    - --shutdown-delay={{ $.Values.gateway.shutdownDelaySeconds }}
    - --shutdown-timeout={{ $.Values.gateway.shutdownTimeoutSeconds }}
    - --anthropic-base-url={{ $.Values.anthropicBaseUrl }}
    - --queue-capacity={{ $.Values.gateway.queueCapacity }}
    {{- range $class, $limits := $.Values.gateway.orgLimitCeilings }}
    {{- range $limit, $perMinute := $limits }}
    - --org-limit={{ $class }}:{{ $limit }}={{ int64 $perMinute }}
    {{- end }}
    {{- end }}
    - --stream-write-timeout={{ $.Values.gateway.streamWriteTimeoutSeconds }}
    - --upstream-connections-per-key={{ $.Values.gateway.upstreamConnectionsPerKey }}
    - --upstream-connection-wait={{ $.Values.gateway.upstreamConnectionWaitSeconds }}
    {{- with $.Values.gateway.requestMemoryBytes }}
    - --request-memory={{ int64 . }}
    {{- end }}
    - --request-memory-endpoint-share={{ $.Values.gateway.requestMemoryEndpointShare }}
    - --log-level={{ $.Values.gateway.logLevel }}
    - --{{ if not $.Values.gateway.accessLog }}no-{{ end }}access-log
    {{- /* Who may call (docs/install.md "Who may call"); kubernetes mode needs the
         auth-delegator binding of rbac.yaml for its TokenReviews and SubjectAccessReviews. */}}
    - --auth={{ $.Values.gateway.auth.mode }}
    {{- if eq $.Values.gateway.auth.mode "kubernetes" }}
    - --auth-audience={{ $.Values.gateway.auth.audience }}
    - --auth-cache-seconds={{ $.Values.gateway.auth.cacheSeconds }}
    - --auth-reviews-in-flight={{ $.Values.gateway.auth.reviewsInFlight }}
    - --auth-reviews-per-second={{ $.Values.gateway.auth.reviewsPerSecond }}
    {{- end }}
    {{- if $.Values.gateway.auth.callerMetricsServiceAccount }}
    - --caller-metrics-service-account
    - --caller-metrics-accounts={{ $.Values.gateway.auth.callerMetricsAccounts }}
    - --caller-metrics-accounts-per-namespace={{ $.Values.gateway.auth.callerMetricsAccountsPerNamespace }}
    {{- end }}
    {{- if and $.Values.tracing.endpoint $.Values.tracing.propagateUpstream }}
    - --trace-upstream
    {{- end }}
  {{- $tracing := include "inference-operator.tracingEnv" (dict "root" $ "service" "inference-gateway") | trim }}
  {{- if or $tracing (include "inference-operator.peerAdmission" $) }}
  env:
    {{- if include "inference-operator.peerAdmission" $ }}
    # The address its peers know it by in the EndpointSlices (--peer-address).
    - name: POD_IP
      valueFrom:
        fieldRef:
          fieldPath: status.podIP
    {{- end }}
    {{- with $tracing }}
    {{- . | nindent 4 }}
    {{- end }}
  {{- end }}
  ports:
    - name: http
      containerPort: {{ $.Values.gateway.port }}
    # Not "metrics": in sidecar mode the operator's container in the same pod has that one.
    - name: gateway-metrics
      containerPort: {{ $.Values.gateway.metricsPort }}
    {{- if include "inference-operator.peerAdmission" $ }}
    - name: peer
      containerPort: {{ $.Values.gateway.peerAdmission.port }}
    {{- end }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: http
    periodSeconds: 10
    timeoutSeconds: 5
    failureThreshold: 3
  # Ready once every shard Secret was read: until then the Service sends no traffic to a
  # gateway that would answer 404 for endpoints it has not loaded yet. Not ready again from
  # SIGTERM on, while it keeps serving for shutdownDelaySeconds and drains.
  readinessProbe:
    httpGet:
      path: /readyz
      port: http
    periodSeconds: 5
    timeoutSeconds: 5
    failureThreshold: 2
  securityContext:
    {{- include "inference-operator.containerSecurityContext" $ | nindent 4 }}
  resources:
    {{- toYaml $.Values.gateway.resources | nindent 4 }}
  volumeMounts:
    {{- include "inference-operator.kubeApiAccessMount" $ | nindent 4 }}
    - name: tmp
      mountPath: /tmp
    {{- if include "inference-operator.peerAdmission" $ }}
    - name: peer-token
      mountPath: /var/run/secrets/inference-operator.dev/peer
      readOnly: true
    {{- end }}
{{- end }}

{{/* Values that the schema cannot check across keys; every workload template includes it. */}}
{{- define "inference-operator.validate" -}}
{{- $gateway := .Values.gateway }}
{{- $drain := add $gateway.shutdownDelaySeconds $gateway.shutdownTimeoutSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed gateway.shutdownDelaySeconds + gateway.shutdownTimeoutSeconds (%v), or the kubelet kills the gateway before it drained" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- if and $gateway.autoscaling.enabled (not (include "inference-operator.fleet" .)) }}
{{- fail "gateway.autoscaling needs gateway.mode=fleet: in sidecar mode the gateway runs in the operator's single pod" }}
{{- end }}
{{- if and $gateway.autoscaling.enabled (gt (int $gateway.autoscaling.minReplicas) (int $gateway.autoscaling.maxReplicas)) }}
{{- fail "gateway.autoscaling.minReplicas must not exceed gateway.autoscaling.maxReplicas" }}
{{- end }}
{{- if and $gateway.autoscaling.enabled (not (($gateway.resources).requests).cpu) }}
{{- fail "gateway.autoscaling needs gateway.resources.requests.cpu: utilization is relative to it" }}
{{- end }}
{{- end }}
