{{/*
Writable scratch space. Every container of the chart runs with readOnlyRootFilesystem (containerSecurityContext);
what must be written goes to emptyDir volumes. docs/kubernetes.md ("Writable paths") lists them, and
tests/unit/test_helm_chart.py checks that every path listed there is mounted writable in the pods it names.
*/}}

{{/* HOME of the images (docker/Dockerfile*: ENV HOME=/home/dsserve); an emptyDir is mounted there. */}}
{{- define "dsserve.home" -}}
/home/dsserve
{{- end }}

{{/* An emptyDir with an optional size limit. Call with (dict "name" "tmp" "sizeLimit" "8Gi"). */}}
{{- define "dsserve.emptyDirVolume" -}}
- name: {{ .name }}
  {{- if .sizeLimit }}
  emptyDir:
    sizeLimit: {{ .sizeLimit }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- end }}

{{/*
Mounts of a Ray container (head, workers, the autoscaler sidecar): /tmp, Ray's temp dir /tmp/ray and $HOME.
The /tmp/ray volume is named ray-logs, the name KubeRay gives the log volume it shares between the head and the
autoscaler sidecar, so that both see the same directory. /dev/shm is mounted by the Ray templates themselves.
*/}}
{{- define "dsserve.rayScratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: ray-logs
  mountPath: /tmp/ray
- name: home
  mountPath: {{ include "dsserve.home" . }}
{{- end }}

{{- define "dsserve.rayScratchVolumes" -}}
{{ include "dsserve.emptyDirVolume" (dict "name" "tmp" "sizeLimit" .Values.scratch.tmpSizeLimit) }}
{{ include "dsserve.emptyDirVolume" (dict "name" "ray-logs" "sizeLimit" .Values.scratch.rayTmpSizeLimit) }}
{{ include "dsserve.emptyDirVolume" (dict "name" "home" "sizeLimit" .Values.scratch.homeSizeLimit) }}
{{- end }}

{{/*
Environment that keeps writers on the scratch volumes: HOME (as in the images, stated so that another image
still writes its caches to the mounted one) and numba's cache, which would otherwise go next to the installed
packages on the read-only root.
*/}}
{{- define "dsserve.scratchEnv" -}}
- name: HOME
  value: {{ include "dsserve.home" . | quote }}
- name: NUMBA_CACHE_DIR
  value: /tmp/numba
{{- end }}
