{{/* What the TrainJob and the JobSet share: the one entrypoint, its environment, volumes and resources. */}}

{{/* The entrypoint on every node: torchrun takes its options from the launcher's PET_* variables. */}}
{{- define "rewardflow.trainerCommand" -}}
- torchrun
- -m
- rewardflow_trainer.cli
{{- end -}}

{{- define "rewardflow.trainerArgs" -}}
- --preset
- {{ .Values.trainer.preset | quote }}
- --out
- {{ printf "/runs/%s" (include "rewardflow.trainerName" .) | quote }}
{{- range .Values.trainer.args }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Processes per node: one per GPU, or one CPU process. */}}
{{- define "rewardflow.procsPerNode" -}}
{{- max 1 (int .Values.trainer.gpusPerNode) -}}
{{- end -}}

{{/* The reward URLs (every reward of the release), the API key, the offline model cache, the user's env. */}}
{{- define "rewardflow.trainerEnv" -}}
{{- $root := . -}}
{{- range .Values.rewards }}
- name: {{ printf "REWARDFLOW_ENDPOINT_%s" (upper .name) }}
  value: {{ printf "http://%s:8000" (include "rewardflow.rewardName" (dict "root" $root "name" .name)) | quote }}
{{- end }}
{{- with include "rewardflow.apiKeyEnv" . }}{{ . | nindent 0 }}{{ end }}
- name: HF_HOME
  value: /models
- name: HF_HUB_OFFLINE
  value: "1"
- name: PYTHONUNBUFFERED
  value: "1"
{{- range $key, $value := .Values.trainer.env }}
- name: {{ $key }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}

{{- define "rewardflow.trainerResources" -}}
{{- $resources := deepCopy .Values.trainer.resources -}}
{{- $gpus := int .Values.trainer.gpusPerNode -}}
{{- if gt $gpus 0 -}}
{{- $_ := set $resources "limits" (merge (dict "nvidia.com/gpu" $gpus) ($resources.limits | default dict)) -}}
{{- end -}}
{{- toYaml $resources -}}
{{- end -}}

{{- define "rewardflow.trainerPodLabels" -}}
{{ include "rewardflow.selectorLabels" . }}
app.kubernetes.io/component: trainer
{{- end -}}

{{- define "rewardflow.trainerJobLabels" -}}
{{ include "rewardflow.labels" . }}
app.kubernetes.io/component: trainer
{{- with .Values.trainer.kueueQueueName }}
kueue.x-k8s.io/queue-name: {{ . }}
{{- end }}
{{- with .Values.trainer.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "rewardflow.trainerVolumes" -}}
- name: runs
  persistentVolumeClaim:
    claimName: {{ .Values.trainer.runs.existingClaim | default (printf "%s-runs" (include "rewardflow.trainerName" .)) }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.trainer.shmSize }}
{{- with include "rewardflow.modelCacheClaim" . }}
- name: model-cache
  persistentVolumeClaim:
    claimName: {{ . }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "rewardflow.trainerVolumeMounts" -}}
- name: runs
  mountPath: /runs
- name: dshm
  mountPath: /dev/shm
{{- if include "rewardflow.modelCacheClaim" . }}
- name: model-cache
  mountPath: /models
  readOnly: true
{{- end }}
{{- end -}}
