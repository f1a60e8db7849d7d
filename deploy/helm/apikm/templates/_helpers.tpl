{{/* Names and labels. */}}
{{- define "apikm.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "apikm.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "apikm.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "apikm.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "apikm.selectorLabels" -}}
app.kubernetes.io/name: {{ include "apikm.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "apikm.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "apikm.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "apikm.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "apikm.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "apikm.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/* The Secret holding the APIKM_* secrets: the user's, or the chart's. */}}
{{- define "apikm.secretName" -}}
{{- default (include "apikm.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{- define "apikm.hasDatabase" -}}
{{- if or .Values.database.url .Values.database.existingSecret }}true{{ end }}
{{- end }}

{{- define "apikm.hasRedis" -}}
{{- if or .Values.redis.url .Values.redis.existingSecret }}true{{ end }}
{{- end }}

{{/* The most pods this release may run at once (autoscaling included). */}}
{{- define "apikm.maxReplicas" -}}
{{- if .Values.autoscaling.enabled }}{{ .Values.autoscaling.maxReplicas }}{{ else }}{{ .Values.replicaCount }}{{ end }}
{{- end }}

{{/*
Checks the schema cannot express; included by every template that needs them, so
`helm template` and `helm install` fail before anything is applied.
*/}}
{{- define "apikm.validate" -}}
{{- if and (gt (int (include "apikm.maxReplicas" .)) 1) (not (include "apikm.hasDatabase" .)) }}
{{- fail (printf "apikm: %d replicas need PostgreSQL: set database.url or database.existingSecret (SQLite is one file in one pod and cannot be shared), or set replicaCount: 1 with autoscaling off" (int (include "apikm.maxReplicas" .))) }}
{{- end }}
{{- if not .Values.config.APIKM_KEYCLOAK_URL }}
{{- fail "apikm: set config.APIKM_KEYCLOAK_URL (e.g. https://keycloak.example.org)" }}
{{- end }}
{{- if not .Values.config.APIKM_KEYCLOAK_REALM }}
{{- fail "apikm: set config.APIKM_KEYCLOAK_REALM" }}
{{- end }}
{{- if .Values.secrets.existingSecret }}
{{- range $name := list "peppers" "sessionSecret" "encryptionKey" "oidcClientSecret" "exchangeClientSecret" "smtpUrl" }}
{{- if index $.Values.secrets $name }}
{{- fail (printf "apikm: secrets.%s is set together with secrets.existingSecret: keep it in the existing Secret only" $name) }}
{{- end }}
{{- end }}
{{- if $.Values.database.url }}
{{- fail "apikm: database.url is set together with secrets.existingSecret: put the URL in a Secret and set database.existingSecret (and existingSecretKey)" }}
{{- end }}
{{- else }}
{{- range $name := list "peppers" "sessionSecret" "encryptionKey" }}
{{- if not (index $.Values.secrets $name) }}
{{- fail (printf "apikm: set secrets.%s (or secrets.existingSecret): every replica must share it, so the chart never makes one up" $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.database.url .Values.database.existingSecret }}
{{- fail "apikm: set database.url or database.existingSecret, not both" }}
{{- end }}
{{- if and .Values.redis.url .Values.redis.existingSecret }}
{{- fail "apikm: set redis.url or redis.existingSecret, not both" }}
{{- end }}
{{- if and .Values.sqlite.existingClaim (include "apikm.hasDatabase" .) }}
{{- fail "apikm: sqlite.existingClaim is for SQLite only; with PostgreSQL leave it empty" }}
{{- end }}
{{- if and .Values.leakReports.publicKeys .Values.leakReports.existingConfigMap }}
{{- fail "apikm: set leakReports.publicKeys or leakReports.existingConfigMap, not both" }}
{{- end }}
{{- range $var, $value := fromYaml (include "apikm.typedSettings" .) }}
{{- if hasKey $.Values.config $var }}
{{- fail (printf "apikm: %s is set twice, in config and by its own value (notifications, alerts, leakReports, gatewayUrls): keep one" $var) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Settings with values of their own (typed and checked by the schema), as ConfigMap entries;
only those set, so apikm's defaults apply otherwise.
*/}}
{{- define "apikm.typedSettings" -}}
{{- with .Values.notifications }}
{{- if not (kindIs "invalid" .enabled) }}
APIKM_NOTIFY_ENABLED: {{ .enabled | toString | quote }}
{{- end }}
{{- with .smtpFrom }}
APIKM_SMTP_FROM: {{ . | quote }}
{{- end }}
{{- with .adminEmails }}
APIKM_ADMIN_EMAILS: {{ join "," . | quote }}
{{- end }}
{{- with .expiryWarningDays }}
APIKM_EXPIRY_WARNING_DAYS: {{ join "," . | quote }}
{{- end }}
{{- end }}
{{- if not (kindIs "invalid" .Values.alerts.revokeOnSecretReuse) }}
APIKM_REVOKE_ON_SECRET_REUSE: {{ .Values.alerts.revokeOnSecretReuse | toString | quote }}
{{- end }}
{{- with .Values.gatewayUrls }}
APIKM_GATEWAY_URLS: {{ join "," . | quote }}
{{- end }}
{{- if include "apikm.leakKeysConfigMap" . }}
APIKM_LEAK_REPORT_KEYS: {{ printf "%s/%s" (include "apikm.leakKeysDir" .) (include "apikm.leakKeysFile" .) | quote }}
{{- end }}
{{- end }}

{{/* The ConfigMap holding GitHub's leak report keys (the chart's or the user's), or "". */}}
{{- define "apikm.leakKeysConfigMap" -}}
{{- if .Values.leakReports.existingConfigMap }}{{ .Values.leakReports.existingConfigMap }}
{{- else if .Values.leakReports.publicKeys }}{{ include "apikm.fullname" . }}-leak-report-keys
{{- end }}
{{- end }}

{{- define "apikm.leakKeysDir" -}}/etc/apikm/leak-report-keys{{- end }}

{{- define "apikm.leakKeysFile" -}}
{{- default "github-secret-scanning.json" .Values.leakReports.existingConfigMapKey }}
{{- end }}

{{/* Ports of the SMTP URL (25 for smtp://, 465 for smtps://, or its own), for egress. */}}
{{- define "apikm.smtpPorts" -}}
{{- $u := urlParse .Values.secrets.smtpUrl }}
{{- $port := trimPrefix (printf "%s:" $u.hostname) $u.host }}
{{- if eq $port $u.host }}{{ $port = "" }}{{ end }}
{{- if not $port }}{{ $port = ternary "465" "25" (eq $u.scheme "smtps") }}{{ end }}
{{- list (int $port) | toJson }}
{{- end }}

{{/*
The secret environment, the same for the migration and the server containers: every
variable is a reference to one Secret key, never a value in the pod spec, so all replicas
(and all pods the autoscaler adds) read the same pepper, session and encryption keys.
*/}}
{{- define "apikm.secretEnv" -}}
{{- $secret := include "apikm.secretName" . -}}
{{- range $var := list "APIKM_PEPPERS" "APIKM_SESSION_SECRET" "APIKM_ENCRYPTION_KEY" }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $var }}}
{{- end }}
{{- range $var := list "APIKM_OIDC_CLIENT_SECRET" "APIKM_EXCHANGE_CLIENT_SECRET" "APIKM_SMTP_URL" }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef: {name: {{ $secret }}, key: {{ $var }}, optional: true}
{{- end }}
{{- if .Values.database.existingSecret }}
- name: APIKM_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ .Values.database.existingSecret }}, key: {{ .Values.database.existingSecretKey }}}
{{- else if .Values.database.url }}
- name: APIKM_DATABASE_URL
  valueFrom:
    secretKeyRef: {name: {{ include "apikm.fullname" . }}, key: APIKM_DATABASE_URL}
{{- end }}
{{- if .Values.redis.existingSecret }}
- name: APIKM_RATE_LIMIT_STORAGE
  valueFrom:
    secretKeyRef: {name: {{ .Values.redis.existingSecret }}, key: {{ .Values.redis.existingSecretKey }}}
{{- end }}
{{- end }}

{{/* Ports of a list of http(s) URLs, for the egress rule to Keycloak. */}}
{{- define "apikm.urlPorts" -}}
{{- $ports := list -}}
{{- range $url := . }}
{{- if $url }}
{{- $u := urlParse $url }}
{{- $port := trimPrefix (printf "%s:" $u.hostname) $u.host }}
{{- if eq $port $u.host }}{{ $port = "" }}{{ end }}
{{- if not $port }}{{ $port = ternary "443" "80" (eq $u.scheme "https") }}{{ end }}
{{- $ports = append $ports (int $port) }}
{{- end }}
{{- end }}
{{- $ports | uniq | toJson }}
{{- end }}

{{/* apikm's forward-auth endpoint as the cluster's DNS names it (no query). */}}
{{- define "apikm.authUrl" -}}
{{- printf "http://%s.%s.svc.%s:%v/v1/auth" (include "apikm.fullname" .) .Release.Namespace .Values.clusterDomain .Values.service.port }}
{{- end }}
