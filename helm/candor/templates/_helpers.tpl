{{/* Names and labels shared by every template. */}}
{{- define "candor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "candor.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "candor.labels" -}}
{{ include "candor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "candor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "candor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name: required with serviceAccount.create=false (the chart would otherwise grant Candor's rights to the namespace's default account)" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "candor.image" -}}
{{- $tag := default .appVersion .image.tag | toString -}}
{{- if hasPrefix "sha256:" $tag -}}
{{- printf "%s@%s" .image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "candor.webhookService" -}}
{{- printf "%s-webhook" (include "candor.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "candor.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "candor.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The Prometheus operator's CRDs decide whether the monitoring extras render. */}}
{{- define "candor.hasPrometheusOperator" -}}
{{- if .Capabilities.APIVersions.Has "monitoring.coreos.com/v1" -}}true{{- end -}}
{{- end -}}

{{/* checkov findings that do not apply to Candor's pods (Deployment and Job), one reason each. */}}
{{- define "candor.checkovSkips" -}}
checkov.io/skip1: "CKV_K8S_11=no CPU limit on purpose, CFS throttling would delay webhook answers; a request is set"
checkov.io/skip2: "CKV_K8S_43=the image is image.repository:image.tag; a tag sha256:... pins a digest"
checkov.io/skip3: "CKV_K8S_38=the operator and its finalize job call the API server with this token"
checkov.io/skip4: "CKV_K8S_15=versioned image tags are immutable; image.pullPolicy sets Always where wanted"
{{- end -}}
