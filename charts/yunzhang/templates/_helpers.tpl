{{/*
Chart name, overridable with .Values.nameOverride.
*/}}
{{- define "yunzhang.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the namespaced objects (Deployment, Service, NetworkPolicy, ...).
Cluster-scoped RBAC objects have fixed names and do not use this.
*/}}
{{- define "yunzhang.fullname" -}}
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

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "yunzhang.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels common to every object.
*/}}
{{- define "yunzhang.labels" -}}
helm.sh/chart: {{ include "yunzhang.chart" . }}
app.kubernetes.io/name: {{ include "yunzhang.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: yunzhang
{{- with .Values.commonLabels }}
{{ include "yunzhang.stringMap" . | trim }}
{{- end }}
{{- end }}

{{/*
Selector labels of the operator pods. Never change these: Deployment selectors are immutable.
*/}}
{{- define "yunzhang.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yunzhang.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{/*
Name of the operator's ServiceAccount (default exactly "yunzhang").
*/}}
{{- define "yunzhang.serviceAccountName" -}}
{{- required "serviceAccount.name must not be empty" .Values.serviceAccount.name }}
{{- end }}

{{/*
Operator image: repository@digest, else repository:tag (tag defaults to the appVersion).
*/}}
{{- define "yunzhang.image" -}}
{{- $img := .Values.operator.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/*
A map of labels or annotations, values always quoted (so `y`, `on`, `1` stay strings).
*/}}
{{- define "yunzhang.stringMap" -}}
{{- range $k, $v := . }}
{{ $k | quote }}: {{ $v | toString | quote }}
{{- end }}
{{- end }}
