{{/* Names, labels and the shared pieces of every service's Deployment. */}}

{{- define "langerhans.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "langerhans.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Common labels; pass (dict "root" $ "component" "gateway"). */}}
{{- define "langerhans.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "langerhans.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: langerhans
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{- define "langerhans.selectorLabels" -}}
app.kubernetes.io/name: {{ include "langerhans.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "langerhans.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{- define "langerhans.kafkaBootstrap" -}}
{{- if .Values.kafka.strimzi.enabled -}}
{{ include "langerhans.fullname" . }}-kafka-kafka-bootstrap:9092
{{- else -}}
{{ .Values.kafka.bootstrapServers }}
{{- end -}}
{{- end -}}

{{/* Secret names: the existing Secret when given, else the chart-managed one. */}}
{{- define "langerhans.secretName" -}}
{{- $block := index .root.Values.secrets .block -}}
{{- $block.existingSecret | default (printf "%s-%s" (include "langerhans.fullname" .root) .suffix) -}}
{{- end -}}

{{- define "langerhans.databaseSecretName" -}}
{{- .Values.postgresql.existingSecret | default (printf "%s-database" (include "langerhans.fullname" .)) -}}
{{- end -}}

{{- define "langerhans.databaseSecretKey" -}}
{{- if .Values.postgresql.existingSecret -}}{{ .Values.postgresql.existingSecretKey }}{{- else -}}database-url{{- end -}}
{{- end -}}

{{/* checkov skip annotations with their justification (values: securityCheckExceptions). */}}
{{- define "langerhans.securityCheckAnnotations" -}}
{{- range $i, $e := .Values.securityCheckExceptions }}
checkov.io/skip{{ add1 $i }}: {{ printf "%s=%s" $e.id $e.reason | quote }}
{{- end }}
{{- end -}}

{{/* checksum/config: any change of configuration or key material rolls the pods. */}}
{{- define "langerhans.configChecksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
checksum/secrets: {{ include (print .Template.BasePath "/secrets.yaml") . | sha256sum }}
{{- end -}}

{{/* Environment every container (services and Jobs) gets. */}}
{{- define "langerhans.commonEnv" -}}
- name: LANGERHANS_ENVIRONMENT
  value: {{ .Values.environment | quote }}
- name: KAFKA_BOOTSTRAP_SERVERS
  valueFrom:
    configMapKeyRef:
      name: {{ include "langerhans.fullname" . }}-config
      key: kafka-bootstrap-servers
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "langerhans.databaseSecretName" . }}
      key: {{ include "langerhans.databaseSecretKey" . }}
- name: LANGERHANS_LOG_LEVEL
  value: {{ .Values.logLevel | quote }}
- name: LANGERHANS_LOG_JSON
  value: "true"
- name: LANGERHANS_GRPC_TLS_CERT_PATH
  value: /etc/langerhans/grpc-tls/tls.crt
- name: LANGERHANS_GRPC_TLS_KEY_PATH
  value: /etc/langerhans/grpc-tls/tls.key
- name: LANGERHANS_GRPC_TLS_CA_PATH
  value: /etc/langerhans/grpc-tls/ca.crt
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Writable scratch space and the gRPC TLS material, mounted in every pod. */}}
{{- define "langerhans.commonVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: state
  emptyDir:
    sizeLimit: {{ .Values.stateSizeLimit }}
- name: grpc-tls
  secret:
    secretName: {{ include "langerhans.secretName" (dict "root" . "block" "grpcTls" "suffix" "grpc-tls") }}
    defaultMode: 0440
{{- end -}}

{{- define "langerhans.commonVolumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: state
  mountPath: /var/lib/langerhans
- name: grpc-tls
  mountPath: /etc/langerhans/grpc-tls
  readOnly: true
{{- end -}}

{{/*
A gRPC service's Deployment, ServiceAccount, Service, HPA and PDB.
Pass (dict "root" $ "component" "cgm-ingestion" "values" .Values.cgmIngestion
           "env" (list of env entries as YAML string) "volumes" "" "volumeMounts" ""
           "extraPorts" "" ).
*/}}
{{- define "langerhans.workload" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $name := printf "%s-%s" (include "langerhans.fullname" $root) .component -}}
{{- $labels := dict "root" $root "component" .component -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "langerhans.labels" $labels | nindent 4 }}
# Services never call the Kubernetes API: no token in the pods.
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "langerhans.labels" $labels | nindent 4 }}
  annotations:
    {{- include "langerhans.securityCheckAnnotations" $root | nindent 4 }}
spec:
  {{- if not $v.autoscaling.enabled }}
  replicas: {{ $v.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      # Bring a new pod up before taking an old one down: capacity never drops.
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "langerhans.selectorLabels" $labels | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "langerhans.labels" $labels | nindent 8 }}
      annotations:
        {{- include "langerhans.configChecksums" $root | nindent 8 }}
        {{- include "langerhans.securityCheckAnnotations" $root | nindent 8 }}
    spec:
      serviceAccountName: {{ $name }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      terminationGracePeriodSeconds: 30
      {{- with $root.Values.image.pullSecrets }}
      imagePullSecrets:
        {{- range . }}
        - name: {{ . }}
        {{- end }}
      {{- end }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      containers:
        - name: {{ .component }}
          image: {{ include "langerhans.image" $root }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ toJson .args }}
          securityContext:
            {{- toYaml $root.Values.containerSecurityContext | nindent 12 }}
          ports:
            {{- if eq .kind "grpc" }}
            - name: metrics
              containerPort: {{ $root.Values.ports.metrics }}
              protocol: TCP
            - name: grpc
              containerPort: {{ $root.Values.ports.grpc }}
              protocol: TCP
            - name: grpc-health
              containerPort: {{ $root.Values.ports.grpcHealth }}
              protocol: TCP
            {{- else }}
            - name: http
              containerPort: {{ $root.Values.ports.http }}
              protocol: TCP
            # /metrics on a port of its own: the Ingress routes only the http port.
            - name: metrics
              containerPort: {{ $root.Values.ports.metrics }}
              protocol: TCP
            {{- end }}
            {{- with .extraPorts }}
            {{- . | nindent 12 }}
            {{- end }}
          env:
            - name: LANGERHANS_SERVICE_NAME
              value: {{ .component | quote }}
            - name: LANGERHANS_GRPC_HOST
              value: "0.0.0.0"
            - name: LANGERHANS_GRPC_PORT
              value: {{ $root.Values.ports.grpc | quote }}
            - name: LANGERHANS_GRPC_HEALTH_PORT
              value: {{ $root.Values.ports.grpcHealth | quote }}
            - name: LANGERHANS_METRICS_HOST
              value: "0.0.0.0"
            - name: LANGERHANS_METRICS_PORT
              value: {{ $root.Values.ports.metrics | quote }}
            {{- include "langerhans.commonEnv" $root | nindent 12 }}
            {{- with .env }}
            {{- . | nindent 12 }}
            {{- end }}
            {{- range $k, $val := $v.env }}
            - name: {{ $k }}
              value: {{ $val | quote }}
            {{- end }}
          {{- if eq .kind "grpc" }}
          # Native gRPC probes on the plain-text health-only port (kubelet probes cannot do TLS).
          startupProbe:
            grpc:
              port: {{ $root.Values.ports.grpcHealth }}
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            grpc:
              port: {{ $root.Values.ports.grpcHealth }}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            grpc:
              port: {{ $root.Values.ports.grpcHealth }}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- else }}
          startupProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 2
            failureThreshold: 60
          livenessProbe:
            httpGet:
              path: /healthz
              port: http
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 3
          readinessProbe:
            httpGet:
              path: /readyz
              port: http
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 2
          {{- end }}
          resources:
            {{- toYaml $v.resources | nindent 12 }}
          volumeMounts:
            {{- include "langerhans.commonVolumeMounts" $root | nindent 12 }}
            {{- with .volumeMounts }}
            {{- . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "langerhans.commonVolumes" $root | nindent 8 }}
        {{- with .volumes }}
        {{- . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      affinity:
        {{- if $v.affinity }}
        {{- toYaml $v.affinity | nindent 8 }}
        {{- else }}
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm:
                topologyKey: kubernetes.io/hostname
                labelSelector:
                  matchLabels:
                    {{- include "langerhans.selectorLabels" $labels | nindent 20 }}
        {{- end }}
      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: topology.kubernetes.io/zone
          whenUnsatisfiable: ScheduleAnyway
          labelSelector:
            matchLabels:
              {{- include "langerhans.selectorLabels" $labels | nindent 14 }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "langerhans.labels" $labels | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "langerhans.selectorLabels" $labels | nindent 4 }}
  ports:
    {{- if eq .kind "grpc" }}
    - name: grpc
      port: {{ $root.Values.ports.grpc }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $root.Values.ports.metrics }}
      targetPort: metrics
      protocol: TCP
    {{- else }}
    - name: http
      port: 80
      targetPort: http
      protocol: TCP
    - name: metrics
      port: {{ $root.Values.ports.metrics }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- if $v.autoscaling.enabled }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "langerhans.labels" $labels | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $name }}
  minReplicas: {{ $v.autoscaling.minReplicas }}
  maxReplicas: {{ $v.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $v.autoscaling.targetCPUUtilizationPercentage }}
  behavior:
    scaleDown:
      # Every scale-down rebalances consumer groups; do it slowly.
      stabilizationWindowSeconds: 600
      policies:
        - type: Pods
          value: 1
          periodSeconds: 120
{{- end }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "langerhans.labels" $labels | nindent 4 }}
spec:
  maxUnavailable: {{ $v.pdbMaxUnavailable }}
  selector:
    matchLabels:
      {{- include "langerhans.selectorLabels" $labels | nindent 6 }}
{{- if $root.Values.monitoring.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "langerhans.labels" $labels | nindent 4 }}
    {{- with $root.Values.monitoring.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "langerhans.selectorLabels" $labels | nindent 6 }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ $root.Values.monitoring.serviceMonitor.interval }}
{{- end }}
{{- end -}}

{{/*
NetworkPolicy of one service: egress to DNS, Kafka and PostgreSQL always; the ingress rules
and extra egress rules come from the caller as YAML strings.
*/}}
{{- define "langerhans.networkPolicy" -}}
{{- $root := .root -}}
{{- $labels := dict "root" $root "component" .component -}}
{{- if $root.Values.networkPolicy.enabled }}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "langerhans.fullname" $root }}-{{ .component }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "langerhans.labels" $labels | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "langerhans.selectorLabels" $labels | nindent 6 }}
  policyTypes:
    - Ingress
    - Egress
  ingress:
    - from:
        {{- toYaml $root.Values.networkPolicy.metricsPeers | nindent 8 }}
      ports:
        - port: {{ .metricsPort | default $root.Values.ports.metrics }}
          protocol: TCP
    {{- with .ingress }}
    {{- . | nindent 4 }}
    {{- end }}
  egress:
    {{- include "langerhans.dependencyEgress" $root | nindent 4 }}
    {{- with .egress }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}

{{/* Egress every workload (services and Jobs) needs: DNS, Kafka, PostgreSQL. */}}
{{- define "langerhans.dependencyEgress" -}}
- to:
    {{- toYaml .Values.networkPolicy.dnsPeers | nindent 4 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
- {{- if .Values.kafka.strimzi.enabled }}
  to:
    - podSelector:
        matchLabels:
          strimzi.io/cluster: {{ include "langerhans.fullname" . }}-kafka
  {{- else if .Values.kafka.networkPolicyPeers }}
  to:
    {{- toYaml .Values.kafka.networkPolicyPeers | nindent 4 }}
  {{- end }}
  ports:
    {{- if .Values.kafka.strimzi.enabled }}
    - port: 9092
      protocol: TCP
    {{- else }}
    {{- range .Values.kafka.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
    {{- end }}
- {{- with .Values.postgresql.networkPolicyPeers }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  ports:
    - port: {{ .Values.postgresql.port }}
      protocol: TCP
{{- end -}}

{{/* Ingress rule admitting the gateway's pods to a gRPC service. */}}
{{- define "langerhans.fromGateway" -}}
- from:
    - podSelector:
        matchLabels:
          {{- include "langerhans.selectorLabels" (dict "root" . "component" "gateway") | nindent 10 }}
  ports:
    - port: {{ .Values.ports.grpc }}
      protocol: TCP
{{- end -}}
