#!/usr/bin/env bash
# Copies the single sources of the monitoring files into the Helm chart, which embeds them
# (a symlink would not survive `helm package`):
#   deploy/prometheus/alerts.yaml -> charts/leaderd/files/alerts.yaml   (PrometheusRule)
#   deploy/grafana/leaderd.json   -> charts/leaderd/files/leaderd.json  (dashboard ConfigMap)
#
#   scripts/sync-chart-files.sh           copy (a missing source is reported and skipped)
#   scripts/sync-chart-files.sh --check   compare only: prints "ok", "missing" or "differs"
#                                         (with a diff) per file; exits 1 unless all are ok
set -euo pipefail
cd "$(dirname "$0")/.."

PAIRS=(
  "deploy/prometheus/alerts.yaml charts/leaderd/files/alerts.yaml"
  "deploy/grafana/leaderd.json charts/leaderd/files/leaderd.json"
)

mode="${1:-sync}"
case "$mode" in
  sync | --check) ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

bad=0
for pair in "${PAIRS[@]}"; do
  read -r src dst <<<"$pair"
  if [[ ! -f "$src" ]]; then
    echo "missing: $src (the source of $dst) does not exist"
    bad=1
    continue
  fi
  if [[ "$mode" == sync ]]; then
    if ! cmp -s "$src" "$dst"; then
      mkdir -p "$(dirname "$dst")"
      cp "$src" "$dst"
      echo "synced: $src -> $dst"
    else
      echo "ok: $dst equals $src"
    fi
  elif [[ ! -f "$dst" ]]; then
    echo "missing: $dst (run scripts/sync-chart-files.sh to copy $src)"
    bad=1
  elif ! cmp -s "$src" "$dst"; then
    echo "differs: $dst is not a copy of $src (run scripts/sync-chart-files.sh):"
    diff -u "$src" "$dst" | head -40 || true
    bad=1
  else
    echo "ok: $dst equals $src"
  fi
done
exit "$bad"
