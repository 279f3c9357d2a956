{{/*
Names, labels, images and the settings every Switchback pod shares.
*/}}

{{- define "switchback.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Component names append "-controller", "-worker-<tier>" and so on,
so it is cut at 40 characters to leave room for them within the 63 of a DNS label.
*/}}
{{- define "switchback.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 40 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "switchback.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object. Call with (dict "root" $ "component" "router").
*/}}
{{- define "switchback.labels" -}}
helm.sh/chart: {{ include "switchback.chart" .root }}
{{ include "switchback.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: switchback
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector cannot change).
Worker pods add switchback.io/tier.
*/}}
{{- define "switchback.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchback.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
An image reference. Call with (dict "root" $ "image" .Values.router.image).
*/}}
{{- define "switchback.image" -}}
{{- $tag := .image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- $repo := .image.repository -}}
{{- with .root.Values.image.registry }}{{ $repo = printf "%s/%s" (trimSuffix "/" .) $repo }}{{ end -}}
{{- printf "%s:%s" $repo $tag }}
{{- end }}

{{/*
etcd client endpoints, as a list: the external ones, or one per bundled member through the
headless Service (an etcd client balances over members and fails over by itself).
*/}}
{{- define "switchback.etcdEndpoints" -}}
{{- if .Values.etcd.external.endpoints }}
{{- toJson .Values.etcd.external.endpoints }}
{{- else }}
{{- $fullname := include "switchback.fullname" . }}
{{- $endpoints := list }}
{{- range $i := until (int .Values.etcd.replicas) }}
{{- $endpoints = append $endpoints (printf "http://%s-etcd-%d.%s-etcd-headless.%s.svc:2379" $fullname $i $fullname $.Release.Namespace) }}
{{- end }}
{{- toJson $endpoints }}
{{- end }}
{{- end }}

{{/*
Environment shared by every Switchback container: logs, OpenTelemetry, and the pod's own
name and IP through the downward API (later variables refer to them as $(POD_NAME)).
Call with (dict "root" $).
*/}}
{{- define "switchback.commonEnv" -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_IP
  valueFrom:
    fieldRef:
      fieldPath: status.podIP
- name: RUST_LOG
  value: {{ .root.Values.logLevel | quote }}
- name: SWITCHBACK_LOG_FORMAT
  value: {{ .root.Values.logFormat | quote }}
{{- with .root.Values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- /* The binaries name their service themselves; these attributes say which pod. */}}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ printf "service.namespace=%s,service.instance.id=$(POD_NAME),k8s.pod.name=$(POD_NAME),k8s.namespace.name=%s" ($.root.Values.otel.serviceNamespace | default $.root.Release.Namespace) $.root.Release.Namespace | quote }}
{{- end }}
{{- end }}

{{/*
Pod-level settings shared by every pod.
*/}}
{{- define "switchback.podCommon" -}}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/*
Scheduling keys of a component's values (nodeSelector, tolerations, affinity,
topologySpreadConstraints). Call with (dict "values" .Values.router "selector" (include
"switchback.selectorLabels" ...)): spread constraints without a labelSelector get the
component's.
*/}}
{{- define "switchback.scheduling" -}}
{{- with .values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .values.topologySpreadConstraints }}
{{- $constraints := list }}
{{- range . }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" ($.selector | fromYaml)) }}
{{- end }}
{{- $constraints = append $constraints $c }}
{{- end }}
topologySpreadConstraints:
  {{- toYaml $constraints | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A worker tier's effective settings: workerDefaults, then the tier's own keys on top. Each
key the tier sets replaces the default's whole value (no deep merge, so that a tier can
set a 0 or an empty map and have it stick). Returns YAML; use with fromYaml.
*/}}
{{- define "switchback.tier" -}}
{{- $t := dict }}
{{- range $k, $v := .root.Values.workerDefaults }}{{ $_ := set $t $k $v }}{{ end }}
{{- range $k, $v := .tier }}{{ $_ := set $t $k $v }}{{ end }}
{{- toYaml $t }}
{{- end }}

{{/*
The worker's config file for one tier (a YAML document). Only keys the worker's RawConfig
accepts (worker/src/config.rs, deny_unknown_fields): helm/tests/check_chart.py checks that.
id, advertise and node are per pod, so they come from the environment instead.
Call with (dict "root" $ "tier" $effectiveTier).
*/}}
{{- define "switchback.workerConfig" -}}
{{- $t := .tier }}
{{- $root := .root }}
{{- $engine := dict "kind" $t.engine.kind }}
{{- if eq $t.engine.kind "mistralrs" }}
{{- if not $t.engine.modelPath }}
{{- fail (printf "tier %s: engine.modelPath is required for the mistralrs engine" $t.name) }}
{{- end }}
{{- $_ := set $engine "model_path" $t.engine.modelPath }}
{{- $_ := set $engine "device" ($t.engine.device | default "cpu") }}
{{- with $t.engine.dtype }}{{ $_ := set $engine "dtype" . }}{{ end }}
{{- else }}
{{- if hasKey $t.engine "prefillMsPerToken" }}{{ $_ := set $engine "prefill_ms_per_token" $t.engine.prefillMsPerToken }}{{ end }}
{{- if hasKey $t.engine "decodeMsPerToken" }}{{ $_ := set $engine "decode_ms_per_token" $t.engine.decodeMsPerToken }}{{ end }}
{{- if hasKey $t.engine "defaultTokens" }}{{ $_ := set $engine "default_tokens" $t.engine.defaultTokens }}{{ end }}
{{- end }}
{{- $cost := dict }}
{{- with $t.cost }}
{{- if hasKey . "inputPerMtok" }}{{ $_ := set $cost "input_per_mtok" .inputPerMtok }}{{ end }}
{{- if hasKey . "outputPerMtok" }}{{ $_ := set $cost "output_per_mtok" .outputPerMtok }}{{ end }}
{{- end }}
{{- $config := dict
  "tier" $t.name
  "model" $t.model
  "listen" (printf "0.0.0.0:%d" (int $t.grpcPort))
  "metrics_listen" (printf "0.0.0.0:%d" (int $t.metricsPort))
  "engine" $engine
  "max_concurrency" $t.maxConcurrency
  "shutdown_grace_s" $t.shutdownGraceSeconds
  "etcd" (dict
    "endpoints" (include "switchback.etcdEndpoints" $root | fromJsonArray)
    "prefix" $root.Values.etcd.prefix
    "lease_ttl_s" $root.Values.etcd.leaseTtlSeconds) }}
{{- if $cost }}{{ $_ := set $config "cost" $cost }}{{ end }}
{{- include "switchback.securityConfig" (dict "root" $root "config" $config "component" "worker") }}
{{- range $k, $v := $t.extraConfig }}{{ $_ := set $config $k $v }}{{ end }}
{{- toYaml $config }}
{{- end }}

{{/*
Tier names in rising cost, as the router wants them: ordered by input + output cost per
million tokens, ties kept in the order of .Values.tiers (a selection sort: Go templates
have no numeric sort). Returns a JSON list.
*/}}
{{- define "switchback.tierNames" -}}
{{- $remaining := .Values.tiers }}
{{- $names := list }}
{{- range .Values.tiers }}
{{- $best := first $remaining }}
{{- range rest $remaining }}
{{- if lt (include "switchback.tierCost" .) (include "switchback.tierCost" $best) }}{{ $best = . }}{{ end }}
{{- end }}
{{- $names = append $names $best.name }}
{{- $remaining = without $remaining $best }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/*
A tier's cost for ordering, as a string that sorts like the number: input + output per
million tokens in micro-units, zero-padded.
*/}}
{{- define "switchback.tierCost" -}}
{{- $c := .cost | default dict }}
{{- $sum := addf ($c.inputPerMtok | default 0) ($c.outputPerMtok | default 0) }}
{{- printf "%020.0f" (mulf $sum 1000000) }}
{{- end }}

{{/*
Where the TLS Secrets are mounted in every Switchback container.
*/}}
{{- define "switchback.tlsDir" -}}/etc/switchback-tls{{- end }}

{{/*
The DNS name every component's certificate is checked against (peers are dialled by pod
IP, which no certificate can name ahead of time): tls.serverName, or
<fullname>.<namespace>.svc.
*/}}
{{- define "switchback.tlsServerName" -}}
{{- .Values.tls.serverName | default (printf "%s.%s.svc" (include "switchback.fullname" .) .Release.Namespace) }}
{{- end }}

{{/*
Adds the security keys to a component's config dict (in place): `tls` (mutual TLS between
components) when tls.enabled, and etcd's TLS and the component's user when etcd.tls /
etcd.auth are set. Call with (dict "root" $ "config" $config "component" "router"|"worker"|"controller").
*/}}
{{- define "switchback.securityConfig" -}}
{{- $root := .root }}
{{- $dir := include "switchback.tlsDir" $root }}
{{- if $root.Values.tls.enabled }}
{{- if not $root.Values.tls.issuer.name }}
{{- fail "tls.enabled needs tls.issuer.name (a cert-manager Issuer or ClusterIssuer of the cluster CA; every pod gets its own certificate naming its role through cert-manager's csi-driver)" }}
{{- end }}
{{- $_ := set .config "tls" (dict
  "ca_file" (printf "%s/cluster/ca.crt" $dir)
  "cert_file" (printf "%s/cluster/tls.crt" $dir)
  "key_file" (printf "%s/cluster/tls.key" $dir)
  "server_name" (include "switchback.tlsServerName" $root)) }}
{{- end }}
{{- $etcd := index .config "etcd" }}
{{- if $root.Values.etcd.tls.secretName }}
{{- if not $root.Values.etcd.external.endpoints }}
{{- fail "etcd.tls.secretName is for an external etcd: set etcd.external.endpoints (https://)" }}
{{- end }}
{{- $_ := set $etcd "ca_file" (printf "%s/etcd/ca.crt" $dir) }}
{{- $_ := set $etcd "cert_file" (printf "%s/etcd/tls.crt" $dir) }}
{{- $_ := set $etcd "key_file" (printf "%s/etcd/tls.key" $dir) }}
{{- end }}
{{- if $root.Values.etcd.auth.username }}
{{- if not $root.Values.etcd.auth.passwordSecretName }}
{{- fail "etcd.auth.username needs etcd.auth.passwordSecretName (a Secret with the passwords of the users <username>-controller, -worker and -router under the keys `controller`, `worker` and `router`)" }}
{{- end }}
{{- $_ := set $etcd "username" (printf "%s-%s" $root.Values.etcd.auth.username .component) }}
{{- $_ := set $etcd "password_file" (printf "%s/etcd-auth/password" $dir) }}
{{- end }}
{{- end }}

{{/*
Volumes for the security config (a YAML list, possibly empty). The cluster certificate is
one per pod from cert-manager's csi-driver, naming the component's role and the pod
(spiffe://switchback/<role>/<pod name>; a worker's id is its pod name) and renewed in
place; Secret volumes are updated in place by the kubelet. Either way a rotated
certificate reaches the running process. Call with
(dict "root" $ "http" true|false "component" "router"|"worker"|"controller").
*/}}
{{- define "switchback.securityVolumes" -}}
{{- $v := .root.Values }}
{{- if $v.tls.enabled }}
- name: cluster-tls
  csi:
    driver: csi.cert-manager.io
    readOnly: true
    volumeAttributes:
      csi.cert-manager.io/issuer-name: {{ $v.tls.issuer.name | quote }}
      csi.cert-manager.io/issuer-kind: {{ $v.tls.issuer.kind | quote }}
      csi.cert-manager.io/issuer-group: {{ $v.tls.issuer.group | quote }}
      csi.cert-manager.io/common-name: {{ printf "%s-${POD_NAME}" .component | quote }}
      csi.cert-manager.io/dns-names: {{ include "switchback.tlsServerName" .root | quote }}
      csi.cert-manager.io/uri-sans: {{ printf "spiffe://switchback/%s/${POD_NAME}" .component | quote }}
      csi.cert-manager.io/key-usages: "digital signature,key encipherment,server auth,client auth"
      csi.cert-manager.io/duration: {{ $v.tls.duration | quote }}
      csi.cert-manager.io/fs-group: {{ $v.podSecurityContext.fsGroup | quote }}
{{- end }}
{{- with $v.etcd.tls.secretName }}
- name: etcd-tls
  secret:
    secretName: {{ . }}
{{- end }}
{{- with $v.etcd.auth.passwordSecretName }}
- name: etcd-auth
  secret:
    secretName: {{ . }}
    items:
      - key: {{ $.component }}
        path: password
{{- end }}
{{- if and .http $v.router.httpTls.secretName }}
- name: http-tls
  secret:
    secretName: {{ $v.router.httpTls.secretName }}
{{- end }}
{{- end }}

{{/*
Mounts of the volumes above. Call with (dict "root" $ "http" true|false).
*/}}
{{- define "switchback.securityMounts" -}}
{{- $v := .root.Values }}
{{- $dir := include "switchback.tlsDir" .root }}
{{- if $v.tls.enabled }}
- name: cluster-tls
  mountPath: {{ $dir }}/cluster
  readOnly: true
{{- end }}
{{- if $v.etcd.tls.secretName }}
- name: etcd-tls
  mountPath: {{ $dir }}/etcd
  readOnly: true
{{- end }}
{{- if $v.etcd.auth.passwordSecretName }}
- name: etcd-auth
  mountPath: {{ $dir }}/etcd-auth
  readOnly: true
{{- end }}
{{- if and .http $v.router.httpTls.secretName }}
- name: http-tls
  mountPath: {{ $dir }}/http
  readOnly: true
{{- end }}
{{- end }}

{{/*
sbctl flags for the same security settings (the worker's preStop drain: with the worker's
own certificate, which may drain only that worker, and its etcd user).
*/}}
{{- define "switchback.sbctlSecurityFlags" -}}
{{- $v := .Values }}
{{- $dir := include "switchback.tlsDir" . }}
{{- if $v.tls.enabled }} --tls-ca-file={{ $dir }}/cluster/ca.crt --tls-cert-file={{ $dir }}/cluster/tls.crt --tls-key-file={{ $dir }}/cluster/tls.key --tls-server-name={{ include "switchback.tlsServerName" . }}{{ end }}
{{- if $v.etcd.tls.secretName }} --etcd-ca-file={{ $dir }}/etcd/ca.crt --etcd-cert-file={{ $dir }}/etcd/tls.crt --etcd-key-file={{ $dir }}/etcd/tls.key{{ end }}
{{- if $v.etcd.auth.username }} --etcd-username={{ printf "%s-worker" $v.etcd.auth.username | squote }} --etcd-password-file={{ $dir }}/etcd-auth/password{{ end }}
{{- end }}
