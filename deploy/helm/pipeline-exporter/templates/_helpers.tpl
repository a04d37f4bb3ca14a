{{/* Chart name, cut to the 63 characters of a DNS label. */}}
{{- define "pipeline-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified name of the release's objects. */}}
{{- define "pipeline-exporter.fullname" -}}
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

{{- define "pipeline-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pipeline-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "pipeline-exporter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "pipeline-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "pipeline-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "pipeline-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Refuses what cannot work: several SQLite writers. */}}
{{- define "pipeline-exporter.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.storage.postgres.enabled) }}
{{- fail "replicaCount > 1 needs storage.postgres.enabled: SQLite has one writer" }}
{{- end }}
{{- if and .Values.storage.postgres.enabled (not .Values.storage.postgres.existingSecret) }}
{{- fail "storage.postgres.enabled needs storage.postgres.existingSecret (the Secret holding the postgres:// URL)" }}
{{- end }}
{{- if not .Values.existingSecret }}
{{- fail "existingSecret must name the Secret with the config's ${VAR} values" }}
{{- end }}
{{- end }}
