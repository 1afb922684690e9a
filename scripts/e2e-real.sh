#!/usr/bin/env bash
# End-to-end against a real kube-apiserver + etcd: applies the chart's RBAC (manifests/rbac.yaml),
# gives leaderd kubeconfigs holding ServiceAccount tokens (TokenRequest: kubectl create token),
# checks that the ServiceAccount cannot delete leases, prepares a Role missing `update`, and runs
# the real-apiserver tests. Everything it starts is stopped by PID at the end, also on failure.
#   scripts/e2e-real.sh            (uses ${CARGO_TARGET_DIR:-target}; builds the apiserver if needed)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/kube-apiserver.sh build
dir=$(mktemp -d)
trap 'bash scripts/kube-apiserver.sh stop "$dir"' EXIT
bash scripts/kube-apiserver.sh start "$dir"
admin="$dir/kubeconfig"
k() { kubectl --kubeconfig "$admin" "$@"; }

# Python peer: the kubernetes client's LeaseLock elector.
python3 -c 'import kubernetes.leaderelection.resourcelock.leaselock' 2>/dev/null \
  || pip install -q --disable-pip-version-check kubernetes

# The chart's RBAC, as rendered into manifests/ (ServiceAccount leaderd, lease leaderd-example).
k apply -f manifests/rbac.yaml >/dev/null
sa_kubeconfig() { # NAME -> kubeconfig path with a token of ServiceAccount NAME
  local token
  token=$(k create token "$1" -n default --duration 1h)
  # The admin kubeconfig with the ServiceAccount's token in place of the admin token.
  sed "s|leaderd-admin-token|$token|" "$admin" > "$dir/kubeconfig-$1"
  echo "$dir/kubeconfig-$1"
}
sa=$(sa_kubeconfig leaderd)
# Least privilege: the ServiceAccount may not delete leases.
printf '{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"leaderd-example","namespace":"default"}}' \
  | k create -f - >/dev/null
if out=$(kubectl --kubeconfig "$sa" delete lease leaderd-example -n default 2>&1); then
  echo "FAIL: the chart's ServiceAccount could delete a lease: $out"; exit 1
fi
grep -q 'Forbidden\|forbidden' <<<"$out" || { echo "FAIL: unexpected answer to delete: $out"; exit 1; }
echo "ok    delete on leases is forbidden for the chart's ServiceAccount"
k delete lease leaderd-example -n default >/dev/null

# A Role like the chart's but without `update`, on lease leaderd-noupdate, held by a stale holder.
sed -e 's/name: leaderd$/name: leaderd-noupdate/' -e 's/"leaderd-example"/"leaderd-noupdate"/' \
    -e 's/verbs: \["get", "update", "watch"\]/verbs: ["get", "watch"]/' manifests/rbac.yaml | k apply -f - >/dev/null
noupdate=$(sa_kubeconfig leaderd-noupdate)
printf '%s' '{"apiVersion":"coordination.k8s.io/v1","kind":"Lease","metadata":{"name":"leaderd-noupdate","namespace":"default"},
  "spec":{"holderIdentity":"ghost","leaseDurationSeconds":1,"leaseTransitions":4,"renewTime":"2020-01-01T00:00:00.000000Z"}}' | k create -f - >/dev/null

# Shard groups: the ServiceAccount, Role and RoleBinding of manifests/shards-example.yaml (leases
# get/list/watch/create/update namespace-wide, no delete), not its Deployment.
python3 - manifests/shards-example.yaml > "$dir/shards-rbac.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] in ("ServiceAccount", "Role", "RoleBinding")]
print(yaml.safe_dump_all(docs))
PY
k apply -f "$dir/shards-rbac.yaml" >/dev/null
shards=$(sa_kubeconfig leaderd-shards)
if out=$(kubectl --kubeconfig "$shards" delete lease anything -n default 2>&1); then
  echo "FAIL: the shard group's ServiceAccount could delete a lease: $out"; exit 1
fi
echo "ok    delete on leases is forbidden for the shard group's ServiceAccount"

export LEADERD_REAL_KUBECONFIG="$admin" LEADERD_REAL_SA_KUBECONFIG="$sa" LEADERD_REAL_NOUPDATE_KUBECONFIG="$noupdate"
export LEADERD_REAL_SHARDS_KUBECONFIG="$shards"
cargo test --locked --test lease_api_conformance --test real_apiserver -- --nocapture --test-threads 1 2>&1 | grep -v '^$'
# Kubernetes Events posted by the candidates (with the ServiceAccount's events rule) on the Lease.
count() { # REASON -> number of events.k8s.io Events with that reason regarding Lease leaderd-example
  k get events.v1.events.k8s.io -n default -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
print(sum(1 for e in items if e.get("reason") == sys.argv[1] and e["regarding"]["kind"] == "Lease"
          and e["regarding"]["name"] == "leaderd-example" and e.get("reportingController") == "leaderd"))' "$1"
}
became=$(count BecameLeader); stopped=$(count StoppedLeading)
[ "$became" -ge 3 ] && [ "$stopped" -ge 2 ] \
  || { echo "FAIL: expected Events on the Lease, got BecameLeader=$became StoppedLeading=$stopped"; exit 1; }
echo "ok    Events on the Lease: BecameLeader=$became StoppedLeading=$stopped"
echo "== the Lease as kubectl shows it"
k get lease leaderd-example -n default -o yaml | sed -n '/^spec:/,$p'
# The documented record: a holder, the duration in seconds, MicroTimes, transitions = epoch.
# leaseTransitions: three leaderd tenures (epochs 1 2 3), then at least one leaderd takeover from
# the Python peer. The peer's LeaseLock keeps leaseTransitions as it found it, so the count is 4
# when the peer won the race after the release and 5 when a leaderd candidate won it.
k get lease leaderd-example -n default -o json | python3 -c '
import json, re, sys
s = json.load(sys.stdin)["spec"]
micro = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
ok = (s.get("holderIdentity", "").startswith("r") and s.get("leaseDurationSeconds") == 3
      and micro.match(s.get("renewTime", "")) and micro.match(s.get("acquireTime", ""))
      and s.get("leaseTransitions", 0) >= 4)
print("ok    the Lease record is as documented" if ok else "FAIL: unexpected Lease record %s" % s)
sys.exit(0 if ok else 1)'
