{{/* The release's base name: the release name, or <release>-<chart> when the release name lacks the chart's. */}}
{{- define "rewardflow.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Selector labels of everything in the release. */}}
{{- define "rewardflow.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of every object. */}}
{{- define "rewardflow.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "rewardflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: rewardflow
{{- end -}}

{{/* A reward's object name: <fullname>-<reward>. Its Service answers at http://<this>:8000 in the namespace. */}}
{{- define "rewardflow.rewardName" -}}
{{- printf "%s-%s" (include "rewardflow.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The trainer's object name. */}}
{{- define "rewardflow.trainerName" -}}
{{- printf "%s-trainer" (include "rewardflow.fullname" .) -}}
{{- end -}}

{{/* An image reference: registry prefix + repository (default rewardflow-<name>) + tag (default appVersion). */}}
{{- define "rewardflow.image" -}}
{{- $repository := .image.repository | default (printf "rewardflow-%s" .name) -}}
{{- printf "%s%s:%s" .root.Values.imageRegistry $repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end -}}

{{/* The Secret holding the API key under `api-key`, or nothing when no key is configured. */}}
{{- define "rewardflow.apiKeySecret" -}}
{{- if .Values.apiKey.existingSecret -}}
{{- .Values.apiKey.existingSecret -}}
{{- else if .Values.apiKey.value -}}
{{- printf "%s-api-key" (include "rewardflow.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The model cache's claim name, or nothing when the cache is off. */}}
{{- define "rewardflow.modelCacheClaim" -}}
{{- if .Values.modelCache.enabled -}}
{{- .Values.modelCache.existingClaim | default (printf "%s-model-cache" (include "rewardflow.fullname" .)) -}}
{{- end -}}
{{- end -}}

{{/* REWARDFLOW_API_KEY from the Secret, as an env list entry (nothing without a key). */}}
{{- define "rewardflow.apiKeyEnv" -}}
{{- with include "rewardflow.apiKeySecret" . -}}
- name: REWARDFLOW_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: api-key
{{- end }}
{{- end -}}

{{/* The hardened container security context (non-root from the pod, no privilege escalation, no capabilities). */}}
{{- define "rewardflow.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: {{ not .writable }}
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}
