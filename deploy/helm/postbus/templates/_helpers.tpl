{{/* Chart name. */}}
{{- define "postbus.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (release-name-postbus unless the release already says postbus). */}}
{{- define "postbus.fullname" -}}
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

{{- define "postbus.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels; component labels are added per role. */}}
{{- define "postbus.labels" -}}
helm.sh/chart: {{ include "postbus.chart" . }}
{{ include "postbus.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: postbus
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "postbus.selectorLabels" -}}
app.kubernetes.io/name: {{ include "postbus.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "postbus.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "postbus.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The roles: values key -> component (labels, names) and Python module.
*/}}
{{- define "postbus.roles" -}}
ingressSmtpd: {component: ingress-smtpd, module: ingress_smtpd}
qmgr: {component: qmgr, module: qmgr}
deliverySmtp: {component: delivery-smtp, module: delivery_smtp}
deliveryLocal: {component: delivery-local, module: delivery_local}
policy: {component: policy, module: policy}
contentFilter: {component: content-filter, module: content_filter}
mapsApi: {component: maps-api, module: maps_api}
webhooks: {component: webhooks, module: webhooks}
{{- end }}

{{/*
Name of the Deployment (and HPA) of one master.cf service of a role: the
first service gets <fullname>-<component>, others add the service name.
Call with (dict "root" $ "component" "delivery-smtp" "index" 1 "service" "relay").
*/}}
{{- define "postbus.workloadName" -}}
{{- $base := printf "%s-%s" (include "postbus.fullname" .root) .component }}
{{- if eq (int .index) 0 }}
{{- $base | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" $base (include "postbus.serviceSlug" .service) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* A master.cf service name as a label value / name part ("0.0.0.0:2525" -> "0-0-0-0-2525"). */}}
{{- define "postbus.serviceSlug" -}}
{{- regexReplaceAll "[^a-z0-9-]+" (lower .) "-" | trimAll "-" | trunc 63 }}
{{- end }}

{{/* The image of a role: its own repository/tag when set, else the chart's. */}}
{{- define "postbus.image" -}}
{{- $root := .root }}
{{- $img := .role.image | default dict }}
{{- $repo := $img.repository | default $root.Values.image.repository }}
{{- $tag := $img.tag | default $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{- define "postbus.pullPolicy" -}}
{{- $img := .role.image | default dict }}
{{- $img.pullPolicy | default .root.Values.image.pullPolicy }}
{{- end }}

{{/* The bus every role connects to: the chart's NATS, or the external one. */}}
{{- define "postbus.natsUrl" -}}
{{- if .Values.nats.enabled }}
{{- printf "nats://%s-nats:4222" (include "postbus.fullname" .) }}
{{- else }}
{{- .Values.externalNats.url }}
{{- end }}
{{- end }}

{{/* postbus_stream_replicas: one stream replica per NATS node of the chart. */}}
{{- define "postbus.streamReplicas" -}}
{{- if .Values.nats.enabled }}
{{- .Values.nats.replicas | int }}
{{- else }}
{{- .Values.externalNats.streamReplicas | default 1 | int }}
{{- end }}
{{- end }}

{{/* nats.conf of the chart's NATS nodes (templates/nats.yaml). */}}
{{- define "postbus.natsConf" -}}
{{- $name := printf "%s-nats" (include "postbus.fullname" .) }}
{{- $replicas := int .Values.nats.replicas -}}
server_name: $POD_NAME
listen: 0.0.0.0:4222
http: 0.0.0.0:8222
pid_file: /var/run/nats/nats.pid
lame_duck_duration: 30s
jetstream {
  store_dir: /data
  sync_interval: {{ .Values.nats.jetstream.syncInterval }}
}
{{- if gt $replicas 1 }}
cluster {
  name: {{ $name }}
  listen: 0.0.0.0:6222
  routes: [
    {{- range $i := until $replicas }}
    nats://{{ $name }}-{{ $i }}.{{ $name }}-headless:6222
    {{- end }}
  ]
}
{{- end }}
{{- end }}
