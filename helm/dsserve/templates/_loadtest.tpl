{{/* Shared pieces of the Locust master and worker Deployments. */}}

{{- define "dsserve.loadtestName" -}}
{{- printf "%s-loadtest" (include "dsserve.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The pod spec of a Locust container. Call with (dict "ctx" $ "role" "master"|"worker"). */}}
{{- define "dsserve.loadtestPodSpec" -}}
{{- $ctx := .ctx }}
{{- $lt := $ctx.Values.loadtest }}
serviceAccountName: {{ include "dsserve.serviceAccountName" $ctx }}
automountServiceAccountToken: false
enableServiceLinks: false
{{- with $ctx.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
securityContext:
  {{- toYaml $ctx.Values.podSecurityContext | nindent 2 }}
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
        value: {{ printf "http://%s:%d" (include "dsserve.serveServiceName" $ctx) (int $ctx.Values.serve.port) | quote }}
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
      {{- if $ctx.Values.apiKeys.envName }}
      - name: {{ $ctx.Values.apiKeys.envName }}
        valueFrom:
          secretKeyRef:
            name: {{ $ctx.Values.apiKeys.existingSecret }}
            key: {{ $ctx.Values.apiKeys.secretKey }}
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
        containerPort: 5557
    {{- end }}
    resources:
      {{- toYaml $lt.resources | nindent 6 }}
    securityContext:
      {{- toYaml $ctx.Values.containerSecurityContext | nindent 6 }}
    volumeMounts:
      - name: scenarios
        mountPath: /mnt/locust
        readOnly: true
volumes:
  - name: scenarios
    configMap:
      name: {{ include "dsserve.loadtestName" $ctx }}
{{- end }}
