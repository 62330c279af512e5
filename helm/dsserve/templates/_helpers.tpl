{{/*
Names and labels, after the Helm best-practices guide.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "dsserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* "<release>-<name>" (or the release name when it already contains the name), at most 63 characters. */}}
{{- define "dsserve.fullname" -}}
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
The RayService name. KubeRay refuses names over 47 characters (it appends "-xxxxx" for the RayCluster,
whose longest Service suffix, "-serve-svc", must still fit 63).
*/}}
{{- define "dsserve.rayServiceName" -}}
{{- include "dsserve.fullname" . | trunc 47 | trimSuffix "-" }}
{{- end }}

{{/* The Service KubeRay creates in front of every Serve proxy: the gateway of the release. */}}
{{- define "dsserve.serveServiceName" -}}
{{- printf "%s-serve-svc" (include "dsserve.rayServiceName" .) }}
{{- end }}

{{- define "dsserve.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object: app.kubernetes.io/* plus helm.sh/chart. */}}
{{- define "dsserve.labels" -}}
helm.sh/chart: {{ include "dsserve.chart" . }}
{{ include "dsserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsserve
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the Ray pod templates (inside rayClusterConfig): the selector labels, the component and the constant
app.kubernetes.io/* ones, but neither helm.sh/chart, app.kubernetes.io/version nor commonLabels. KubeRay hashes
rayClusterConfig and replaces the whole cluster (a second set of GPU nodes, model reloads) when the hash changes,
so a chart version bump or a new commonLabel must not reach it; those labels stay on the RayService itself.
Call with (dict "ctx" $ "component" "head").
*/}}
{{- define "dsserve.stablePodLabels" -}}
{{ include "dsserve.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: dsserve
{{- end }}

{{/* Labels that select the release's pods; never change them on upgrade. */}}
{{- define "dsserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dsserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels plus app.kubernetes.io/component. Call with (dict "ctx" $ "component" "head"). */}}
{{- define "dsserve.componentLabels" -}}
{{ include "dsserve.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector labels plus the component. Call with (dict "ctx" $ "component" "head"). */}}
{{- define "dsserve.componentSelectorLabels" -}}
{{ include "dsserve.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "dsserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dsserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
An image reference. Call with (dict "image" .Values.image "ctx" $). The tag defaults to the chart's appVersion; a
digest, when set, is used instead of the tag (dsserve.validateValues refuses `latest`).
*/}}
{{- define "dsserve.image" -}}
{{- $tag := toString (default .ctx.Chart.AppVersion .image.tag) }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/*
A Kubernetes quantity ("64Gi", "500M", "1024") in bytes, as a float (for sums and fractions). Only the suffixes
values.schema.json allows for sizes reach it.
*/}}
{{- define "dsserve.quantityBytes" -}}
{{- $q := toString . }}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q }}
{{- $suffix := trimPrefix $num $q }}
{{- $units := dict "" 1.0 "k" 1e3 "M" 1e6 "G" 1e9 "T" 1e12 "P" 1e15 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "Pi" 1125899906842624.0 }}
{{- mulf (float64 $num) (get $units $suffix | default 1.0) }}
{{- end }}

{{/*
`object-store-memory` of a Ray pod: 90 % of its /dev/shm (call with the shmSizeLimit), in bytes. Ray's default
(30 % of the container's memory, capped at max(10 GB, /dev/shm)) exceeds the head's 4Gi /dev/shm (30 % of 16Gi is
5.2 GB), and then Ray puts the object store in /tmp, on disk; stating it keeps the store in /dev/shm and leaves
the rest of /dev/shm to NCCL.
*/}}
{{- define "dsserve.objectStoreBytes" -}}
{{- printf "%.0f" (floor (mulf (include "dsserve.quantityBytes" . | float64) 0.9)) }}
{{- end }}

{{/*
The ephemeral-storage request of a Ray container: the sum of the disk-backed scratch volumes' size limits
(scratch.*; /dev/shm is memory), in Mi, so the scheduler only places the pod where they fit. Empty when no
limit is set.
*/}}
{{- define "dsserve.scratchRequest" -}}
{{- $sum := 0.0 }}
{{- range $limit := list .Values.scratch.tmpSizeLimit .Values.scratch.rayTmpSizeLimit .Values.scratch.homeSizeLimit }}
{{- if $limit }}
{{- $sum = addf $sum (include "dsserve.quantityBytes" $limit | float64) }}
{{- end }}
{{- end }}
{{- if gt $sum 0.0 }}
{{- printf "%.0fMi" (ceil (divf $sum 1048576.0)) }}
{{- end }}
{{- end }}

{{/*
A Ray container's resources with the scratch volumes' ephemeral-storage request added unless the user set one.
Call with (dict "resources" .Values.head.resources "ctx" $); returns JSON.
*/}}
{{- define "dsserve.withScratchRequest" -}}
{{- $res := deepCopy (.resources | default dict) }}
{{- $scratch := include "dsserve.scratchRequest" .ctx }}
{{- if $scratch }}
{{- $requests := $res.requests | default dict }}
{{- if not (hasKey $requests "ephemeral-storage") }}
{{- $_ := set $requests "ephemeral-storage" $scratch }}
{{- end }}
{{- $_ := set $res "requests" $requests }}
{{- end }}
{{- toJson $res }}
{{- end }}

{{/*
Seconds the longest request may take: the largest graceful_shutdown_timeout_s of the Serve config (dsserve sets
it to 1.25 x the longest generation the profile allows at its modelled pace, dsserve/planner/drain.py), 600 when
the config has none. Ingress and HTTPRoute timeouts and the old cluster's deletion delay are measured against it.
*/}}
{{- define "dsserve.longestRequestSeconds" -}}
{{- $max := 0.0 }}
{{- range $m := regexFindAll "graceful_shutdown_timeout_s: *[0-9]+(\\.[0-9]+)?" (include "dsserve.serveConfigV2" .) -1 }}
{{- $v := regexFind "[0-9]+(\\.[0-9]+)?$" $m | float64 }}
{{- if gt $v $max }}{{ $max = $v }}{{ end }}
{{- end }}
{{- if eq $max 0.0 }}{{ $max = 600.0 }}{{ end }}
{{- printf "%.0f" (ceil $max) }}
{{- end }}

{{/* The Serve config text: serveConfigV2, or the chart's default generated from a profile. */}}
{{- define "dsserve.serveConfigV2" -}}
{{- .Values.serveConfigV2 | default (.Files.Get "files/serve-config.yaml") }}
{{- end }}

{{/*
The Serve config as data, or {"Error": ...} when it is not YAML (dsserve.validateValues reports it).
*/}}
{{- define "dsserve.serveConfig" -}}
{{- $doc := fromYaml (include "dsserve.serveConfigV2" .) }}
{{- toJson ($doc | default dict) }}
{{- end }}

{{/* The first application of the Serve config as JSON ({} when there is none; dsserve.validateValues says why). */}}
{{- define "dsserve.serveApp" -}}
{{- $doc := include "dsserve.serveConfig" . | fromJson }}
{{- $apps := list }}
{{- if not (hasKey $doc "Error") }}
{{- $apps = $doc.applications | default list }}
{{- end }}
{{- toJson (ternary (first $apps) dict (gt (len $apps) 0)) }}
{{- end }}

{{/*
The request pipeline's settings in the first application: the ingress's kwargs in ingress mode, the engine's
LLM config in direct mode. apiKeys.envName and apiKeys.filePath must agree with them.
*/}}
{{- define "dsserve.servePipeline" -}}
{{- $app := include "dsserve.serveApp" . | fromJson }}
{{- $pipeline := dig "args" "ingress_cls_config" "ingress_extra_kwargs" dict $app }}
{{- if not $pipeline }}
{{- $pipeline = dig "args" "llm_config" "experimental_configs" "dsserve_api" dict $app }}
{{- end }}
{{- toJson $pipeline }}
{{- end }}

{{/* The OpenAI model id the first application serves. */}}
{{- define "dsserve.modelId" -}}
{{- $app := include "dsserve.serveApp" . | fromJson }}
{{- $llms := dig "args" "llm_configs" list $app }}
{{- if $llms }}
{{- dig "model_loading_config" "model_id" "" (index $llms 0) }}
{{- else }}
{{- dig "args" "llm_config" "model_loading_config" "model_id" "" $app }}
{{- end }}
{{- end }}

{{/*
Environment of a Ray container (head, workers): HAProxy switches, the profile's Serve settings, secrets, then
the group's additions (dsserve.envOverrides: <group>.extraEnv, extraEnv, worker.rdma.env, the compile cache),
which replace a serveEnv name they share. Call with (dict "ctx" $ "group" "head").
*/}}
{{- define "dsserve.rayEnv" -}}
{{- $ctx := .ctx }}
{{- $over := include "dsserve.envOverrides" . | fromJson }}
{{- if $ctx.Values.haproxy.enabled }}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
- name: RAY_SERVE_HAPROXY_METRICS_PORT
  value: {{ int $ctx.Values.haproxy.metricsPort | toString | quote }}
- name: RAY_SERVE_HAPROXY_MAXCONN
  value: {{ int $ctx.Values.haproxy.maxconn | toString | quote }}
{{- end }}
{{- range $name, $value := $ctx.Values.serveEnv }}
{{- if not (hasKey $over $name) }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- if $ctx.Values.apiKeys.envName }}
- name: {{ $ctx.Values.apiKeys.envName }}
  valueFrom:
    secretKeyRef:
      name: {{ $ctx.Values.apiKeys.existingSecret }}
      key: {{ $ctx.Values.apiKeys.secretKey }}
{{- end }}
{{- if $ctx.Values.hfToken.existingSecret }}
{{- /* huggingface_hub reads the token from this file (its HF_TOKEN_PATH): a variable holding the token would
reach every process of the container */}}
- name: HF_TOKEN_PATH
  value: /etc/dsserve/hf-token/token
{{- end }}
{{- range $name, $value := $over }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}

{{/* `ray start` parameters: the chart's, overridden by the user's. Call with (dict "base" (dict ...) "extra" map). */}}
{{- define "dsserve.rayStartParams" -}}
{{- $params := merge (deepCopy (.extra | default dict)) .base }}
{{- range $key := keys $params | sortAlpha }}
{{ $key }}: {{ toString (get $params $key) | quote }}
{{- end }}
{{- end }}

{{/* The API key file (apiKeys.filePath): the key Secret mounted as a directory, so kubelet's updates reach it. */}}
{{- define "dsserve.apiKeysMount" -}}
{{- if .Values.apiKeys.filePath }}
- name: api-keys
  mountPath: {{ dir .Values.apiKeys.filePath }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "dsserve.apiKeysVolume" -}}
{{- if .Values.apiKeys.filePath }}
- name: api-keys
  secret:
    secretName: {{ .Values.apiKeys.existingSecret }}
    defaultMode: 288  # 0440: read-only, for the owner and fsGroup (podSecurityContext)
    items:
      - key: {{ .Values.apiKeys.secretKey }}
        path: {{ base .Values.apiKeys.filePath }}
{{- end }}
{{- end }}

{{/* The Hugging Face token (hfToken.existingSecret) as a file, for huggingface_hub's HF_TOKEN_PATH. */}}
{{- define "dsserve.hfTokenMount" -}}
{{- if .Values.hfToken.existingSecret }}
- name: hf-token
  mountPath: /etc/dsserve/hf-token
  readOnly: true
{{- end }}
{{- end }}

{{- define "dsserve.hfTokenVolume" -}}
{{- if .Values.hfToken.existingSecret }}
- name: hf-token
  secret:
    secretName: {{ .Values.hfToken.existingSecret }}
    defaultMode: 288  # 0440
    items:
      - key: {{ .Values.hfToken.secretKey }}
        path: token
{{- end }}
{{- end }}

{{- define "dsserve.shmVolume" -}}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ . }}
{{- end }}


{{/*
Every check of the values that values.schema.json cannot express (it compares two values, or a value with the
Serve config or the load test's), collected and reported at once, each naming the value to change and how (the
Bitnami validateValues pattern). rayservice.yaml calls it, once per render; the templates then use the values as
given. Conditions on one object (a Secret when keys are on, a PVC for modelStorage.type pvc, a GatewayClass for
incremental upgrades) are if/then rules of the schema (values.schema.overlay.json), checked before any template.
*/}}
{{- define "dsserve.validateValues" -}}
{{- $msgs := list }}
{{- range $key, $image := dict "image" .Values.image "tests.image" .Values.tests.image }}
{{- if eq (toString $image.tag) "latest" }}
{{- $msgs = append $msgs (printf "%s.tag: `latest` is not allowed because it changes under a running cluster; pin a version (empty means the chart's appVersion %s) or set %s.digest" $key $.Chart.AppVersion $key) }}
{{- end }}
{{- end }}
{{- if and .Values.image.requireDigest (not .Values.image.digest) }}
{{- $msgs = append $msgs (printf "image.digest: image.requireDigest is true but no digest is set, so the tag %q could be re-pushed under running pods (IfNotPresent keeps whatever a node pulled first); set image.digest=sha256:<64 hex> (e.g. `crane digest %s:%s`), or image.requireDigest=false outside production" (toString (default .Chart.AppVersion .Values.image.tag)) .Values.image.repository (toString (default .Chart.AppVersion .Values.image.tag))) }}
{{- end }}
{{- $msgs = concat $msgs (include "dsserve.validateValues.serveConfig" . | fromJsonArray) }}
{{- $msgs = concat $msgs (include "dsserve.validateValues.upgrades" . | fromJsonArray) }}
{{- if and .Values.autoscaling.enabled (or (gt (int .Values.worker.minReplicas) (int .Values.worker.maxReplicas)) (lt (int .Values.worker.replicas) (int .Values.worker.minReplicas)) (gt (int .Values.worker.replicas) (int .Values.worker.maxReplicas))) }}
{{- $msgs = append $msgs (printf "worker.replicas: worker.replicas (%d) must lie between worker.minReplicas (%d) and worker.maxReplicas (%d), and min must not exceed max; with autoscaling.enabled set them so that minReplicas <= replicas <= maxReplicas" (int .Values.worker.replicas) (int .Values.worker.minReplicas) (int .Values.worker.maxReplicas)) }}
{{- end }}
{{- if .Values.networkPolicy.enabled }}
{{- range $name := list "gatewayFrom" "metricsFrom" "operatorFrom" }}
{{- range $i, $peer := get $.Values.networkPolicy $name }}
{{- $ns := get $peer "namespaceSelector" | default dict }}
{{- if and (hasKey $peer "namespaceSelector") (not (or $ns.matchLabels $ns.matchExpressions)) }}
{{- $msgs = append $msgs (printf "networkPolicy.%s[%d]: namespaceSelector without matchLabels or matchExpressions selects every namespace, so a pod in any namespace with the podSelector's labels would get in; name the namespace, e.g. namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}" $name $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.loadtest.enabled }}
{{- $msgs = concat $msgs (include "dsserve.validateValues.loadtest" . | fromJsonArray) }}
{{- end }}
{{- $msgs = concat $msgs (include "dsserve.validateValues.cluster" . | fromJsonArray) }}
{{- if $msgs }}
{{- fail (printf "\nVALUES VALIDATION:\n%s" (join "\n" $msgs)) }}
{{- end }}
{{- end }}

{{/*
Upgrades: KubeRay's own checks of the incremental strategy (ValidateClusterUpgradeOptions in
ray-operator/controllers/ray/utils/validation.go: the in-tree autoscaler is required, else the RayService is
rejected after install), and an old cluster kept at least as long as its longest request may run.
*/}}
{{- define "dsserve.validateValues.upgrades" -}}
{{- $msgs := list }}
{{- if and (eq .Values.upgradeStrategy.type "NewClusterWithIncrementalUpgrade") (not .Values.autoscaling.enabled) }}
{{- $msgs = append $msgs "upgradeStrategy.type: NewClusterWithIncrementalUpgrade needs KubeRay's in-tree autoscaler (KubeRay rejects the RayService with \"Ray Autoscaler is required for NewClusterWithIncrementalUpgrade\"): set autoscaling.enabled=true (the new cluster grows by autoscaling while traffic moves) or use upgradeStrategy.type=NewCluster" }}
{{- end }}
{{- $longest := include "dsserve.longestRequestSeconds" . | int }}
{{- $delay := int .Values.upgradeStrategy.rayClusterDeletionDelaySeconds }}
{{- if and (ne .Values.upgradeStrategy.type "None") (lt $delay $longest) }}
{{- $msgs = append $msgs (printf "upgradeStrategy.rayClusterDeletionDelaySeconds is %d but the Serve config lets a request run %d s (graceful_shutdown_timeout_s); KubeRay would delete the old cluster under its last requests after a switch; set it to at least %d (`dsserve render helm-values` writes the drain + 60 s)" $delay $longest $longest) }}
{{- end }}
{{- toJson $msgs }}
{{- end }}

{{/* The Serve config, and the values that must agree with it: serve.port, apiKeys.envName, apiKeys.filePath. */}}
{{- define "dsserve.validateValues.serveConfig" -}}
{{- $msgs := list }}
{{- $doc := include "dsserve.serveConfig" . | fromJson }}
{{- if not (trim (include "dsserve.serveConfigV2" .)) }}
{{- $msgs = append $msgs "serveConfigV2 is empty and files/serve-config.yaml is missing; render values from a profile with `dsserve render helm-values deploy/profiles/<profile>.yaml -o values.yaml` and pass -f values.yaml" }}
{{- else if hasKey $doc "Error" }}
{{- $msgs = append $msgs (printf "serveConfigV2 is not valid YAML: %s" $doc.Error) }}
{{- else if not $doc.applications }}
{{- $msgs = append $msgs "serveConfigV2 has no applications; render it with `dsserve render helm-values PROFILE`" }}
{{- else }}
{{- $port := dig "http_options" "port" 8000 $doc }}
{{- if ne (int $port) (int .Values.serve.port) }}
{{- $msgs = append $msgs (printf "serve.port is %d but serveConfigV2's http_options.port is %d; they must match (set both from the profile's api.port with `dsserve render helm-values`)" (int .Values.serve.port) (int $port)) }}
{{- end }}
{{- $pipeline := include "dsserve.servePipeline" . | fromJson }}
{{- $keysEnv := get $pipeline "api_keys_env" | default "" }}
{{- if ne (toString $keysEnv) (toString .Values.apiKeys.envName) }}
{{- $msgs = append $msgs (printf "apiKeys.envName is %q but the Serve config's request pipeline reads API keys from %q; set apiKeys.envName to match (the profile's api.api_keys_env)" (toString .Values.apiKeys.envName) (toString $keysEnv)) }}
{{- end }}
{{- $keysFile := get $pipeline "api_keys_file" | default "" }}
{{- if ne (toString $keysFile) (toString .Values.apiKeys.filePath) }}
{{- $msgs = append $msgs (printf "apiKeys.filePath is %q but the Serve config's request pipeline reads API keys from the file %q; set apiKeys.filePath to match (the profile's api.api_keys_file)" (toString .Values.apiKeys.filePath) (toString $keysFile)) }}
{{- end }}
{{- end }}
{{- toJson $msgs }}
{{- end }}

{{/*
The load test (the loadtest subchart) must aim at this release: its target.* and apiKey.* are compared with the
values they copy (`dsserve render helm-values` writes both sides from the profile).
*/}}
{{- define "dsserve.validateValues.loadtest" -}}
{{- $msgs := list }}
{{- $lt := .Values.loadtest }}
{{- $name := include "dsserve.name" . }}
{{- if ne (dig "target" "name" "dsserve" $lt) $name }}
{{- $msgs = append $msgs (printf "loadtest.target.name is %q but this release's chart name is %q; set loadtest.target.name=%s (with nameOverride, the load-test pods must carry the release's app.kubernetes.io/name)" (dig "target" "name" "dsserve" $lt) $name $name) }}
{{- end }}
{{- $ctx := dict "Values" (dict "target" (dict "name" $name "fullname" (dig "target" "fullname" "" $lt))) "Release" .Release }}
{{- $theirs := include "loadtest.targetFullname" $ctx }}
{{- $ours := include "dsserve.fullname" . }}
{{- if ne $theirs $ours }}
{{- $msgs = append $msgs (printf "loadtest.target.fullname: the load test would target the release %q but this release is %q; set loadtest.target.fullname=%s (with fullnameOverride)" $theirs $ours $ours) }}
{{- end }}
{{- $port := dig "target" "port" 8000 $lt }}
{{- if ne (int $port) (int .Values.serve.port) }}
{{- $msgs = append $msgs (printf "loadtest.target.port is %d but serve.port is %d; set loadtest.target.port=%d" (int $port) (int .Values.serve.port) (int .Values.serve.port)) }}
{{- end }}
{{- $model := include "dsserve.modelId" . }}
{{- if ne (toString (dig "target" "model" "" $lt)) $model }}
{{- $msgs = append $msgs (printf "loadtest.target.model is %q but the Serve config serves %q; set loadtest.target.model=%s (`dsserve render helm-values` writes both)" (toString (dig "target" "model" "" $lt)) $model $model) }}
{{- end }}
{{- if and (or .Values.apiKeys.envName .Values.apiKeys.filePath) (not (dig "apiKey" "existingSecret" "" $lt)) }}
{{- $msgs = append $msgs (printf "loadtest.apiKey.existingSecret is empty but the server requires API keys; name the Secret holding the key to send, e.g. loadtest.apiKey.existingSecret=%s (the serving keys)" (.Values.apiKeys.existingSecret | default "dsserve-api-keys")) }}
{{- end }}
{{- $envName := toString (dig "apiKey" "envName" "" $lt) }}
{{- if and (eq (toString (dig "mode" "job" $lt)) "locust") .Values.apiKeys.envName (ne $envName (toString .Values.apiKeys.envName)) }}
{{- $msgs = append $msgs (printf "loadtest.apiKey.envName is %q but the server reads its keys from %q; set loadtest.apiKey.envName=%s, the variable the Locust files read" $envName (toString .Values.apiKeys.envName) (toString .Values.apiKeys.envName)) }}
{{- end }}
{{- toJson $msgs }}
{{- end }}

{{/*
What the cluster must offer the worker pods: model storage every worker pod can mount at once, and one scheduler
per pod. The chart cannot read a PVC, so modelStorage.accessMode declares the claim's mode.
*/}}
{{- define "dsserve.validateValues.cluster" -}}
{{- $msgs := list }}
{{- $storage := .Values.modelStorage }}
{{- if and (eq $storage.type "pvc") (has $storage.accessMode (list "ReadWriteOnce" "ReadWriteOncePod")) }}
{{- $pods := int (ternary .Values.worker.maxReplicas .Values.worker.replicas .Values.autoscaling.enabled) }}
{{- $why := printf "%d worker pod(s)" $pods }}
{{- $atOnce := $pods }}
{{- if ne .Values.upgradeStrategy.type "None" }}
{{- $atOnce = mul $pods 2 }}
{{- $why = printf "%d worker pod(s), twice that while a %s upgrade runs the new cluster beside the old" $pods .Values.upgradeStrategy.type }}
{{- end }}
{{- if gt $atOnce 1 }}
{{- $scope := ternary "one pod at a time" "one node at a time" (eq $storage.accessMode "ReadWriteOncePod") }}
{{- $msgs = append $msgs (printf "modelStorage.accessMode: the claim %q is declared %s (%s) but up to %d worker pods mount it at once (%s), so all but the first would not start (a Multi-Attach error, or Pending); provision a ReadOnlyMany or ReadWriteMany claim and declare it (modelStorage.accessMode=ReadOnlyMany), or pre-stage the weights on every node (modelStorage.type=hostPath)" $storage.existingClaim $storage.accessMode $scope $atOnce $why) }}
{{- end }}
{{- end }}
{{- if .Values.gangScheduling.enabled }}
{{- range $group := list "head" "worker" }}
{{- with (get (get $.Values $group) "schedulerName") }}
{{- $msgs = append $msgs (printf "%s.schedulerName: is %q but gangScheduling.enabled lets KubeRay set every Ray pod's scheduler to %s; leave %s.schedulerName empty, or turn gangScheduling off" $group . $.Values.gangScheduling.scheduler $group) }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $msgs }}
{{- end }}
