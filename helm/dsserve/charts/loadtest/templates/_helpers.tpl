{{/*
The in-cluster load test (loadtest.enabled). Two modes:
- job: `dsserve loadtest <loadtest.scenario>` runs once in a Job (job-loadtest.yaml); its exit status is the
  SLO gate's verdict. With loadtest.workers > 0 the Job is a Locust master and a second Job runs the workers.
- locust: a plain Locust master (web UI) and worker Deployments running the files of loadtest.scenarios.
*/}}

{{- define "dsserve.loadtestName" -}}
{{- printf "%s-loadtest" (include "dsserve.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Where the load test sends its requests: the release's serve Service (KubeRay's, in front of every proxy). */}}
{{- define "dsserve.loadtestHost" -}}
{{- printf "http://%s:%d" (include "dsserve.serveServiceName" .) (int .Values.serve.port) }}
{{- end }}

{{/* Port of the Locust master that workers connect to. */}}
{{- define "dsserve.loadtestMasterPort" -}}
5557
{{- end }}

{{/* Variable the job mode's containers read the API key from (by reference to a Secret, never a value). */}}
{{- define "dsserve.loadtestKeyEnv" -}}
DSSERVE_LOADTEST_API_KEY
{{- end }}

{{/*
The Secret and key the load test sends its API key from, as JSON {"name", "key"}, or nothing: loadtest.apiKey,
else the serving keys (apiKeys.existingSecret) when the server requires keys (apiKeys.envName or apiKeys.filePath).
*/}}
{{- define "dsserve.loadtestKeyRef" -}}
{{- $own := .Values.loadtest.apiKey }}
{{- $required := or .Values.apiKeys.envName (dig "filePath" "" .Values.apiKeys) }}
{{- $serving := ternary .Values.apiKeys.existingSecret "" (ne (toString $required) "") }}
{{- $secret := $own.existingSecret | default $serving }}
{{- if $secret }}
{{- toJson (dict "name" $secret "key" ($own.secretKey | default .Values.apiKeys.secretKey)) }}
{{- end }}
{{- end }}

{{/*
Shell lines that replace the key variable's value (the whole Secret: a key list or a key file) by its first key,
as `dsserve loadtest` and its Locust workers send $VAR's text up to the first comma.
*/}}
{{- define "dsserve.loadtestFirstKey" -}}
{{- $var := include "dsserve.loadtestKeyEnv" . -}}
if [ -n "${ {{- $var -}} :-}" ]; then
  {{ $var }}=$(python /opt/dsserve/loadtest/incluster.py first-key {{ $var }}) || exit 2
  export {{ $var }}
fi
{{- end }}

{{/* An env entry reading the key from its Secret. Call with (dict "name" VAR "ref" (fromJson keyRef)). */}}
{{- define "dsserve.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.name }}
      key: {{ .ref.key }}
{{- end }}

{{/*
Eight hex digits naming one load-test run: a hash of everything the run depends on (the loadtest values, the
image, the target, the key's Secret, the security settings) and loadtest.runId. Job pod templates cannot be
changed in place, so a changed test gets new Job names (Helm deletes the old Jobs) and an unchanged one is
left alone on `helm upgrade`.
*/}}
{{- define "dsserve.loadtestRun" -}}
{{- $in := dict "loadtest" .Values.loadtest "host" (include "dsserve.loadtestHost" .) "model" (include "dsserve.modelId" .)
  "key" (include "dsserve.loadtestKeyRef" .) "pod" .Values.podSecurityContext "container" .Values.containerSecurityContext
  "pullSecrets" .Values.image.pullSecrets "chart" .Chart.Version "app" .Chart.AppVersion }}
{{- toJson $in | sha256sum | trunc 8 }}
{{- end }}

{{/* The master Job: <release>-dsserve-loadtest-<scenario>-<run>, at most 63 characters. */}}
{{- define "dsserve.loadtestJobName" -}}
{{- $base := printf "%s-%s" (include "dsserve.loadtestName" .) .Values.loadtest.scenario | trunc 54 | trimSuffix "-" }}
{{- printf "%s-%s" $base (include "dsserve.loadtestRun" .) }}
{{- end }}

{{/* The worker Job: <release>-dsserve-loadtest-<scenario>-<run>-workers, at most 63 characters. */}}
{{- define "dsserve.loadtestWorkerJobName" -}}
{{- $base := printf "%s-%s" (include "dsserve.loadtestName" .) .Values.loadtest.scenario | trunc 46 | trimSuffix "-" }}
{{- printf "%s-%s-workers" $base (include "dsserve.loadtestRun" .) }}
{{- end }}

{{/* Checks of the load-test values that the schema cannot express. */}}
{{- define "dsserve.loadtestChecks" -}}
{{- $lt := .Values.loadtest }}
{{- if eq $lt.mode "locust" }}
{{- if lt (int $lt.workers) 1 }}
{{- fail "loadtest.mode locust needs loadtest.workers >= 1: the Locust master sends no requests itself" }}
{{- end }}
{{- else if and (gt (int $lt.workers) 0) (gt (int $lt.processes) 1) }}
{{- fail (printf "loadtest.processes (%d) and loadtest.workers (%d) exclude each other: processes forks generators inside the Job's pod, workers adds worker pods; set one of them" (int $lt.processes) (int $lt.workers)) }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every load-test pod. */}}
{{- define "dsserve.loadtestPodCommon" -}}
serviceAccountName: {{ include "dsserve.serviceAccountName" . }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Mounts of every load-test container: the root filesystem is read-only. */}}
{{- define "dsserve.loadtestScratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ include "dsserve.home" . }}
{{- end }}

{{- define "dsserve.loadtestScratchVolumes" -}}
{{ include "dsserve.emptyDirVolume" (dict "name" "tmp" "sizeLimit" "1Gi") }}
{{ include "dsserve.emptyDirVolume" (dict "name" "home" "sizeLimit" "1Gi") }}
{{- end }}

{{/*
An init container that waits for the serve Service (wait-http) or for the Locust master (wait-tcp), with
loadtest/incluster.py from the image. Call with (dict "ctx" $ "name" "wait-for-serve" "args" (list ...)).
*/}}
{{- define "dsserve.loadtestWaitContainer" -}}
{{- $ctx := .ctx }}
{{- $lt := $ctx.Values.loadtest }}
{{- $ref := include "dsserve.loadtestKeyRef" $ctx }}
- name: {{ .name }}
  image: {{ include "dsserve.image" (dict "image" $lt.image "ctx" $ctx "key" "loadtest.image") | quote }}
  imagePullPolicy: {{ $lt.image.pullPolicy }}
  command:
    - python
    - /opt/dsserve/loadtest/incluster.py
  args:
    {{- toYaml .args | nindent 4 }}
    {{- if and $ref (eq (index .args 0) "wait-http") }}
    - --api-key-env
    - {{ include "dsserve.loadtestKeyEnv" $ctx }}
    {{- end }}
  env:
    - name: HOME
      value: {{ include "dsserve.home" $ctx | quote }}
    {{- if $ref }}
    {{- include "dsserve.secretEnv" (dict "name" (include "dsserve.loadtestKeyEnv" $ctx) "ref" (fromJson $ref)) | nindent 4 }}
    {{- end }}
  resources:
    requests:
      cpu: 10m
      memory: 64Mi
    limits:
      memory: 128Mi
  securityContext:
    {{- toYaml $ctx.Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    {{- include "dsserve.loadtestScratchMounts" $ctx | nindent 4 }}
{{- end }}

{{/* locust mode: the pod spec of a Locust master or worker. Call with (dict "ctx" $ "role" "master"|"worker"). */}}
{{- define "dsserve.loadtestPodSpec" -}}
{{- $ctx := .ctx }}
{{- $lt := $ctx.Values.loadtest }}
{{- $ref := include "dsserve.loadtestKeyRef" $ctx }}
{{- include "dsserve.loadtestPodCommon" $ctx }}
containers:
  - name: locust-{{ .role }}
    image: {{ include "dsserve.image" (dict "image" $lt.image "ctx" $ctx "key" "loadtest.image") | quote }}
    imagePullPolicy: {{ $lt.image.pullPolicy }}
    command:
      {{- toYaml $lt.command | nindent 6 }}
    {{- with (eq .role "master" | ternary $lt.masterArgs $lt.workerArgs) }}
    args:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    env:
      - name: LOCUST_LOCUSTFILE
        value: {{ printf "/mnt/locust/%s" $lt.locustfile | quote }}
      - name: LOCUST_HOST
        value: {{ include "dsserve.loadtestHost" $ctx | quote }}
      - name: DSSERVE_MODEL
        value: {{ include "dsserve.modelId" $ctx | quote }}
      {{- if eq .role "master" }}
      - name: LOCUST_MODE_MASTER
        value: "true"
      - name: LOCUST_EXPECT_WORKERS
        value: {{ int $lt.workers | toString | quote }}
      {{- else }}
      - name: LOCUST_MODE_WORKER
        value: "true"
      - name: LOCUST_MASTER_NODE_HOST
        value: {{ include "dsserve.loadtestName" $ctx | quote }}
      {{- end }}
      - name: HOME
        value: {{ include "dsserve.home" $ctx | quote }}
      {{- if $ref }}
      {{- /* The serving keys' variable name, as the Locust files of this mode have always read it. */}}
      {{- include "dsserve.secretEnv" (dict "name" ($ctx.Values.apiKeys.envName | default (include "dsserve.loadtestKeyEnv" $ctx)) "ref" (fromJson $ref)) | nindent 6 }}
      {{- end }}
      {{- range $name, $value := $lt.env }}
      - name: {{ $name }}
        value: {{ toString $value | quote }}
      {{- end }}
    {{- if eq .role "master" }}
    ports:
      - name: web
        containerPort: 8089
      - name: master
        containerPort: {{ include "dsserve.loadtestMasterPort" $ctx }}
    {{- end }}
    resources:
      {{- toYaml $lt.resources | nindent 6 }}
    securityContext:
      {{- toYaml $ctx.Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - name: scenarios
        mountPath: /mnt/locust
        readOnly: true
      {{- include "dsserve.loadtestScratchMounts" $ctx | nindent 6 }}
volumes:
  - name: scenarios
    configMap:
      name: {{ include "dsserve.loadtestName" $ctx }}
  {{- include "dsserve.loadtestScratchVolumes" $ctx | nindent 2 }}
{{- end }}
