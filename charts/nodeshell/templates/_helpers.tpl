{{/* Object name prefix: the release name, or "<release>-nodeshell" when it lacks "nodeshell". */}}
{{- define "nodeshell.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "nodeshell.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ default .Chart.Name .Values.nameOverride }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" . "component" "gateway"). */}}
{{- define "nodeshell.selectorLabels" -}}
app.kubernetes.io/name: {{ default .root.Chart.Name .root.Values.nameOverride }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "nodeshell.controllerName" -}}
{{ include "nodeshell.fullname" . }}-controller
{{- end -}}

{{- define "nodeshell.gatewayName" -}}
{{ include "nodeshell.fullname" . }}-gateway
{{- end -}}

{{/* The username the apiserver gives the gateway's ServiceAccount tokens. */}}
{{- define "nodeshell.gatewayUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "nodeshell.gatewayName" . }}
{{- end -}}

{{/* The username the apiserver gives the controller's ServiceAccount tokens. */}}
{{- define "nodeshell.controllerUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "nodeshell.controllerName" . }}
{{- end -}}

{{/* Where transcript Secrets live: transcripts.namespace, else the release namespace. */}}
{{- define "nodeshell.transcriptNamespace" -}}
{{ .Values.transcripts.namespace | default .Release.Namespace }}
{{- end -}}

{{/* repository@digest when image.digest is set, else repository:tag (default appVersion). */}}
{{- define "nodeshell.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Scheduling of one component's pods; call with (dict "root" . "component" "gateway"). */}}
{{- define "nodeshell.scheduling" -}}
{{- $v := index .root.Values .component -}}
{{- $selector := include "nodeshell.selectorLabels" . | fromYaml -}}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- if $v.affinity }}
affinity:
  {{- toYaml $v.affinity | nindent 2 }}
{{- else if eq ($v.podAntiAffinity | default "") "soft" }}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- toYaml $selector | nindent 14 }}
{{- else if eq ($v.podAntiAffinity | default "") "hard" }}
affinity:
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- toYaml $selector | nindent 12 }}
{{- end }}
{{- with $v.topologySpreadConstraints }}
topologySpreadConstraints:
{{- range . }}
{{- $c := deepCopy . }}
{{- if not $c.labelSelector }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- toYaml (list $c) | nindent 2 }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Labels of one component's pods: the selector labels and podLabels. */}}
{{- define "nodeshell.podLabels" -}}
{{- include "nodeshell.selectorLabels" . }}
{{- with (index .root.Values .component).podLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The container hardening both components share. */}}
{{- define "nodeshell.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "nodeshell.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Origins the gateway accepts: the configured ones and every Ingress host. */}}
{{- define "nodeshell.allowedOrigins" -}}
{{- $origins := list -}}
{{- range .Values.gateway.allowedOrigins -}}
{{- $origins = append $origins . -}}
{{- end -}}
{{- if .Values.ingress.enabled -}}
{{- $tlsHosts := list -}}
{{- range .Values.ingress.tls -}}
{{- $tlsHosts = concat $tlsHosts (.hosts | default list) -}}
{{- end -}}
{{- range .Values.ingress.hosts -}}
{{- $scheme := ternary "https" "http" (has .host $tlsHosts) -}}
{{- $origins = append $origins (printf "%s://%s" $scheme .host) -}}
{{- end -}}
{{- end -}}
{{- toJson (uniq $origins) -}}
{{- end -}}

{{/* The console's sign-in redirect URL: gateway.oidc.redirectUrl, else the first Ingress host. */}}
{{- define "nodeshell.redirectUrl" -}}
{{- if .Values.gateway.oidc.redirectUrl -}}
{{- .Values.gateway.oidc.redirectUrl -}}
{{- else if and .Values.ingress.enabled .Values.ingress.hosts -}}
{{- printf "https://%s/auth/callback" (index .Values.ingress.hosts 0).host -}}
{{- else -}}
{{- fail "gateway.oidc.clientSecret.existingSecret needs gateway.oidc.redirectUrl (or an Ingress host)" -}}
{{- end -}}
{{- end -}}
