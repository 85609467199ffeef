{{/* Chart name, overridable. */}}
{{- define "sandbox-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects; the release name alone when it already contains the chart name. */}}
{{- define "sandbox-operator.fullname" -}}
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

{{- define "sandbox-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sandbox-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sandbox-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "sandbox-operator.labels" -}}
helm.sh/chart: {{ include "sandbox-operator.chart" . }}
{{ include "sandbox-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sandbox-operator
{{- end }}

{{- define "sandbox-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sandbox-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image: pinned by digest when one is given (the tag is then ignored), else by tag. */}}
{{- define "sandbox-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The operator's probe endpoints (its --liveness and --readiness options), each on a port of its own:
kopf serves liveness, the operator readiness, for its whole run. */}}
{{- define "sandbox-operator.livenessPort" -}}8080{{- end }}
{{- define "sandbox-operator.readinessPort" -}}8081{{- end }}

{{/* Required, checked here rather than by values.schema.json, so that `helm lint` passes on the chart's
own defaults (lint turns `required` and `fail` into notes); install, upgrade and template refuse. */}}
{{- define "sandbox-operator.defaultTemplate" -}}
{{- required "defaultTemplate is required: the Space (namespace/name) duplicated for sessions that name none" .Values.defaultTemplate }}
{{- end }}

{{/* The Secret holding the Hub token: the chart's own, or hub.existingSecret. Exactly one source
(under `helm lint`, which does not fail, the chart's own). */}}
{{- define "sandbox-operator.hubSecretName" -}}
{{- if and .Values.hub.token .Values.hub.existingSecret }}
{{- fail "hub.token and hub.existingSecret are both set: set one of them" }}
{{- else if .Values.hub.existingSecret }}
{{- .Values.hub.existingSecret }}
{{- else }}
{{- if not .Values.hub.token }}
{{- fail "hub.token or hub.existingSecret is required: the operator calls the Hub with that token" }}
{{- end }}
{{- printf "%s-hub" (include "sandbox-operator.fullname" .) }}
{{- end }}
{{- end }}

{{- define "sandbox-operator.hubSecretKey" -}}
{{- if .Values.hub.existingSecret }}{{ .Values.hub.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/*
The operator's permissions, exactly the calls it makes (kopf 1.45 standalone with scanning off,
plus sandbox_operator/k8s/client.py; tests/chart/test_rbac_matches_code.py keeps them in step):
- agentsessions: list + watch (kopf's watch, the session listing), patch (finalizer, annotations, idle
  pause), delete (the end of a lifetime or retention);
- agentsessions/status: patch (kopf's status patch and the intent write before each Hub call);
- events: create (kopf.event and the operator's own Events, all POSTed);
- secrets: get (connection Secret, spec.secrets references), create + update (connection Secret,
  replaced whole when a stale one is taken over; a pool's token Secret);
- agentsessionpools: get (a claim reads its pool), list + watch + patch (kopf), /status patch (the
  pool's status, claims included, written with its resourceVersion).
The leader-election Lease lives in the operator's own namespace; see leaderElectionRules.
*/}}
{{- define "sandbox-operator.rules" -}}
- apiGroups: ["agents.sandbox-operator.dev"]
  resources: ["agentsessions"]
  verbs: ["list", "watch", "patch", "delete"]
- apiGroups: ["agents.sandbox-operator.dev"]
  resources: ["agentsessions/status"]
  verbs: ["patch"]
- apiGroups: ["agents.sandbox-operator.dev"]
  resources: ["agentsessionpools"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["agents.sandbox-operator.dev"]
  resources: ["agentsessionpools/status"]
  verbs: ["patch"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create", "update"]
{{- end }}

{{/*
Cluster-scoped reads the operator needs in every mode (namespaced too): the approval policy and its
bindings (is approval enforced?), SubjectAccessReviews (may the approver still approve?), and the
kube-system namespace, whose UID is the default cluster id.
*/}}
{{- define "sandbox-operator.clusterRules" -}}
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingadmissionpolicies"]
  resourceNames: ["sandbox-operator-approval"]
  verbs: ["get"]
- apiGroups: ["admissionregistration.k8s.io"]
  resources: ["validatingadmissionpolicybindings"]
  verbs: ["list"]
- apiGroups: ["authorization.k8s.io"]
  resources: ["subjectaccessreviews"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["namespaces"]
  resourceNames: ["kube-system"]
  verbs: ["get"]
{{- end }}

{{/* The leader-election Lease, in the release namespace: one per release, so releases sharding a
cluster never wait for each other's Lease. The release name of docs/operations.md gives the CLI's default. */}}
{{- define "sandbox-operator.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "sandbox-operator.fullname" .) }}
{{- end }}

{{/* The Secret holding the Hub read token for agent pods: the chart's own, hub.readToken.existingSecret,
or none (""). */}}
{{- define "sandbox-operator.readTokenSecretName" -}}
{{- if and .Values.hub.readToken.token .Values.hub.readToken.existingSecret }}
{{- fail "hub.readToken.token and hub.readToken.existingSecret are both set: set one of them" }}
{{- else if and .Values.hub.readToken.namespaceSecret (or .Values.hub.readToken.token .Values.hub.readToken.existingSecret) }}
{{- fail "hub.readToken.namespaceSecret gives each namespace its own read token: unset hub.readToken.token and hub.readToken.existingSecret" }}
{{- else if .Values.hub.readToken.existingSecret }}
{{- .Values.hub.readToken.existingSecret }}
{{- else if .Values.hub.readToken.token }}
{{- printf "%s-hub-read" (include "sandbox-operator.fullname" .) }}
{{- end }}
{{- end }}

{{- define "sandbox-operator.readTokenSecretKey" -}}
{{- if or .Values.hub.readToken.existingSecret .Values.hub.readToken.namespaceSecret }}{{ .Values.hub.readToken.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/*
Leader election (sandbox_operator/k8s/lease.py): create the Lease, then read and renew only that one;
list the other shards' Leases (found by label, in this namespace only), to notice a release whose
namespaces overlap this one's (docs/sharding.md). RBAC cannot restrict `create`
or `list` by name (the name is not known when they are authorized).
*/}}
{{- define "sandbox-operator.leaderElectionRules" -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create", "list"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "sandbox-operator.leaseName" . | quote }}]
  verbs: ["get", "update", "patch"]
{{- end }}
