{{/*
The in-cluster load test of a dsserve release: the `loadtest` subchart of helm/dsserve (its values are the
parent's `loadtest.*`; the parent enables it with loadtest.enabled). Two modes:
- job: `dsserve loadtest <scenario>` runs once in a Job (job.yaml); its exit status is the SLO gate's verdict.
  With workers > 0 the Job is a Locust master and a second Job runs the workers.
- locust: a plain Locust master (web UI) and worker Deployments running the files of `scenarios`.

The release under test is named by `target.*`, which the parent chart checks against its own values
(dsserve.validateValues), so a load test cannot silently aim at another Service, port or model.
*/}}

{{/* The dsserve release's full name: target.fullname, or "<release>-dsserve" as the parent names it by default. */}}
{{- define "loadtest.targetFullname" -}}
{{- if .Values.target.fullname }}
{{- .Values.target.fullname | trunc 63 | trimSuffix "-" }}
{{- else if contains .Values.target.name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Values.target.name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* The serve Service KubeRay puts in front of every Serve proxy: <RayService name (47 characters at most)>-serve-svc. */}}
{{- define "loadtest.targetService" -}}
{{- printf "%s-serve-svc" (include "loadtest.targetFullname" . | trunc 47 | trimSuffix "-") }}
{{- end }}

{{/* Where the load test sends its requests. */}}
{{- define "loadtest.host" -}}
{{- printf "http://%s:%d" (include "loadtest.targetService" .) (int .Values.target.port) }}
{{- end }}

{{- define "loadtest.name" -}}
{{- printf "%s-loadtest" (include "loadtest.targetFullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loadtest.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: the dsserve release's (app.kubernetes.io/name target.name), so that its NetworkPolicy counts the
load-test pods as the release's own, plus the component.
*/}}
{{- define "loadtest.selectorLabels" -}}
app.kubernetes.io/name: {{ .Values.target.name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: loadtest
{{- end }}

{{/*
Labels of the pod templates: those of every object but helm.sh/chart and app.kubernetes.io/version, which change
with a chart release that leaves the test alone. A Job's pod template is immutable: with them, a chart bump would
make `helm upgrade` fail on the unchanged Job (and restart Locust's Deployments for nothing). commonLabels are
values, so changing them is a new run (loadtest.run) with new Jobs.
*/}}
{{- define "loadtest.podLabels" -}}
{{ include "loadtest.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsserve
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "loadtest.labels" -}}
helm.sh/chart: {{ include "loadtest.chart" . }}
{{ include "loadtest.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dsserve
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The image: the tag defaults to the chart's appVersion, a digest wins over the tag (validateValues refuses `latest`). */}}
{{- define "loadtest.image" -}}
{{- $tag := toString (default .Chart.AppVersion .Values.image.tag) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Port of the Locust master that workers connect to. */}}
{{- define "loadtest.masterPort" -}}
5557
{{- end }}

{{/* Variable the job mode's containers read the API key from (by reference to a Secret, never a value). */}}
{{- define "loadtest.keyEnv" -}}
DSSERVE_LOADTEST_API_KEY
{{- end }}

{{/* HOME of the images (docker/Dockerfile.locust: ENV HOME=/home/dsserve); an emptyDir is mounted there. */}}
{{- define "loadtest.home" -}}
/home/dsserve
{{- end }}

{{/*
Shell lines that replace the key variable's value (the whole Secret: a key list or a key file) by its first key,
as `dsserve loadtest` and its Locust workers send $VAR's text up to the first comma.
*/}}
{{- define "loadtest.firstKey" -}}
{{- $var := include "loadtest.keyEnv" . -}}
if [ -n "${ {{- $var -}} :-}" ]; then
  {{ $var }}=$(python /opt/dsserve/loadtest/incluster.py first-key {{ $var }}) || exit 2
  export {{ $var }}
fi
{{- end }}

{{/* An env entry reading the key from apiKey.existingSecret. Call with (dict "name" VAR "ctx" $). */}}
{{- define "loadtest.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .ctx.Values.apiKey.existingSecret }}
      key: {{ .ctx.Values.apiKey.secretKey }}
{{- end }}

{{/* Environment of every load-test container: HOME, the key (by reference), the user's env. Call with (dict "ctx" $ "keyEnv" VAR). */}}
{{- define "loadtest.env" -}}
- name: HOME
  value: {{ include "loadtest.home" .ctx | quote }}
{{- if .ctx.Values.apiKey.existingSecret }}
{{ include "loadtest.secretEnv" (dict "name" .keyEnv "ctx" .ctx) }}
{{- end }}
{{- range $name, $value := .ctx.Values.env }}
- name: {{ $name }}
  value: {{ toString $value | quote }}
{{- end }}
{{- end }}

{{/*
Eight hex digits naming one load-test run: a hash of everything the run depends on (every value of this chart,
runId included, and the image it runs, which follows appVersion unless pinned). Job pod templates cannot be changed
in place, so a changed test gets new Job names (Helm deletes the old Jobs) and an unchanged one is left alone on
`helm upgrade`. The chart's own version is not part of it: a chart release that changes nothing of the test must
not run it again.
*/}}
{{- define "loadtest.run" -}}
{{- $in := dict "values" (omit .Values "enabled" "global") "image" (include "loadtest.image" .) }}
{{- toJson $in | sha256sum | trunc 8 }}
{{- end }}

{{/* The master Job: <release>-dsserve-loadtest-<scenario>-<run>, at most 63 characters. */}}
{{- define "loadtest.jobName" -}}
{{- $base := printf "%s-%s" (include "loadtest.name" .) .Values.scenario | trunc 54 | trimSuffix "-" }}
{{- printf "%s-%s" $base (include "loadtest.run" .) }}
{{- end }}

{{/* The worker Job: <release>-dsserve-loadtest-<scenario>-<run>-workers, at most 63 characters. */}}
{{- define "loadtest.workerJobName" -}}
{{- $base := printf "%s-%s" (include "loadtest.name" .) .Values.scenario | trunc 46 | trimSuffix "-" }}
{{- printf "%s-%s-workers" $base (include "loadtest.run" .) }}
{{- end }}

{{/*
The checks the schema cannot express, collected and reported at once (each names the value and the fix), the
Bitnami validateValues pattern. Paths are given as the parent chart's (loadtest.*), where users set them.
*/}}
{{- define "loadtest.validateValues" -}}
{{- $msgs := list }}
{{- if and (eq (toString .Values.image.tag) "latest") (not .Values.image.digest) }}
{{- $msgs = append $msgs (printf "loadtest.image.tag: `latest` is not allowed because it changes under a running test; pin a version (empty means the chart's appVersion %s) or set loadtest.image.digest" .Chart.AppVersion) }}
{{- end }}
{{- if eq .Values.mode "locust" }}
{{- if lt (int .Values.workers) 1 }}
{{- $msgs = append $msgs "loadtest.workers: loadtest.mode locust needs loadtest.workers >= 1: the Locust master sends no requests itself" }}
{{- end }}
{{- if not .Values.scenarios }}
{{- $msgs = append $msgs "loadtest.scenarios: loadtest.mode is locust but loadtest.scenarios is empty; pass a locustfile, e.g. --set-file loadtest.scenarios.locustfile\\.py=my_locustfile.py (or use loadtest.mode job, which runs the shipped scenarios)" }}
{{- else if not (hasKey .Values.scenarios .Values.locustfile) }}
{{- $msgs = append $msgs (printf "loadtest.locustfile: loadtest.locustfile is %q but loadtest.scenarios has only %s; name one of them" .Values.locustfile (keys .Values.scenarios | sortAlpha | join ", ")) }}
{{- end }}
{{- else if and (gt (int .Values.workers) 0) (gt (int .Values.processes) 1) }}
{{- $msgs = append $msgs (printf "loadtest.processes: loadtest.processes (%d) and loadtest.workers (%d) exclude each other: processes forks generators inside the Job's pod, workers adds worker pods; set one of them" (int .Values.processes) (int .Values.workers)) }}
{{- end }}
{{- if $msgs }}
{{- fail (printf "\nVALUES VALIDATION:\n%s" (join "\n" $msgs)) }}
{{- end }}
{{- end }}

{{/* Pod-level settings shared by every load-test pod. */}}
{{- define "loadtest.podCommon" -}}
{{- with .Values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* An emptyDir with an optional size limit. Call with (dict "name" "tmp" "sizeLimit" "1Gi"). */}}
{{- define "loadtest.emptyDirVolume" -}}
- name: {{ .name }}
  emptyDir: {{ ternary (dict "sizeLimit" .sizeLimit) dict (not (empty .sizeLimit)) | toJson }}
{{- end }}

{{/* Mounts of every load-test container: the root filesystem is read-only. */}}
{{- define "loadtest.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: {{ include "loadtest.home" . }}
{{- end }}

{{- define "loadtest.scratchVolumes" -}}
{{ include "loadtest.emptyDirVolume" (dict "name" "tmp" "sizeLimit" "1Gi") }}
{{ include "loadtest.emptyDirVolume" (dict "name" "home" "sizeLimit" "1Gi") }}
{{- end }}

{{/*
An init container that waits for the serve Service (wait-http) or for the Locust master (wait-tcp), with
loadtest/incluster.py from the image. Call with (dict "ctx" $ "name" "wait-for-serve" "args" (list ...)).
*/}}
{{- define "loadtest.waitContainer" -}}
{{- $ctx := .ctx }}
{{- $keyEnv := include "loadtest.keyEnv" $ctx }}
- name: {{ .name }}
  image: {{ include "loadtest.image" $ctx | quote }}
  imagePullPolicy: {{ $ctx.Values.image.pullPolicy }}
  command:
    - python
    - /opt/dsserve/loadtest/incluster.py
  args:
    {{- toYaml .args | nindent 4 }}
    {{- if and $ctx.Values.apiKey.existingSecret (eq (index .args 0) "wait-http") }}
    - --api-key-env
    - {{ $keyEnv }}
    {{- end }}
  env:
    - name: HOME
      value: {{ include "loadtest.home" $ctx | quote }}
    {{- if $ctx.Values.apiKey.existingSecret }}
    {{- include "loadtest.secretEnv" (dict "name" $keyEnv "ctx" $ctx) | nindent 4 }}
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
    {{- include "loadtest.scratchMounts" $ctx | nindent 4 }}
{{- end }}

{{/* locust mode: the pod spec of a Locust master or worker. Call with (dict "ctx" $ "role" "master"|"worker"). */}}
{{- define "loadtest.locustPodSpec" -}}
{{- $ctx := .ctx }}
{{- $v := $ctx.Values }}
{{- include "loadtest.podCommon" $ctx }}
containers:
  - name: locust-{{ .role }}
    image: {{ include "loadtest.image" $ctx | quote }}
    imagePullPolicy: {{ $v.image.pullPolicy }}
    command:
      {{- toYaml $v.command | nindent 6 }}
    {{- with (eq .role "master" | ternary $v.masterArgs $v.workerArgs) }}
    args:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    env:
      - name: LOCUST_LOCUSTFILE
        value: {{ printf "/mnt/locust/%s" $v.locustfile | quote }}
      - name: LOCUST_HOST
        value: {{ include "loadtest.host" $ctx | quote }}
      - name: DSSERVE_MODEL
        value: {{ $v.target.model | quote }}
      {{- if eq .role "master" }}
      - name: LOCUST_MODE_MASTER
        value: "true"
      - name: LOCUST_EXPECT_WORKERS
        value: {{ int $v.workers | toString | quote }}
      {{- else }}
      - name: LOCUST_MODE_WORKER
        value: "true"
      - name: LOCUST_MASTER_NODE_HOST
        value: {{ include "loadtest.name" $ctx | quote }}
      {{- end }}
      {{- /* The key's variable: apiKey.envName (the serving keys' name, as the Locust files of this mode read it). */}}
      {{- include "loadtest.env" (dict "ctx" $ctx "keyEnv" ($v.apiKey.envName | default (include "loadtest.keyEnv" $ctx))) | nindent 6 }}
    {{- if eq .role "master" }}
    ports:
      - name: web
        containerPort: 8089
      - name: master
        containerPort: {{ include "loadtest.masterPort" $ctx }}
    {{- end }}
    resources:
      {{- toYaml $v.resources | nindent 6 }}
    securityContext:
      {{- toYaml $v.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - name: scenarios
        mountPath: /mnt/locust
        readOnly: true
      {{- include "loadtest.scratchMounts" $ctx | nindent 6 }}
volumes:
  - name: scenarios
    configMap:
      name: {{ include "loadtest.name" $ctx }}
  {{- include "loadtest.scratchVolumes" $ctx | nindent 2 }}
{{- end }}
