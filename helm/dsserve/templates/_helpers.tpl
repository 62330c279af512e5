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
An image reference. Call with (dict "image" .Values.image "ctx" $ "key" "image"). The tag defaults to the
chart's appVersion; a digest, when set, is used instead of the tag; `latest` is refused.
*/}}
{{- define "dsserve.image" -}}
{{- $tag := toString (default .ctx.Chart.AppVersion .image.tag) }}
{{- if eq $tag "latest" }}
{{- fail (printf "%s.tag: `latest` is not allowed because it changes under a running cluster; pin a version (empty means the chart's appVersion %s) or set %s.digest" .key .ctx.Chart.AppVersion .key) }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* The Serve config text: serveConfigV2, or the chart's default generated from a profile. */}}
{{- define "dsserve.serveConfigV2" -}}
{{- $text := .Values.serveConfigV2 | default (.Files.Get "files/serve-config.yaml") }}
{{- if not (trim $text) }}
{{- fail "serveConfigV2 is empty and files/serve-config.yaml is missing; render values from a profile with `dsserve render helm-values deploy/profiles/<profile>.yaml -o values.yaml` and pass -f values.yaml" }}
{{- end }}
{{- $text }}
{{- end }}

{{/*
The first application of the Serve config as data, checked against the values that must agree with it:
serve.port (the Service and NetworkPolicy port) and apiKeys.envName (the variable the request pipeline
reads: in the ingress's kwargs in ingress mode, in the engine's LLM config in direct mode).
*/}}
{{- define "dsserve.serveApp" -}}
{{- $doc := fromYaml (include "dsserve.serveConfigV2" .) }}
{{- if hasKey $doc "Error" }}
{{- fail (printf "serveConfigV2 is not valid YAML: %s" $doc.Error) }}
{{- end }}
{{- $apps := $doc.applications | default list }}
{{- if not $apps }}
{{- fail "serveConfigV2 has no applications; render it with `dsserve render helm-values PROFILE`" }}
{{- end }}
{{- $port := dig "http_options" "port" 8000 $doc }}
{{- if ne (int $port) (int .Values.serve.port) }}
{{- fail (printf "serve.port is %d but serveConfigV2's http_options.port is %d; they must match (set both from the profile's api.port with `dsserve render helm-values`)" (int .Values.serve.port) (int $port)) }}
{{- end }}
{{- $app := index $apps 0 }}
{{- $pipeline := dig "args" "ingress_cls_config" "ingress_extra_kwargs" dict $app }}
{{- if not $pipeline }}
{{- $pipeline = dig "args" "llm_config" "experimental_configs" "dsserve_api" dict $app }}
{{- end }}
{{- $keysEnv := get $pipeline "api_keys_env" | default "" }}
{{- if ne (toString $keysEnv) (toString .Values.apiKeys.envName) }}
{{- fail (printf "apiKeys.envName is %q but the Serve config's request pipeline reads API keys from %q; set apiKeys.envName to match (the profile's api.api_keys_env)" (toString .Values.apiKeys.envName) (toString $keysEnv)) }}
{{- end }}
{{- $keysFile := get $pipeline "api_keys_file" | default "" }}
{{- if ne (toString $keysFile) (toString .Values.apiKeys.filePath) }}
{{- fail (printf "apiKeys.filePath is %q but the Serve config's request pipeline reads API keys from the file %q; set apiKeys.filePath to match (the profile's api.api_keys_file)" (toString .Values.apiKeys.filePath) (toString $keysFile)) }}
{{- end }}
{{- toJson $app }}
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

{{/* Environment of every Ray container (head, workers): HAProxy switches, the profile's Serve settings, secrets, extraEnv. */}}
{{- define "dsserve.rayEnv" -}}
{{- if .Values.haproxy.enabled }}
- name: RAY_SERVE_ENABLE_HA_PROXY
  value: "1"
- name: RAY_SERVE_THROUGHPUT_OPTIMIZED
  value: "1"
- name: RAY_SERVE_HAPROXY_METRICS_PORT
  value: {{ int .Values.haproxy.metricsPort | toString | quote }}
- name: RAY_SERVE_HAPROXY_MAXCONN
  value: {{ int .Values.haproxy.maxconn | toString | quote }}
{{- end }}
{{- range $name, $value := .Values.serveEnv }}
{{- if not (hasKey $.Values.extraEnv $name) }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}
{{- if .Values.apiKeys.envName }}
- name: {{ .Values.apiKeys.envName }}
  valueFrom:
    secretKeyRef:
      name: {{ required "apiKeys.existingSecret is required when apiKeys.envName is set: create the Secret (kubectl create secret generic dsserve-api-keys --from-literal=api-keys=KEY) and name it here" .Values.apiKeys.existingSecret }}
      key: {{ .Values.apiKeys.secretKey }}
{{- end }}
{{- if .Values.hfToken.existingSecret }}
{{- /* huggingface_hub reads the token from this file (its HF_TOKEN_PATH): a variable holding the token would
reach every process of the container */}}
- name: HF_TOKEN_PATH
  value: /etc/dsserve/hf-token/token
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
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

{{/* The /dev/shm volume. Call with the size limit. */}}
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
    secretName: {{ required "apiKeys.existingSecret is required when apiKeys.filePath is set: create the Secret (kubectl create secret generic dsserve-api-keys --from-file=api-keys=./keys.txt) and name it here" .Values.apiKeys.existingSecret }}
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
NetworkPolicy peers outside the release's namespace must name their namespace: `namespaceSelector: {}`
selects every namespace, so any pod anywhere carrying the podSelector's labels would get in.
*/}}
{{- define "dsserve.checkPeers" -}}
{{- $lists := dict "gatewayFrom" .Values.networkPolicy.gatewayFrom "metricsFrom" .Values.networkPolicy.metricsFrom "operatorFrom" .Values.networkPolicy.operatorFrom }}
{{- range $name, $peers := $lists }}
{{- range $i, $peer := $peers }}
{{- if hasKey $peer "namespaceSelector" }}
{{- $ns := $peer.namespaceSelector | default dict }}
{{- if not (or $ns.matchLabels $ns.matchExpressions) }}
{{- fail (printf "networkPolicy.%s[%d]: namespaceSelector without matchLabels or matchExpressions selects every namespace, so a pod in any namespace with the podSelector's labels would get in; name the namespace, e.g. namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}" $name $i) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
