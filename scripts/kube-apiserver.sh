#!/usr/bin/env bash
# A real kube-apiserver (v1.20.2, built from Debian's `kubernetes` source package) + etcd on
# loopback, for end-to-end tests against the real thing.
#
#   scripts/kube-apiserver.sh build        # install build deps, build once, cache outside the repo
#   scripts/kube-apiserver.sh start DIR    # start etcd + apiserver; writes DIR/env (PORT, TOKEN, KUBECONFIG, PIDS)
#   scripts/kube-apiserver.sh stop DIR     # stop what start started (by PID)
#
# The build (~8 min on 2 cores, ~3 GB with the Go cache) is cached in
# ${LEADERD_CACHE:-$HOME/.cache/leaderd}/kube-apiserver and reused while it exists.
set -euo pipefail

CACHE="${LEADERD_CACHE:-$HOME/.cache/leaderd}"
BIN="$CACHE/kube-apiserver/kube-apiserver"

build() {
  if [ -x "$BIN" ]; then echo "kube-apiserver cached at $BIN"; return; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends golang-1.19-go etcd-server etcd-client rsync openssl make dpkg-dev >/dev/null
  local src="$CACHE/kube-src" apt="$CACHE/kube-src/apt"
  mkdir -p "$apt/parts" "$apt/lists/partial" "$apt/cache/archives/partial"
  # deb-src lines derived from the machine's own apt sources, in a private apt state.
  sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > "$apt/parts/src.sources"
  local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/parts"
              -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  apt-get "${opts[@]}" update -qq
  (cd "$src" && apt-get "${opts[@]}" source --download-only kubernetes >/dev/null)
  local tarball
  tarball=$(ls "$src"/kubernetes_*.orig.tar.gz | head -1)
  rm -rf "$src/tree" && mkdir -p "$src/tree"
  tar xzf "$tarball" -C "$src/tree"
  local tree
  tree=$(ls -d "$src"/tree/kubernetes-* | head -1)
  (cd "$tree" && PATH=/usr/lib/go-1.19/bin:$PATH GOPROXY=off CGO_ENABLED=0 GOFLAGS=-mod=vendor \
     make WHAT=cmd/kube-apiserver KUBE_BUILD_PLATFORMS=linux/amd64)
  mkdir -p "$(dirname "$BIN")"
  cp "$tree/_output/local/bin/linux/amd64/kube-apiserver" "$BIN"
  rm -rf "$src/tree"   # keep the tarball, drop the 3 GB tree
  echo "built $BIN"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
  local dir="$1"; mkdir -p "$dir"
  [ -x "$BIN" ] || { echo "kube-apiserver not built: run $0 build" >&2; exit 1; }
  local etcd_port peer_port port token=leaderd-admin-token
  etcd_port=$(free_port); peer_port=$(free_port); port=$(free_port)
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=leaderd-ca \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/san.ext" -out "$dir/server.crt" 2>/dev/null
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null
  openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null
  echo "$token,admin,admin-uid,system:masters" > "$dir/tokens.csv"
  etcd --data-dir "$dir/etcd" --listen-client-urls "http://127.0.0.1:$etcd_port" \
    --advertise-client-urls "http://127.0.0.1:$etcd_port" --listen-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "default=http://127.0.0.1:$peer_port" > "$dir/etcd.log" 2>&1 &
  echo $! > "$dir/etcd.pid"
  "$BIN" --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address 127.0.0.1 --secure-port "$port" \
    --insecure-port 0 --tls-cert-file "$dir/server.crt" --tls-private-key-file "$dir/server.key" \
    --client-ca-file "$dir/ca.crt" --token-auth-file "$dir/tokens.csv" --authorization-mode RBAC \
    --service-account-key-file "$dir/sa.pub" --service-account-signing-key-file "$dir/sa.key" \
    --service-account-issuer https://kubernetes.default.svc --service-cluster-ip-range 10.0.0.0/24 \
    > "$dir/apiserver.log" 2>&1 &
  echo $! > "$dir/apiserver.pid"
  cat > "$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: real
  cluster: {server: "https://127.0.0.1:$port", certificate-authority: "$dir/ca.crt"}
users:
- name: admin
  user: {token: "$token"}
contexts:
- name: real
  context: {cluster: real, user: admin, namespace: default}
current-context: real
KC
  for _ in $(seq 1 120); do
    if KUBECONFIG="$dir/kubeconfig" kubectl get --raw /readyz >/dev/null 2>&1; then
      printf 'PORT=%s\nKUBECONFIG=%s\n' "$port" "$dir/kubeconfig" > "$dir/env"
      echo "kube-apiserver ready on https://127.0.0.1:$port (KUBECONFIG=$dir/kubeconfig)"
      return
    fi
    sleep 0.5
  done
  echo "kube-apiserver did not become ready; log tail:" >&2; tail -20 "$dir/apiserver.log" >&2
  stop "$dir"; exit 1
}

stop() {
  local dir="$1"
  for p in apiserver etcd; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
}

case "${1:-}" in
  build) build ;;
  start) start "${2:?dir}" ;;
  stop) stop "${2:?dir}" ;;
  *) echo "usage: $0 build | start DIR | stop DIR" >&2; exit 64 ;;
esac
