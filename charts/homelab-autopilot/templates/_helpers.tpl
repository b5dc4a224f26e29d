{{/*
Chart name, overridable with nameOverride; 63 characters at most (DNS label limit).
*/}}
{{- define "homelab-autopilot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified name used as the prefix of every resource: fullnameOverride, else the release name
when it already contains the chart name, else "<release>-<chart>"; truncated to 63 characters.
*/}}
{{- define "homelab-autopilot.fullname" -}}
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
"<fullname>-<suffix>" with the fullname shortened so the result stays within 63 characters.
Usage: include "homelab-autopilot.suffixed" (list . "store")
*/}}
{{- define "homelab-autopilot.suffixed" -}}
{{- $ctx := index . 0 }}
{{- $suffix := index . 1 }}
{{- $max := sub 62 (len $suffix) | int }}
{{- printf "%s-%s" (include "homelab-autopilot.fullname" $ctx | trunc $max | trimSuffix "-") $suffix }}
{{- end }}

{{/*
Chart label value: "<name>-<version>" ("+" is not allowed in label values).
*/}}
{{- define "homelab-autopilot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selector labels: stable for the life of a release (a Deployment's selector is immutable).
*/}}
{{- define "homelab-autopilot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "homelab-autopilot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Common labels on every resource.
*/}}
{{- define "homelab-autopilot.labels" -}}
helm.sh/chart: {{ include "homelab-autopilot.chart" . }}
{{ include "homelab-autopilot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: homelab-autopilot
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
Name of the ServiceAccount the operator runs as.
*/}}
{{- define "homelab-autopilot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "homelab-autopilot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name: set the name of an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Name of the leader-election Lease.
*/}}
{{- define "homelab-autopilot.leaseName" -}}
{{- default (include "homelab-autopilot.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/*
Name of the chunk store claim: the existing one, or the one this chart creates.
*/}}
{{- define "homelab-autopilot.storeClaimName" -}}
{{- default (include "homelab-autopilot.suffixed" (list . "store")) .Values.store.persistence.existingClaim }}
{{- end }}

{{/*
Container image reference: repository@digest when a digest is set, else repository:tag (tag
defaulting to the chart's appVersion).
*/}}
{{- define "homelab-autopilot.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
Plurals of our six kinds (space separated), for RBAC rules.
*/}}
{{- define "homelab-autopilot.kinds" -}}
proxmoxclusters services backuppolicies updatepolicies restoretests replicationjobs
{{- end }}

{{/*
Rules for the namespaced resources the controllers read and write: our kinds, their status and
finalizers, Events and the Secrets ProxmoxClusters refer to. Used by the ClusterRole (all
namespaces) or by the Role in watchNamespace.
*/}}
{{- define "homelab-autopilot.namespacedRules" -}}
{{- $kinds := include "homelab-autopilot.kinds" . | splitList " " -}}
- apiGroups: ["autopilot.homelab.dev"]
  resources:
    {{- range $kinds }}
    - {{ . }}
    {{- end }}
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["autopilot.homelab.dev"]
  resources:
    {{- range $kinds }}
    - {{ . }}/status
    {{- end }}
  verbs: ["get", "patch", "update"]
- apiGroups: ["autopilot.homelab.dev"]
  resources:
    {{- range $kinds }}
    - {{ . }}/finalizers
    {{- end }}
  verbs: ["update"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/*
Name of cluster-scoped RBAC objects: the fullname plus the release namespace, so two releases of the
same name in different namespaces do not collide.
*/}}
{{- define "homelab-autopilot.clusterName" -}}
{{- printf "%s-%s" (include "homelab-autopilot.fullname" .) .Release.Namespace }}
{{- end }}
