#!/usr/bin/env bash
# Builds the leaderd image localhost/leaderd:dev with podman from the repository's Dockerfile,
# pulling nothing: the Dockerfile's final stage (FROM scratch) with LEADERD_FROM=prebuilt, fed
# the static binary that scripts/check-static-binary.sh builds (built first if missing) and
# Debian's CA bundle. Prints the image's size and layers.
#
#   scripts/build-image.sh                 (installs podman/buildah/runc if missing: root, Debian)
#
# Env: LEADERD_STATIC_BIN: use this static binary instead of
# ${CARGO_TARGET_DIR:-$HOME/.cache/leaderd/static-target}/x86_64-unknown-linux-gnu/release/leaderd.
# LEADERD_IMAGE: the tag (default localhost/leaderd:dev). The storage is leaderd's own (see
# scripts/lib/podman.sh); the last line printed is the podman command that sees it.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=lib/podman.sh
source scripts/lib/podman.sh

# Where check-static-binary.sh builds: $CARGO_TARGET_DIR when set (as in .ci/run), else its default.
static_target="${CARGO_TARGET_DIR:-$HOME/.cache/leaderd/static-target}"
bin="${LEADERD_STATIC_BIN:-$static_target/x86_64-unknown-linux-gnu/release/leaderd}"
if [[ ! -x "$bin" ]]; then
  echo "== no static binary at $bin: building it (scripts/check-static-binary.sh)"
  CARGO_TARGET_DIR="$static_target" bash scripts/check-static-binary.sh
fi
# The binary must be the static one: the image has no libc and no program interpreter.
if readelf -l "$bin" 2>/dev/null | grep -q 'Requesting program interpreter'; then
  echo "FAIL  $bin is dynamically linked; build it with scripts/check-static-binary.sh" >&2
  exit 1
fi
ca=/etc/ssl/certs/ca-certificates.crt
if [[ ! -s "$ca" ]]; then
  echo "installing ca-certificates (Debian package) for $ca"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends ca-certificates >/dev/null
fi

ensure_podman
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/leaderd"
cp "$ca" "$ctx/ca-certificates.crt"
version=$("$bin" --version | awk '{print $2}')
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)

echo "== podman build $LEADERD_IMAGE (Dockerfile, LEADERD_FROM=prebuilt, --pull=never)"
start=$(date +%s%3N)
pm build --pull=never --layers --file Dockerfile --tag "$LEADERD_IMAGE" \
  --build-arg LEADERD_FROM=prebuilt --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; echo "FAIL  podman build" >&2; exit 1; }
echo "built in $(( $(date +%s%3N) - start )) ms"

echo "== image"
size=$(pm image inspect --format '{{.Size}}' "$LEADERD_IMAGE")
printf '%s: %s bytes (%s MB, %s MiB), %s\n' "$LEADERD_IMAGE" "$size" \
  "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1e6 }')" \
  "$(awk -v s="$size" 'BEGIN { printf "%.1f", s / 1048576 }')" \
  "$(pm image inspect --format '{{.Id}}' "$LEADERD_IMAGE" | cut -c1-12)"
echo "filesystem layers: $(pm image inspect --format '{{len .RootFS.Layers}}' "$LEADERD_IMAGE"); history (newest first):"
pm history --no-trunc --format '{{.Size}}	{{.CreatedBy}}' "$LEADERD_IMAGE" \
  | sed -e 's|/bin/sh -c #(nop) ||' | awk -F'\t' '{ printf "  %9s  %s\n", $1, substr($2, 1, 110) }'
# Drop the stage images of earlier builds (vfs stores every layer in full).
pm image prune --force >/dev/null
echo "== runs"
pm run --rm --read-only --user 65532:65532 --cap-drop ALL --network none "$LEADERD_IMAGE" --version
echo "use it with: $(pm_cmdline) run ... $LEADERD_IMAGE"
