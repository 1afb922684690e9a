{{/*
Named templates of the leaderd chart.

The public ones (leaderd.container, leaderd.nativeSidecar, leaderd.serviceAccountName,
leaderd.leaseName, leaderd.fullname) can be included from a PARENT chart that lists leaderd as
a dependency, with the parent's root context:

    {{- include "leaderd.container" . | nindent 8 }}

They then read the leaderd values from `.Values.leaderd` (the dependency's values, defaults
included); inside this chart they read `.Values`. With a dependency alias, pass a context whose
.Values are the alias's values:
    (dict "Values" .Values.myalias "Release" .Release "Chart" .Chart "Capabilities" .Capabilities)
*/}}

{{/*
leaderd.v: the leaderd values as YAML, for `fromYaml`: `.Values.leaderd` when called from a
parent chart (the dependency's values), else `.Values`. Internal.
*/}}
{{- define "leaderd.v" -}}
{{- if and (hasKey .Values "leaderd") (kindIs "map" .Values.leaderd) -}}
{{- toYaml .Values.leaderd -}}
{{- else -}}
{{- toYaml .Values -}}
{{- end -}}
{{- end -}}

{{/*
leaderd.name: the chart name ("leaderd", or nameOverride), truncated to 63 characters. The
literal "leaderd" (not .Chart.Name) so that a parent chart computes the same names.
*/}}
{{- define "leaderd.name" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- default "leaderd" $v.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
leaderd.fullname: the prefix of every object name: fullnameOverride, else "<release>-<name>"
(just "<release>" when the release name already contains the name), truncated to 63 characters.
*/}}
{{- define "leaderd.fullname" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- if $v.fullnameOverride -}}
{{- $v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "leaderd.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
leaderd.chart: "<chart>-<version>" for the helm.sh/chart label.
*/}}
{{- define "leaderd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
leaderd.selectorLabels: the immutable labels that select this release's objects.
*/}}
{{- define "leaderd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "leaderd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/*
leaderd.labels: the standard labels of every rendered object, plus commonLabels.
*/}}
{{- define "leaderd.labels" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
helm.sh/chart: {{ include "leaderd.chart" . }}
{{ include "leaderd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: leaderd
{{- with $v.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
leaderd.exampleSelectorLabels: the pod labels of the demo Deployment (also the PodMonitor's
default selector).
*/}}
{{- define "leaderd.exampleSelectorLabels" -}}
{{ include "leaderd.selectorLabels" . }}
app.kubernetes.io/component: example
{{- end -}}

{{/*
leaderd.serviceAccountName: the ServiceAccount the candidates' pods must run as: the created one
(serviceAccount.name, default the full name) or the existing serviceAccount.name. Public: use
it for `serviceAccountName:` in your pod template.
*/}}
{{- define "leaderd.serviceAccountName" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- if $v.serviceAccount.create -}}
{{- default (include "leaderd.fullname" .) $v.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false (the existing ServiceAccount to bind)" $v.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
leaderd.leaseName: the Lease name (lease.name, default the full name). Public.
*/}}
{{- define "leaderd.leaseName" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- default (include "leaderd.fullname" .) $v.lease.name -}}
{{- end -}}

{{/*
leaderd.leaseNamespace: the Lease's namespace (lease.namespace, default the release namespace);
the Role and RoleBinding go there.
*/}}
{{- define "leaderd.leaseNamespace" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- default .Release.Namespace $v.lease.namespace -}}
{{- end -}}

{{/*
leaderd.image: "repository:tag", with "@digest" appended when image.digest is set.
*/}}
{{- define "leaderd.image" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- $img := printf "%s:%s" $v.image.repository (toString $v.image.tag) -}}
{{- if $v.image.digest -}}
{{- $img = printf "%s@%s" $img $v.image.digest -}}
{{- end -}}
{{- $img -}}
{{- end -}}

{{/*
leaderd.hostPort: formats (dict "host" H "port" P) as a socket address, bracketing IPv6 hosts.
*/}}
{{- define "leaderd.hostPort" -}}
{{- if contains ":" .host -}}
[{{ .host }}]:{{ int .port }}
{{- else -}}
{{ .host }}:{{ int .port }}
{{- end -}}
{{- end -}}

{{/*
leaderd.probesRendered: "true" when kubelet probes are rendered: probes.enabled and the metrics
listener (which serves /healthz and /readyz too) is not bound to a loopback address (kubelet
probes the pod IP, so a loopback bind could never pass).
*/}}
{{- define "leaderd.probesRendered" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- $host := toString $v.metrics.bindAddress -}}
{{- $loopback := or (hasPrefix "127." $host) (eq $host "::1") (eq $host "localhost") -}}
{{- if and $v.probes.enabled (not $loopback) -}}true{{- end -}}
{{- end -}}

{{/*
leaderd.backend: "kubernetes" or "etcd" (backend, default kubernetes).
*/}}
{{- define "leaderd.backend" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- default "kubernetes" $v.backend -}}
{{- end -}}

{{/*
leaderd.eventsEnabled: "true" when leaderd posts Kubernetes Events: events.enabled true, or
events.enabled null (the default) with backend kubernetes. With etcd the default is off.
*/}}
{{- define "leaderd.eventsEnabled" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- $e := $v.events.enabled -}}
{{- if kindIs "invalid" $e -}}
{{- if eq (include "leaderd.backend" .) "kubernetes" -}}true{{- end -}}
{{- else if $e -}}true{{- end -}}
{{- end -}}

{{/*
leaderd.etcdTLSDir: where the etcd.tls.secretName Secret is mounted (read-only) in the leaderd
container; its ca.crt, tls.crt and tls.key are passed as --etcd-ca-file, --etcd-cert-file and
--etcd-key-file.
*/}}
{{- define "leaderd.etcdTLSDir" -}}
/etc/leaderd/etcd-tls
{{- end -}}

{{/*
leaderd.shards: --shards as a number, "0" when off (shards absent, null or 0).
*/}}
{{- define "leaderd.shards" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- int64 (default 0 $v.shards) -}}
{{- end -}}

{{/*
leaderd.leaseGroups: "true" when leaderd works on more Leases than the one named lease.name:
shards > 0 (a shard group: membership Leases <lease>-m-<8 hex> named after the pods, and the
assignment Lease <lease>-shards, listed and watched by the label leaderd.io/group=<lease>) or a
configFile (whose leases the chart cannot see). The lease rules are then namespace-wide
(leaderd.rbacRules).
*/}}
{{- define "leaderd.leaseGroups" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- if or (gt (int64 (include "leaderd.shards" .)) 0) $v.configFile -}}true{{- end -}}
{{- end -}}

{{/*
leaderd.configDir: where the configFile ConfigMap is mounted (read-only) in the leaderd
container; its key config.yaml is passed as --config.
*/}}
{{- define "leaderd.configDir" -}}
/etc/leaderd
{{- end -}}

{{/*
leaderd.configMapName: the name of the configFile ConfigMap, "<fullname>-config" (the full name
cut to fit the 63 characters the chart keeps names to).
*/}}
{{- define "leaderd.configMapName" -}}
{{- printf "%s-config" (include "leaderd.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{/*
leaderd.validateBackend: fails the render, with a message naming the value, on a combination
leaderd would refuse at start (exit code 64): backend etcd without etcd.endpoints, or with a
Kubernetes-only value set (lease.namespace, election.priority other than 0, events.enabled
true, podLabel.enabled, shards > 0, configFile; the etcd backend has no shard groups); with
backend kubernetes, shards > 0 with a lease name longer than 63 characters (it is the value of
the label leaderd.io/group). Renders nothing. Included by leaderd.args and templates/rbac.yaml.
*/}}
{{- define "leaderd.validateBackend" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- if eq (include "leaderd.backend" .) "etcd" -}}
{{- if not $v.etcd.endpoints -}}
{{- fail "backend etcd needs etcd.endpoints, the etcd client URLs (http:// or https://), e.g. --set 'etcd.endpoints={https://10.0.0.5:2379,https://10.0.0.6:2379}'" -}}
{{- end -}}
{{- if $v.lease.namespace -}}
{{- fail "lease.namespace is Kubernetes-only (the Lease's namespace): leave it empty with backend etcd, where lease.name names the election and etcd.prefix scopes it" -}}
{{- end -}}
{{- if ne (int64 (default 0 $v.election.priority)) 0 -}}
{{- fail "election.priority is Kubernetes-only (a handover through the Lease record): leave it 0 with backend etcd, where the candidate that campaigned first (lowest create revision) leads" -}}
{{- end -}}
{{- if and (kindIs "bool" $v.events.enabled) $v.events.enabled -}}
{{- fail "events.enabled=true is Kubernetes-only (Events are posted on the Lease): leave it unset (null) or false with backend etcd" -}}
{{- end -}}
{{- if $v.podLabel.enabled -}}
{{- fail "podLabel.enabled is Kubernetes-only (leaderd patches its pod through the Kubernetes API, which it does not use with backend etcd): disable it, and route to the leader with /leader instead" -}}
{{- end -}}
{{- if gt (int64 (include "leaderd.shards" .)) 0 -}}
{{- fail "shards is Kubernetes-only (a shard group keeps its members and assignment in Leases; the etcd backend has no shard groups yet): leave it 0 with backend etcd" -}}
{{- end -}}
{{- if $v.configFile -}}
{{- fail "configFile is Kubernetes-only (it names Leases and shard groups; the etcd backend has neither yet): leave it empty with backend etcd" -}}
{{- end -}}
{{- else if gt (int64 (include "leaderd.shards" .)) 0 -}}
{{- if gt (len (include "leaderd.leaseName" .)) 63 -}}
{{- fail (printf "with shards, lease.name %q names a shard group and is the value of the label leaderd.io/group on its Leases: it must be at most 63 characters (it has %d)" (include "leaderd.leaseName" .) (len (include "leaderd.leaseName" .))) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
leaderd.args: leaderd's command-line arguments as a YAML list (one "- --flag=value" per line),
from the values. The feature flags are rendered only when set: --priority when not 0,
--label-pod/--pod-label-key with podLabel.enabled, each hook when not empty (and --hook-timeout
with any of them), --notify-url when not empty, --on-lost when exit, --app-check with its four
timings when appCheck.url is not empty, --shards when shards > 0; with configFile not empty
--config (the mounted file) instead of --lease-name, --shards and the three timing flags (the
file names the leases and groups and their timing; with several, podLabel, the hooks and
notifyUrl fail the render, as leaderd would refuse them); extraArgs last. With backend etcd: --backend=etcd,
--etcd-endpoints (joined with commas), --etcd-prefix when not empty, the three TLS files when
etcd.tls.secretName is set, and none of the Kubernetes-only flags (--namespace, --emit-events,
--priority, --label-pod); with kubernetes no --backend (the default), so the args are those of
before the etcd backend.
leaderd.containerBody refuses a flag given twice (leaderd would exit with code 64). Internal.
*/}}
{{- define "leaderd.args" -}}
{{- include "leaderd.validateBackend" . -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- $etcd := eq (include "leaderd.backend" .) "etcd" -}}
{{- if $etcd }}
- --backend=etcd
{{- end }}
{{- $shards := int64 (include "leaderd.shards" .) }}
{{- if $v.configFile }}
{{- if gt $shards 0 }}
{{- fail "shards and configFile both say what to run: put the group (name, shards, timing) into configFile and leave shards at 0" -}}
{{- end }}
{{- $file := $v.configFile | fromYaml }}
{{- $entries := add (len ($file.leases | default list)) (len ($file.groups | default list)) }}
{{- if and (gt (int64 $entries) 1) (or $v.podLabel.enabled $v.hooks.onStartedLeading $v.hooks.onStoppedLeading $v.hooks.onNewLeader $v.notifyUrl) }}
{{- fail (printf "configFile names %d leases and groups, but podLabel, hooks and notifyUrl act for one lease (leaderd would exit 64): turn them off, or give that lease a release of its own" (int64 $entries)) -}}
{{- end }}
- --config={{ include "leaderd.configDir" . }}/config.yaml
{{- else }}
- --lease-name={{ include "leaderd.leaseName" . }}
{{- if gt $shards 0 }}
- --shards={{ $shards }}
{{- end }}
{{- end }}
{{- if $etcd }}
- {{ printf "--etcd-endpoints=%s" (join "," $v.etcd.endpoints) | quote }}
{{- with $v.etcd.prefix }}
- {{ printf "--etcd-prefix=%s" . | quote }}
{{- end }}
{{- if $v.etcd.tls.secretName }}
{{- $dir := include "leaderd.etcdTLSDir" . }}
- --etcd-ca-file={{ $dir }}/ca.crt
- --etcd-cert-file={{ $dir }}/tls.crt
- --etcd-key-file={{ $dir }}/tls.key
{{- end }}
{{- end }}
{{- with $v.lease.namespace }}
- --namespace={{ . }}
{{- end }}
{{- if not $v.configFile }}
- --lease-duration={{ $v.election.leaseDuration }}
- --renew-deadline={{ $v.election.renewDeadline }}
- --retry-period={{ $v.election.retryPeriod }}
{{- end }}
- --http-addr={{ include "leaderd.hostPort" (dict "host" (toString $v.http.bindAddress) "port" $v.http.port) }}
- --metrics-addr={{ include "leaderd.hostPort" (dict "host" (toString $v.metrics.bindAddress) "port" $v.metrics.port) }}
- --http-max-connections={{ int64 $v.http.maxConnections }}
- --http-idle-timeout={{ $v.http.idleTimeout }}
- --release-on-shutdown={{ $v.election.releaseOnShutdown }}
{{- if not $etcd }}
- --emit-events={{ if include "leaderd.eventsEnabled" . }}true{{ else }}false{{ end }}
{{- end }}
- --log-format={{ $v.logging.format }}
{{- with $v.logging.level }}
- --log-level={{ . }}
{{- end }}
{{- if ne (int64 (default 0 $v.election.priority)) 0 }}
- --priority={{ int64 $v.election.priority }}
{{- end }}
{{- if $v.podLabel.enabled }}
- --label-pod=true
- --pod-label-key={{ $v.podLabel.key }}
{{- end }}
{{- with $v.hooks.onStartedLeading }}
- {{ printf "--on-started-leading=%s" . | quote }}
{{- end }}
{{- with $v.hooks.onStoppedLeading }}
- {{ printf "--on-stopped-leading=%s" . | quote }}
{{- end }}
{{- with $v.hooks.onNewLeader }}
- {{ printf "--on-new-leader=%s" . | quote }}
{{- end }}
{{- if or $v.hooks.onStartedLeading $v.hooks.onStoppedLeading $v.hooks.onNewLeader }}
- --hook-timeout={{ $v.hooks.timeout }}
{{- end }}
{{- with $v.notifyUrl }}
- {{ printf "--notify-url=%s" . | quote }}
{{- end }}
{{- if eq (toString $v.onLost) "exit" }}
- --on-lost=exit
{{- end }}
{{- with $v.appCheck.url }}
- {{ printf "--app-check=%s" . | quote }}
- --app-check-interval={{ $v.appCheck.interval }}
- --app-check-timeout={{ $v.appCheck.timeout }}
- --app-check-failures={{ int64 $v.appCheck.failures }}
- --app-check-successes={{ int64 $v.appCheck.successes }}
{{- end }}
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/*
leaderd.containerBody: the leaderd container without the list dash: image, args from the
values (leaderd.args; a flag given twice fails the render with a clear message),
POD_NAME/POD_NAMESPACE from the downward API (POD_NAME only with backend etcd: the identity),
the etcd TLS Secret's mount (etcd.tls.secretName), the configFile ConfigMap's mount (the
volumes are leaderd.volumes) and extraVolumeMounts, the http and metrics ports, probes,
resources and the hardened securityContext. Internal; see leaderd.container.
*/}}
{{- define "leaderd.containerBody" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
name: leaderd
image: {{ include "leaderd.image" . | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- $args := include "leaderd.args" . | trim }}
{{- $seen := list }}
{{- range fromYamlArray $args }}
{{- $flag := regexFind "^--[a-z0-9-]+" (toString .) }}
{{- if has $flag $seen }}
{{- fail (printf "leaderd would get %s twice and refuse to start (a flag may be given once): remove it from extraArgs and set the chart value that renders it instead" $flag) }}
{{- end }}
{{- $seen = append $seen $flag }}
{{- end }}
args:
  {{- $args | nindent 2 }}
env:
  - name: POD_NAME
    valueFrom:
      fieldRef:
        fieldPath: metadata.name
  {{- if eq (include "leaderd.backend" .) "kubernetes" }}
  - name: POD_NAMESPACE
    valueFrom:
      fieldRef:
        fieldPath: metadata.namespace
  {{- end }}
  {{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- $etcdTLS := and (eq (include "leaderd.backend" .) "etcd") $v.etcd.tls.secretName }}
{{- if or $etcdTLS $v.configFile $v.extraVolumeMounts }}
volumeMounts:
  {{- if $etcdTLS }}
  - name: leaderd-etcd-tls
    mountPath: {{ include "leaderd.etcdTLSDir" . }}
    readOnly: true
  {{- end }}
  {{- if $v.configFile }}
  - name: leaderd-config
    mountPath: {{ include "leaderd.configDir" . }}
    readOnly: true
  {{- end }}
  {{- with $v.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}
ports:
  - name: {{ $v.http.portName }}
    containerPort: {{ int $v.http.port }}
    protocol: TCP
  - name: {{ $v.metrics.portName }}
    containerPort: {{ int $v.metrics.port }}
    protocol: TCP
{{- if include "leaderd.probesRendered" . }}
startupProbe:
  httpGet:
    path: /healthz
    port: {{ $v.metrics.portName }}
  periodSeconds: {{ int $v.probes.startup.periodSeconds }}
  timeoutSeconds: {{ int $v.probes.startup.timeoutSeconds }}
  failureThreshold: {{ int $v.probes.startup.failureThreshold }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ $v.metrics.portName }}
  periodSeconds: {{ int $v.probes.liveness.periodSeconds }}
  timeoutSeconds: {{ int $v.probes.liveness.timeoutSeconds }}
  failureThreshold: {{ int $v.probes.liveness.failureThreshold }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ $v.metrics.portName }}
  periodSeconds: {{ int $v.probes.readiness.periodSeconds }}
  timeoutSeconds: {{ int $v.probes.readiness.timeoutSeconds }}
  failureThreshold: {{ int $v.probes.readiness.failureThreshold }}
{{- end }}
{{- with $v.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml $v.securityContext | nindent 2 }}
terminationMessagePolicy: FallbackToLogsOnError
{{- end -}}

{{/*
leaderd.container: the leaderd sidecar as one item of a pod's `containers:` list. Public:
    containers:
      {{- include "leaderd.container" . | nindent 8 }}
*/}}
{{- define "leaderd.container" -}}
- {{ include "leaderd.containerBody" . | indent 2 | trim }}
{{- end -}}

{{/*
leaderd.nativeSidecar: the same container as one item of a pod's `initContainers:` list with
`restartPolicy: Always` (a native sidecar, Kubernetes >= 1.29): it starts (and passes its
startup probe) before the app containers and is stopped after them. Public:
    initContainers:
      {{- include "leaderd.nativeSidecar" . | nindent 8 }}
*/}}
{{- define "leaderd.nativeSidecar" -}}
{{- if semverCompare "<1.29-0" .Capabilities.KubeVersion.Version -}}
{{- fail (printf "leaderd.nativeSidecar needs Kubernetes >= 1.29 (this is %s): use leaderd.container" .Capabilities.KubeVersion.Version) -}}
{{- end -}}
- {{ include "leaderd.containerBody" . | indent 2 | trim }}
  restartPolicy: Always
{{- end -}}

{{/*
leaderd.volumes: the pod volumes the leaderd container mounts, as items of a pod's `volumes:`
list: with backend etcd and etcd.tls.secretName, the Secret "leaderd-etcd-tls" (mode 0444: the
container runs as UID 65532 without an fsGroup); with configFile, the ConfigMap
"<fullname>-config" as volume "leaderd-config" (mode 0444); otherwise nothing. Public:
    {{- with include "leaderd.volumes" . }}
      volumes:
        {{- . | nindent 8 }}
    {{- end }}
*/}}
{{- define "leaderd.volumes" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- $tls := and (eq (include "leaderd.backend" .) "etcd") $v.etcd.tls.secretName -}}
{{- if $tls -}}
- name: leaderd-etcd-tls
  secret:
    secretName: {{ $v.etcd.tls.secretName }}
    defaultMode: 0444
{{- end -}}
{{- if $v.configFile -}}
{{- if $tls }}
{{ end -}}
- name: leaderd-config
  configMap:
    name: {{ include "leaderd.configMapName" . }}
    defaultMode: 0444
{{- end -}}
{{- end -}}

{{/*
leaderd.automountServiceAccountToken: "false" with backend etcd (leaderd never talks to the
Kubernetes API, so the pods need no token), else "true". Public: for
`automountServiceAccountToken:` in your pod template.
*/}}
{{- define "leaderd.automountServiceAccountToken" -}}
{{- if eq (include "leaderd.backend" .) "etcd" -}}false{{- else -}}true{{- end -}}
{{- end -}}

{{/*
leaderd.rbacRules: the Role's rules. Leases: get, update, watch on the one Lease (resourceNames;
leaderd watches with fieldSelector=metadata.name=NAME, which resourceNames permits) and create
(which RBAC cannot restrict by name). With shards > 0 or configFile (leaderd.leaseGroups) one
namespace-wide rule instead: leases get, list, watch, create, update (member Lease names derive
from pod names, and a list or watch by label selector cannot be limited by resourceNames).
Events (events.k8s.io): create, patch, only when events.enabled. Pods: get, patch (for
--label-pod), only when podLabel.enabled and the Lease lives in the release namespace; otherwise
leaderd.podLabelRules go into a Role of their own in the release namespace (see
leaderd.podLabelRoleSeparate). Never delete.
*/}}
{{- define "leaderd.rbacRules" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- if include "leaderd.leaseGroups" . -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update"]
{{- else -}}
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  resourceNames: [{{ include "leaderd.leaseName" . | quote }}]
  verbs: ["get", "update", "watch"]
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["create"]
{{- end }}
{{- if include "leaderd.eventsEnabled" . }}
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
{{- if and $v.podLabel.enabled (not (include "leaderd.podLabelRoleSeparate" .)) }}
{{ include "leaderd.podLabelRules" . }}
{{- end }}
{{- end -}}

{{/*
leaderd.podLabelRules: the rule --label-pod needs: pods get, patch. Namespace-wide, because RBAC
cannot name pods that do not exist yet (resourceNames would have to list every future pod).
*/}}
{{- define "leaderd.podLabelRules" -}}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "patch"]
{{- end -}}

{{/*
leaderd.podLabelRoleSeparate: "true" when podLabel.enabled and the Lease's namespace is not the
release namespace. leaderd labels its own pod, in its own namespace (POD_NAMESPACE), so the pods
rule then needs a Role and RoleBinding of its own in the release namespace (rbac.yaml).
*/}}
{{- define "leaderd.podLabelRoleSeparate" -}}
{{- $v := include "leaderd.v" . | fromYaml -}}
{{- if and $v.podLabel.enabled (ne (include "leaderd.leaseNamespace" .) .Release.Namespace) -}}true{{- end -}}
{{- end -}}

{{/*
leaderd.leaderServiceName: the name of the demo's leader Service, "<fullname>-leader" (the full
name cut to fit the 63 characters of a Service name).
*/}}
{{- define "leaderd.leaderServiceName" -}}
{{- printf "%s-leader" (include "leaderd.fullname" . | trunc 56 | trimSuffix "-") -}}
{{- end -}}

{{/*
leaderd.monitoringEnabled: "true" when the Prometheus Operator object named by .kind
("podMonitor" or "prometheusRule") is to be rendered: enabled, and either the cluster serves
monitoring.coreos.com/v1 or force is set. Call with (dict "root" $ "kind" "podMonitor").
*/}}
{{- define "leaderd.monitoringEnabled" -}}
{{- $v := include "leaderd.v" .root | fromYaml -}}
{{- $m := get $v.monitoring .kind -}}
{{- if and $m.enabled (or $m.force (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1")) -}}true{{- end -}}
{{- end -}}

{{/*
leaderd.demoLeaderPath: the path the demo app polls: /leader, or with a configFile of several
entries the first lease's /leases/NAME/leader (else the first group's coordinator,
/groups/NAME/leader), since leaderd then serves each entry under its name. Internal.
*/}}
{{- define "leaderd.demoLeaderPath" -}}
{{- $file := dict -}}
{{- with .Values.configFile }}{{ $file = . | fromYaml }}{{ end -}}
{{- $leases := $file.leases | default list -}}
{{- $groups := $file.groups | default list -}}
{{- if le (add (len $leases) (len $groups)) 1 -}}
/leader
{{- else if $leases -}}
/leases/{{ (index $leases 0).name }}/leader
{{- else -}}
/groups/{{ (index $groups 0).name }}/leader
{{- end -}}
{{- end -}}
