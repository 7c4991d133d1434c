{{/* The chart's name, overridable. */}}
{{- define "sse-proxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of every object: release-chart, shortened to the 63 characters DNS allows. */}}
{{- define "sse-proxy.fullname" -}}
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

{{- define "sse-proxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "sse-proxy.labels" -}}
helm.sh/chart: {{ include "sse-proxy.chart" . }}
{{ include "sse-proxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: sse-proxy
app.kubernetes.io/part-of: redis-platform
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the proxy's pods (never change them on upgrade). */}}
{{- define "sse-proxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sse-proxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sse-proxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sse-proxy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository@digest when pinned, else repository:tag (the appVersion by default). */}}
{{- define "sse-proxy.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Seconds Kubernetes waits after SIGTERM: the drain, the preStop pause, and margin. */}}
{{- define "sse-proxy.terminationGrace" -}}
{{- add .Values.proxy.drainSeconds .Values.preStopSeconds 10 }}
{{- end }}

{{/* Cross-field checks the schema cannot express; each names the value and the fix. */}}
{{- define "sse-proxy.validate" -}}
{{- if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.minReplicas) (int .Values.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%v) is above autoscaling.maxReplicas (%v)" .Values.autoscaling.minReplicas .Values.autoscaling.maxReplicas) }}
{{- end }}
{{- if eq .Values.auth.mode "jwt" }}
{{- $sources := 0 }}
{{- range (list .Values.auth.hs256SecretName .Values.auth.publicKeySecretName .Values.auth.jwksSecretName) }}
{{- if . }}{{ $sources = add1 $sources }}{{ end }}
{{- end }}
{{- if ne (int $sources) 1 }}
{{- fail "auth.mode jwt needs exactly one of auth.hs256SecretName, auth.publicKeySecretName, auth.jwksSecretName (or auth.mode: disabled, explicitly)" }}
{{- end }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.host) }}
{{- fail "ingress.enabled needs ingress.host (the name browsers use)" }}
{{- end }}
{{- if and .Values.ingress.enabled (not .Values.ingress.managedCertificate) (not .Values.ingress.preSharedCertificates) }}
{{- fail "ingress.enabled needs TLS: ingress.managedCertificate: true or ingress.preSharedCertificates" }}
{{- end }}
{{- if and (eq .Values.redis.mode "single") (not .Values.redis.url) }}
{{- fail "redis.mode single needs redis.url (redis://host:port)" }}
{{- end }}
{{- if and (eq .Values.redis.mode "cluster") (not .Values.redis.nodes) }}
{{- fail "redis.mode cluster needs redis.nodes (host:port of cluster nodes)" }}
{{- end }}
{{- if and (eq .Values.redis.mode "cluster") .Values.redis.tls.enabled (not .Values.redis.tls.secretName) }}
{{- fail "redis.tls.enabled needs redis.tls.secretName (ca.crt, tls.crt, tls.key)" }}
{{- end }}
{{- end }}
