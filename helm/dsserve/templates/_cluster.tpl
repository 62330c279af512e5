{{/*
What the Ray pods need from the cluster beyond the chart's defaults: per-group placement knobs (runtime class,
scheduler, spread, extra volumes, environment and labels), the InfiniBand path between worker pods
(worker.rdma), the persistent compile cache (compileCache) and gang scheduling labels (gangScheduling).
The per-group helpers take (dict "ctx" $ "group" "head"|"worker") and read .Values.<group>.
docs/kubernetes.md and docs/ray-cluster.md describe the values; tests/unit/test_helm_cluster.py renders them.
*/}}

{{/* Pod labels: the chart's component labels over the group's podLabels. Call with (dict "ctx" $ "group" "head"). */}}
{{- define "dsserve.podLabels" -}}
{{- $group := get .ctx.Values .group }}
{{- $ours := include "dsserve.stablePodLabels" (dict "ctx" .ctx "component" .group) | fromYaml }}
{{- toYaml (merge $ours ($group.podLabels | default dict)) }}
{{- end }}

{{/* Pod annotations: the group's podAnnotations, over the Multus network of worker.rdma.networks on workers. */}}
{{- define "dsserve.podAnnotations" -}}
{{- $group := get .ctx.Values .group }}
{{- $out := deepCopy ($group.podAnnotations | default dict) }}
{{- $rdma := .ctx.Values.worker.rdma }}
{{- if and (eq .group "worker") $rdma.enabled $rdma.networks }}
{{- $out = merge $out (dict "k8s.v1.cni.cncf.io/networks" $rdma.networks) }}
{{- end }}
{{- if $out }}
{{- toYaml $out }}
{{- end }}
{{- end }}

{{/*
Where a Ray pod may run: runtime class, scheduler, node selector, tolerations, affinity and spread. On workers
with worker.rdma.ibDomainLabel, a required podAffinity keeps them in one InfiniBand domain (the first worker pod
places itself; the others follow it). Call with (dict "ctx" $ "group" "worker").
*/}}
{{- define "dsserve.podPlacement" -}}
{{- $group := get .ctx.Values .group }}
{{- $affinity := deepCopy ($group.affinity | default dict) }}
{{- $rdma := .ctx.Values.worker.rdma }}
{{- if and (eq .group "worker") $rdma.enabled $rdma.ibDomainLabel }}
{{- $term := dict "topologyKey" $rdma.ibDomainLabel "labelSelector" (dict "matchLabels" (include "dsserve.componentSelectorLabels" (dict "ctx" .ctx "component" "worker") | fromYaml)) }}
{{- $podAffinity := $affinity.podAffinity | default dict }}
{{- $required := $podAffinity.requiredDuringSchedulingIgnoredDuringExecution | default list }}
{{- $_ := set $podAffinity "requiredDuringSchedulingIgnoredDuringExecution" (append $required $term) }}
{{- $_ := set $affinity "podAffinity" $podAffinity }}
{{- end }}
{{- with $group.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with $group.schedulerName }}
schedulerName: {{ . }}
{{- end }}
{{- with $group.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $group.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $group.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The container security context of the workers: containerSecurityContext, plus IPC_LOCK with worker.rdma
(RDMA registers, that is pins, NCCL's buffers; without the capability the memlock limit refuses it). The head,
the autoscaler sidecar and every other container keep dropping ALL without adding any.
*/}}
{{- define "dsserve.workerSecurityContext" -}}
{{- $sc := deepCopy .Values.containerSecurityContext }}
{{- if .Values.worker.rdma.enabled }}
{{- $caps := $sc.capabilities | default dict }}
{{- $_ := set $caps "add" (append (without ($caps.add | default list) "IPC_LOCK") "IPC_LOCK") }}
{{- $_ := set $sc "capabilities" $caps }}
{{- end }}
{{- toYaml $sc }}
{{- end }}

{{/* The RDMA device resource of a worker container (worker.rdma.resourceName) as a map, or {} without one. */}}
{{- define "dsserve.rdmaResources" -}}
{{- $rdma := .Values.worker.rdma }}
{{- if and $rdma.enabled $rdma.resourceName }}
{{- toJson (dict $rdma.resourceName (int $rdma.resourceCount)) }}
{{- else }}
{{- toJson dict }}
{{- end }}
{{- end }}

{{/*
Environment a group adds to the profile's (serveEnv), as a map of name to value, most specific first:
<group>.extraEnv, then extraEnv, then on workers worker.rdma.env and the compile-cache variables. dsserve.rayEnv
leaves out every serveEnv name found here. Call with (dict "ctx" $ "group" "worker").
*/}}
{{- define "dsserve.envOverrides" -}}
{{- $group := get .ctx.Values .group }}
{{- $out := merge (dict) (deepCopy ($group.extraEnv | default dict)) (deepCopy (.ctx.Values.extraEnv | default dict)) }}
{{- if eq .group "worker" }}
{{- if .ctx.Values.worker.rdma.enabled }}
{{- $out = merge $out (deepCopy (.ctx.Values.worker.rdma.env | default dict)) }}
{{- end }}
{{- if .ctx.Values.compileCache.enabled }}
{{- $out = merge $out (include "dsserve.compileCacheEnv" .ctx | fromJson) }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
Where the engines' compile and JIT caches go when compileCache.enabled. Without it they stay where the images
put them: vLLM's (torch.compile, DeepGEMM) under ~/.cache/vllm, FlashInfer's under ~/.cache/flashinfer, Triton's
under ~/.triton, CUDA's under ~/.nv ($HOME is the `home` emptyDir) and TorchInductor's in /tmp (the `tmp` emptyDir).
*/}}
{{- define "dsserve.compileCacheEnv" -}}
{{- $root := .Values.compileCache.mountPath | trimSuffix "/" }}
{{- toJson (dict
  "VLLM_CACHE_ROOT" (printf "%s/vllm" $root)
  "DG_JIT_CACHE_DIR" (printf "%s/deep_gemm" $root)
  "TORCHINDUCTOR_CACHE_DIR" (printf "%s/torchinductor" $root)
  "TRITON_CACHE_DIR" (printf "%s/triton" $root)
  "FLASHINFER_WORKSPACE_BASE" $root
  "CUDA_CACHE_PATH" (printf "%s/nv" $root)
  "TORCH_EXTENSIONS_DIR" (printf "%s/torch_extensions" $root)
) }}
{{- end }}

{{- define "dsserve.compileCacheMount" -}}
{{- if .Values.compileCache.enabled }}
- name: compile-cache
  mountPath: {{ .Values.compileCache.mountPath }}
{{- end }}
{{- end }}

{{- define "dsserve.compileCacheVolume" -}}
{{- if .Values.compileCache.enabled }}
- name: compile-cache
  {{- if eq .Values.compileCache.type "pvc" }}
  persistentVolumeClaim:
    claimName: {{ .Values.compileCache.existingClaim }}
  {{- else }}
  hostPath:
    path: {{ .Values.compileCache.hostPath }}
    type: Directory
  {{- end }}
{{- end }}
{{- end }}

{{/*
Labels of the RayService that KubeRay's batch-scheduler plugins read from the RayCluster (the RayService's labels
are copied to it): ray-operator/controllers/ray/batchscheduler/{volcano,yunikorn}.
*/}}
{{- define "dsserve.gangLabels" -}}
{{- $gang := .Values.gangScheduling }}
{{- if $gang.enabled }}
ray.io/gang-scheduling-enabled: "true"
{{- if eq $gang.scheduler "yunikorn" }}
yunikorn.apache.org/app-id: {{ include "dsserve.rayServiceName" . }}
{{- with $gang.queue }}
yunikorn.apache.org/queue: {{ . | quote }}
{{- end }}
{{- else }}
{{- with $gang.queue }}
volcano.sh/queue-name: {{ . | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
