#!/usr/bin/env bash
# End-to-end with the image under a real OCI runtime (podman + runc): builds localhost/leaderd:dev
# from the Dockerfile's final stage (scripts/build-image.sh: nothing pulled) and runs three
# containers of it the way a pod would: read-only root, UID/GID 65532, every capability
# dropped, no new privileges, host network with every listener on 127.0.0.1, the kubeconfig
# mounted read-only. Two scenarios, the same checks in each:
#   1. against the Lease API test server (leaderd-testserver, plain http://, no CA: the case
#      that needs the image's CA bundle), lease image-e2e;
#   2. against the real kube-apiserver + etcd of scripts/kube-apiserver.sh (https with the
#      cluster's CA, a ServiceAccount token bound by the chart's RBAC), lease leaderd-example.
# Checks: one leader elected; `podman kill` of the leader -> another leads with a higher epoch
# within lease-duration + retry-period (+ slack); `podman stop` of the new leader (SIGTERM) ->
# the last one leads within HANDOVER_MAX_MS and the stopped container exits 0; never two
# leaders at once in any sample. Containers, the test server and the apiserver are stopped
# and removed at the end, also on failure.
#
#   scripts/e2e-image.sh          (root, Debian: installs podman/buildah/runc if missing; builds
#                                  the static binary and the apiserver if missing)
# Env: CARGO_TARGET_DIR: where check-static-binary.sh built the static binary (as there: default
# $HOME/.cache/leaderd/static-target) and where the debug leaderd-testserver is built (default
# target); LEADERD_STATIC_BIN, LEADERD_IMAGE: see scripts/build-image.sh;
# LEADERD_E2E_IMAGE_SCENARIOS: "ts kas" (default), "ts" or "kas".
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/podman.sh
source scripts/lib/podman.sh
export CARGO_TERM_COLOR=never
# The static binary is found like check-static-binary.sh puts it: $CARGO_TARGET_DIR if set (CI),
# else $HOME/.cache/leaderd/static-target; the debug test server in ${CARGO_TARGET_DIR:-target}.
DEBUG_TARGET="${CARGO_TARGET_DIR:-target}"

# Short timings: failover takes about a lease duration.
LEASE_DURATION_MS=2000
RENEW_DEADLINE_MS=1500
RETRY_PERIOD_MS=250
TIMING_FLAGS=(--lease-duration "${LEASE_DURATION_MS}ms" --renew-deadline "${RENEW_DEADLINE_MS}ms"
              --retry-period "${RETRY_PERIOD_MS}ms")
FIRST_LEADER_MAX_MS=20000                                      # cold start: create, then wait out a lease
FAILOVER_MAX_MS=$((LEASE_DURATION_MS + RETRY_PERIOD_MS + 750)) # D + R + slack (polling, API, 2 busy cores)
HANDOVER_MAX_MS=1500                                           # from `podman stop` to the next leader
CANDIDATES=3

now_ms() { date +%s%3N; }
PASSED=0
FAILED=0
ok() { PASSED=$((PASSED + 1)); echo "ok    $*"; }
bad() { FAILED=$((FAILED + 1)); echo "FAIL  $*"; }

work=$(mktemp -d)
chmod 0755 "$work"
CONTAINERS=()
TS_PID=""
KAS_DIR=""
cleanup() {
  local c
  for c in "${CONTAINERS[@]}"; do pm rm --force --time 0 "$c" >/dev/null 2>&1 || true; done
  if [[ -n "$TS_PID" ]]; then kill "$TS_PID" 2>/dev/null || true; fi
  if [[ -n "$KAS_DIR" ]]; then bash scripts/kube-apiserver.sh stop "$KAS_DIR" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- setup -------------------------------------------------------------------------------------
echo "== podman, buildah, runc ($(date -u +%H:%M:%S))"
t=$(now_ms)
ensure_podman
echo "$(podman --version), $(runc --version | head -1) ($(($(now_ms) - t)) ms)"

echo "== image ($(date -u +%H:%M:%S))"
t=$(now_ms)
bash scripts/build-image.sh
echo "image step: $(($(now_ms) - t)) ms"

echo "== leaderd-testserver (debug, $DEBUG_TARGET)"
t=$(now_ms)
CARGO_TARGET_DIR="$DEBUG_TARGET" cargo build --locked --quiet -p leaderd-testkit --bin leaderd-testserver
TESTSERVER="$DEBUG_TARGET/debug/leaderd-testserver"
echo "test server binary: $(($(now_ms) - t)) ms"

# --- one scenario ------------------------------------------------------------------------------
# Per candidate i (1..CANDIDATES): container NAME[i], app API port HTTP[i].
NAMES=()
HTTP=()

# start_candidates TAG KUBECONFIG LEASE: runs the containers.
start_candidates() {
  local tag="$1" kc="$2" lease="$3" i name hp mp
  NAMES=(); HTTP=()
  chmod 0644 "$kc"   # read by UID 65532 inside the container
  for i in $(seq 1 "$CANDIDATES"); do
    name="leaderd-e2e-$$-$tag-$i"
    hp=$(free_port); mp=$(free_port)
    CONTAINERS+=("$name"); NAMES[i]="$name"; HTTP[i]="$hp"
    pm run --detach --name "$name" \
      --read-only --read-only-tmpfs=false --user 65532:65532 --cap-drop ALL --security-opt no-new-privileges \
      --network host --volume "$kc:/etc/leaderd/kubeconfig:ro" --env KUBECONFIG=/etc/leaderd/kubeconfig \
      "$LEADERD_IMAGE" --lease-name "$lease" --identity "$tag-$i" "${TIMING_FLAGS[@]}" \
      --http-addr "127.0.0.1:$hp" --metrics-addr "127.0.0.1:$mp" >/dev/null \
      || { bad "$tag: podman run $name failed"; return 1; }
  done
}

# sample: one /leader poll of every live candidate; sets LEADERS (indices that lead now) and
# EPOCHS[i]. A stopped candidate answers nothing and is skipped.
declare -a EPOCHS
SAMPLES=0
sample() {
  local i body
  SAMPLES=$((SAMPLES + 1))
  LEADERS=()
  for i in $(seq 1 "$CANDIDATES"); do
    body=$(curl -s --max-time 1 "http://127.0.0.1:${HTTP[i]}/leader" 2>/dev/null) || continue
    EPOCHS[i]=$(sed -n 's/.*"epoch": *\([0-9][0-9]*\).*/\1/p' <<<"$body")
    if grep -q '"is_leader": *true' <<<"$body"; then LEADERS+=("$i"); fi
  done
  if ((${#LEADERS[@]} > 1)); then
    # The polls are sequential: a graceful handover can complete between two of them. Ask again
    # in reverse order: a candidate that still leads after a later one was seen leading is a
    # real overlap (a releasing leader stops claiming before it writes the release).
    local again=() j
    for ((j = ${#LEADERS[@]} - 1; j >= 0; j--)); do
      i=${LEADERS[j]}
      body=$(curl -s --max-time 1 "http://127.0.0.1:${HTTP[i]}/leader" 2>/dev/null) || continue
      if grep -q '"is_leader": *true' <<<"$body"; then again+=("$i"); fi
    done
    if ((${#again[@]} > 1)); then
      bad "two leaders at once: candidates ${again[*]} (epochs ${EPOCHS[*]})"
      return 1
    fi
    LEADERS=("${again[@]}")
  fi
}

# wait_leader MAX_MS MIN_EPOCH: polls until one candidate leads with epoch >= MIN_EPOCH; sets
# LEADER and EPOCH; returns 1 if that is not seen within MAX_MS.
wait_leader() {
  local max="$1" min_epoch="$2" start i
  start=$(now_ms)
  while :; do
    sample || return 1
    if ((${#LEADERS[@]} == 1)); then
      i=${LEADERS[0]}
      if [[ -n "${EPOCHS[i]}" ]] && ((EPOCHS[i] >= min_epoch)); then
        LEADER=$i; EPOCH=${EPOCHS[i]}
        # Seen at the end of the sample: late is late, even if it led a little earlier.
        (($(now_ms) - start <= max)) && return 0
        return 1
      fi
    fi
    if (($(now_ms) - start > max)); then return 1; fi
    sleep 0.05
  done
}

dump_logs() {
  local i
  for i in $(seq 1 "$CANDIDATES"); do
    echo "-- ${NAMES[i]}: $(pm inspect --format '{{.State.Status}} exit={{.State.ExitCode}}' "${NAMES[i]}" 2>&1)"
    pm logs --tail 15 "${NAMES[i]}" 2>&1 | sed 's/^/   /'
  done
}

# scenario TAG KUBECONFIG LEASE: the checks; returns 1 at the first failure.
scenario() {
  local tag="$1" kc="$2" lease="$3" first old t state code stop_ms pid status
  t=$(now_ms)
  start_candidates "$tag" "$kc" "$lease" || return 1
  SAMPLES=0
  echo "      $CANDIDATES containers started in $(($(now_ms) - t)) ms"
  if ! wait_leader "$FIRST_LEADER_MAX_MS" 1; then
    bad "$tag: no leader within ${FIRST_LEADER_MAX_MS} ms"; dump_logs; return 1
  fi
  ok "$tag: ${NAMES[LEADER]} leads with epoch $EPOCH, $(($(now_ms) - t)) ms after the first podman run"
  # What the runtime gave the process, read from the host's /proc.
  pid=$(pm inspect --format '{{.State.Pid}}' "${NAMES[LEADER]}")
  status=$(grep -E '^(Uid|Gid|CapEff|CapPrm|NoNewPrivs):' "/proc/$pid/status" | tr -s '\t' ' ' | tr '\n' ' ')
  if [[ "$status" =~ Uid:\ 65532\ 65532\ 65532\ 65532 && "$status" =~ Gid:\ 65532\ 65532\ 65532\ 65532 \
        && "$status" =~ CapPrm:\ 0000000000000000 && "$status" =~ CapEff:\ 0000000000000000 && "$status" =~ NoNewPrivs:\ 1 \
        && "$(pm inspect --format '{{.HostConfig.ReadonlyRootfs}}' "${NAMES[LEADER]}")" == true ]]; then
    ok "$tag: the leader runs as UID/GID 65532, no capabilities, no new privileges, read-only root ($status)"
  else
    bad "$tag: the leader's process is not confined as asked: $status"; return 1
  fi
  first=$LEADER; old=$EPOCH

  # Crash failover: SIGKILL, no release; the others wait out the lease.
  t=$(now_ms)
  pm kill --signal KILL "${NAMES[first]}" >/dev/null
  if ! wait_leader "$FAILOVER_MAX_MS" $((old + 1)); then
    bad "$tag: no new leader with epoch > $old within ${FAILOVER_MAX_MS} ms of podman kill"; dump_logs; return 1
  fi
  ok "$tag: podman kill ${NAMES[first]} -> ${NAMES[LEADER]} leads with epoch $EPOCH after $(($(now_ms) - t)) ms (bound ${FAILOVER_MAX_MS} ms = lease-duration + retry-period + 750 ms)"
  local second=$LEADER; old=$EPOCH

  # Graceful handover: SIGTERM, the leader releases the Lease and exits 0.
  t=$(now_ms)
  pm stop --time 10 "${NAMES[second]}" >"$work/stop-$tag.out" 2>&1 &
  local stop_pid=$!
  if ! wait_leader "$HANDOVER_MAX_MS" $((old + 1)); then
    bad "$tag: no new leader with epoch > $old within ${HANDOVER_MAX_MS} ms of podman stop"; wait "$stop_pid" || true; dump_logs; return 1
  fi
  local handover_ms=$(($(now_ms) - t)) third=$LEADER
  wait "$stop_pid" || { bad "$tag: podman stop failed: $(cat "$work/stop-$tag.out")"; return 1; }
  stop_ms=$(($(now_ms) - t))
  ok "$tag: podman stop ${NAMES[second]} -> ${NAMES[third]} leads with epoch $EPOCH after ${handover_ms} ms (bound ${HANDOVER_MAX_MS} ms)"
  code=$(pm wait "${NAMES[second]}" 2>/dev/null | tail -1)
  state=$(pm inspect --format '{{.State.Status}} exit={{.State.ExitCode}}' "${NAMES[second]}")
  if [[ "$code" == 0 && "$state" == "exited exit=0" ]]; then
    ok "$tag: ${NAMES[second]} exited 0 after SIGTERM (podman stop returned after ${stop_ms} ms)"
  else
    bad "$tag: ${NAMES[second]} after SIGTERM: podman wait=$code, $state (137 = killed after the stop timeout)"; dump_logs; return 1
  fi
  state=$(pm inspect --format '{{.State.Status}}' "${NAMES[third]}")
  sample || return 1
  if [[ "$state" == running && "${LEADERS[*]}" == "$third" ]]; then
    ok "$tag: ${NAMES[third]} still running and leading"
  else
    bad "$tag: ${NAMES[third]} is $state, leaders now: ${LEADERS[*]:-none}"; dump_logs; return 1
  fi
  if grep -qiE 'panic|permission denied|read-only file system' <(for n in "${NAMES[@]}"; do pm logs "$n" 2>&1; done); then
    bad "$tag: a container logged a panic or a permission error"; dump_logs; return 1
  fi
  ok "$tag: no panic, no permission or read-only errors in the logs"
  ok "$tag: never two leaders in $SAMPLES samples of every candidate's /leader"
}

finish_scenario() {
  local c
  for c in "${NAMES[@]}"; do pm rm --force --time 0 "$c" >/dev/null 2>&1 || true; done
}

SCENARIOS=" ${LEADERD_E2E_IMAGE_SCENARIOS:-ts kas} "
rc=0

# --- 1. the Lease API test server --------------------------------------------------------------
if [[ "$SCENARIOS" == *" ts "* ]]; then
echo "== 1. $CANDIDATES containers against the Lease API test server ($(date -u +%H:%M:%S))"
t=$(now_ms)
mkdir -p "$work/ts"
"$TESTSERVER" --kubeconfig-dir "$work/ts" --client image-e2e > "$work/ts/url" 2> "$work/ts/log" &
TS_PID=$!
for _ in $(seq 1 100); do [[ -s "$work/ts/url" ]] && break; sleep 0.05; done
[[ -s "$work/ts/url" ]] || { bad "the test server printed no URL: $(cat "$work/ts/log")"; exit 1; }
echo "test server at $(head -1 "$work/ts/url")"
scenario ts "$work/ts/kubeconfig-image-e2e.yaml" image-e2e || rc=1
finish_scenario
kill "$TS_PID" 2>/dev/null || true; TS_PID=""
echo "scenario 1: $(($(now_ms) - t)) ms"
fi

# --- 2. the real kube-apiserver ----------------------------------------------------------------
if [[ "$SCENARIOS" == *" kas "* ]]; then
echo "== 2. $CANDIDATES containers against a real kube-apiserver + etcd ($(date -u +%H:%M:%S))"
t=$(now_ms)
bash scripts/kube-apiserver.sh build
KAS_DIR="$work/kas"
bash scripts/kube-apiserver.sh start "$KAS_DIR"
admin="$KAS_DIR/kubeconfig"
k() { kubectl --kubeconfig "$admin" "$@"; }
k apply -f manifests/rbac.yaml >/dev/null
token=$(k create token leaderd -n default --duration 1h)
port=$(sed -n 's/^PORT=//p' "$KAS_DIR/env")
# A self-contained kubeconfig: the cluster CA inline (the host path of ca.crt does not exist in
# the container), the chart's ServiceAccount token.
cat > "$work/kubeconfig-sa" <<KC
apiVersion: v1
kind: Config
clusters:
- name: real
  cluster: {server: "https://127.0.0.1:$port", certificate-authority-data: "$(base64 -w0 "$KAS_DIR/ca.crt")"}
users:
- name: leaderd
  user: {token: "$token"}
contexts:
- name: real
  context: {cluster: real, user: leaderd, namespace: default}
current-context: real
KC
scenario kas "$work/kubeconfig-sa" leaderd-example || rc=1
if ((rc == 0)); then
  transitions=$(k get lease leaderd-example -n default -o jsonpath='{.spec.leaseTransitions}')
  holder=$(k get lease leaderd-example -n default -o jsonpath='{.spec.holderIdentity}')
  if [[ "$holder" == "kas-${LEADER}" && "$transitions" == "$EPOCH" ]]; then
    ok "kas: the Lease names $holder with leaseTransitions $transitions, as /leader says"
  else
    bad "kas: the Lease says holder=$holder transitions=$transitions, /leader says kas-$LEADER epoch $EPOCH"
  fi
fi
finish_scenario
echo "scenario 2: $(($(now_ms) - t)) ms"
fi

echo "$PASSED passed, $FAILED failed"
((FAILED == 0 && rc == 0))
