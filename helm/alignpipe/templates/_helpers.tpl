{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "alignpipe.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release name, plus the chart name unless the release name contains it. */}}
{{- define "alignpipe.fullname" -}}
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

{{- define "alignpipe.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Standard labels of every resource. */}}
{{- define "alignpipe.labels" -}}
helm.sh/chart: {{ include "alignpipe.chart" . }}
{{ include "alignpipe.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: alignpipe
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels (stable across upgrades). */}}
{{- define "alignpipe.selectorLabels" -}}
app.kubernetes.io/name: {{ include "alignpipe.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of one component: include with (dict "ctx" $ "component" "mlflow"). */}}
{{- define "alignpipe.componentLabels" -}}
{{ include "alignpipe.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "alignpipe.componentSelectorLabels" -}}
{{ include "alignpipe.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Namespace of the pipeline pods: their Secrets, ServiceAccount and RBAC live there. */}}
{{- define "alignpipe.pipelinesNamespace" -}}
{{- default .Release.Namespace .Values.pipelines.namespace }}
{{- end }}

{{/* Image reference: repository:tag, plus @digest when given. Include with a dict {repository, tag, digest}. */}}
{{- define "alignpipe.imageRef" -}}
{{- if .digest }}
{{- printf "%s:%s@%s" .repository .tag .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{- define "alignpipe.image" -}}
{{- include "alignpipe.imageRef" .Values.image }}
{{- end }}

{{- define "alignpipe.mlflowImage" -}}
{{- if .Values.mlflow.image.repository }}
{{- include "alignpipe.imageRef" .Values.mlflow.image }}
{{- else }}
{{- include "alignpipe.image" . }}
{{- end }}
{{- end }}

{{- define "alignpipe.mlflowPullPolicy" -}}
{{- if .Values.mlflow.image.repository }}{{ .Values.mlflow.image.pullPolicy }}{{ else }}{{ .Values.image.pullPolicy }}{{ end }}
{{- end }}

{{/* Service DNS name of a component, short inside the release namespace when the pipelines run there too. */}}
{{- define "alignpipe.serviceHost" -}}
{{- $svc := printf "%s-%s" (include "alignpipe.fullname" .ctx) .component }}
{{- if eq (include "alignpipe.pipelinesNamespace" .ctx) .ctx.Release.Namespace }}
{{- $svc }}
{{- else }}
{{- printf "%s.%s.svc.%s" $svc .ctx.Release.Namespace .ctx.Values.clusterDomain }}
{{- end }}
{{- end }}

{{- define "alignpipe.mlflowURL" -}}
{{- printf "http://%s:%v" (include "alignpipe.serviceHost" (dict "ctx" . "component" "mlflow")) .Values.mlflow.service.port }}
{{- end }}

{{/* S3: endpoint, bucket, region, and the Secret (and keys) holding the credentials. */}}
{{- define "alignpipe.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s:%v" (include "alignpipe.serviceHost" (dict "ctx" . "component" "minio")) .Values.minio.port }}
{{- else }}
{{- .Values.externalS3.endpoint }}
{{- end }}
{{- end }}

{{- define "alignpipe.s3Bucket" -}}
{{- if .Values.minio.enabled }}{{ .Values.minio.bucket }}{{ else }}{{ .Values.externalS3.bucket }}{{ end }}
{{- end }}

{{- define "alignpipe.s3Region" -}}
{{- if .Values.minio.enabled }}{{ .Values.minio.region }}{{ else }}{{ .Values.externalS3.region }}{{ end }}
{{- end }}

{{- define "alignpipe.s3Auth" -}}
{{- if .Values.minio.enabled }}{{ toJson .Values.minio.auth }}{{ else }}{{ toJson .Values.externalS3 }}{{ end }}
{{- end }}

{{/* Secret the chart's servers read S3 credentials from: the existingSecret, else secrets.s3.name. */}}
{{- define "alignpipe.s3CredentialsSecret" -}}
{{- $auth := include "alignpipe.s3Auth" . | fromJson }}
{{- default .Values.secrets.s3.name $auth.existingSecret }}
{{- end }}

{{/* Env entries with the S3 credentials (secretKeyRef only) and endpoint. */}}
{{- define "alignpipe.s3Env" -}}
{{- $auth := include "alignpipe.s3Auth" . | fromJson }}
{{- $secret := include "alignpipe.s3CredentialsSecret" . }}
{{- $own := eq $secret .Values.secrets.s3.name }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ if $own }}AWS_ACCESS_KEY_ID{{ else }}{{ $auth.accessKeyIdKey }}{{ end }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ if $own }}AWS_SECRET_ACCESS_KEY{{ else }}{{ $auth.secretAccessKeyKey }}{{ end }}
- name: AWS_ENDPOINT_URL
  value: {{ include "alignpipe.s3Endpoint" . | quote }}
- name: MLFLOW_S3_ENDPOINT_URL
  value: {{ include "alignpipe.s3Endpoint" . | quote }}
- name: AWS_DEFAULT_REGION
  value: {{ include "alignpipe.s3Region" . | quote }}
- name: ALIGNPIPE_S3_BUCKET
  value: {{ include "alignpipe.s3Bucket" . | quote }}
{{- end }}

{{/* PostgreSQL connection of the MLflow backend store. */}}
{{- define "alignpipe.dbHost" -}}
{{- if .Values.postgresql.enabled }}{{ printf "%s-postgresql" (include "alignpipe.fullname" .) }}{{ else }}{{ .Values.externalDatabase.host }}{{ end }}
{{- end }}

{{- define "alignpipe.dbPort" -}}
{{- if .Values.postgresql.enabled }}5432{{ else }}{{ .Values.externalDatabase.port }}{{ end }}
{{- end }}

{{- define "alignpipe.dbName" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.database }}{{ else }}{{ .Values.externalDatabase.database }}{{ end }}
{{- end }}

{{- define "alignpipe.dbUser" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.username }}{{ else }}{{ .Values.externalDatabase.user }}{{ end }}
{{- end }}

{{- define "alignpipe.dbSecret" -}}
{{- if .Values.postgresql.enabled }}{{ default (printf "%s-postgresql" (include "alignpipe.fullname" .)) .Values.postgresql.auth.existingSecret }}{{ else }}{{ .Values.externalDatabase.existingSecret }}{{ end }}
{{- end }}

{{- define "alignpipe.dbPasswordKey" -}}
{{- if .Values.postgresql.enabled }}{{ .Values.postgresql.auth.passwordKey }}{{ else }}{{ .Values.externalDatabase.passwordKey }}{{ end }}
{{- end }}

{{/*
A Secret value generated once and kept across upgrades: reuse the live one (lookup) when present.
Include with (dict "ctx" $ "namespace" ns "name" secretName "key" key "length" n); returns base64.
*/}}
{{- define "alignpipe.persistentSecretValue" -}}
{{- $live := lookup "v1" "Secret" .namespace .name }}
{{- if and $live $live.data (hasKey $live.data .key) }}
{{- index $live.data .key }}
{{- else }}
{{- randAlphaNum (int .length) | b64enc }}
{{- end }}
{{- end }}

{{/* Pod-level security context shared by every pod. */}}
{{- define "alignpipe.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container-level security context shared by every container. */}}
{{- define "alignpipe.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "alignpipe.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Refuse conflicting or incomplete settings before anything is applied.
Each message names the value to change.
*/}}
{{- define "alignpipe.validate" -}}
{{- if and .Values.minio.enabled .Values.externalS3.endpoint }}
{{- fail "minio.enabled and externalS3.endpoint are mutually exclusive: set minio.enabled=false to use the external S3, or unset externalS3.endpoint" }}
{{- end }}
{{- if and (not .Values.minio.enabled) (not .Values.externalS3.endpoint) }}
{{- fail "no S3 store: set minio.enabled=true, or externalS3.endpoint (e.g. http://minio-service.kubeflow.svc.cluster.local:9000)" }}
{{- end }}
{{- if and .Values.postgresql.enabled .Values.externalDatabase.host }}
{{- fail "postgresql.enabled and externalDatabase.host are mutually exclusive: set postgresql.enabled=false to use the external database" }}
{{- end }}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.host) }}
{{- fail "no database for MLflow: postgresql.enabled=false needs externalDatabase.host (and externalDatabase.existingSecret)" }}
{{- end }}
{{- if and (not .Values.postgresql.enabled) (not .Values.externalDatabase.existingSecret) }}
{{- fail "externalDatabase.existingSecret is required: name a Secret holding the password of externalDatabase.user" }}
{{- end }}
{{- if and .Values.pipelines.upload.enabled (not .Values.kfp.host) }}
{{- fail "pipelines.upload.enabled needs kfp.host (the KFP API, e.g. http://ml-pipeline.kubeflow.svc.cluster.local:8888), or set pipelines.upload.enabled=false" }}
{{- end }}
{{- if and (not .Values.minio.enabled) .Values.secrets.s3.create (not .Values.externalS3.existingSecret) }}
{{- fail (printf "externalS3 needs credentials: set externalS3.existingSecret to a Secret holding them, or secrets.s3.create=false and create Secret %s yourself" .Values.secrets.s3.name) }}
{{- end }}
{{- if and .Values.mlflow.ingress.enabled (not .Values.mlflow.ingress.host) }}
{{- fail "mlflow.ingress.enabled needs mlflow.ingress.host" }}
{{- end }}
{{- end }}

{{/* Egress rule to the S3 store: the chart's MinIO pods, or the external endpoint's port. */}}
{{- define "alignpipe.s3EgressRule" -}}
{{- if .Values.minio.enabled }}
- to:
    - podSelector:
        matchLabels:
          {{- include "alignpipe.componentSelectorLabels" (dict "ctx" . "component" "minio") | nindent 10 }}
  ports:
    - port: 9000
      protocol: TCP
{{- else }}
- to:
    - ipBlock:
        cidr: {{ .Values.externalS3.egressCIDR }}
    - namespaceSelector: {}
  ports:
    - port: {{ .Values.externalS3.port }}
      protocol: TCP
{{- end }}
{{- end }}
