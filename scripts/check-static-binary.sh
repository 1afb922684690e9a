#!/usr/bin/env bash
# Builds leaderd exactly as the Dockerfile's builder stage does (a fully static glibc binary)
# and checks the result, for machines without a Docker engine:
#   - `file` says statically linked (or static-pie) and `ldd` finds no shared libraries,
#   - no ELF program interpreter is requested,
#   - `leaderd --version` runs,
# then prints the binary's size. The build goes to CARGO_TARGET_DIR, default
# $HOME/.cache/leaderd/static-target, so it does not disturb other builds. On a shared machine
# run it niced: `nice -n 19 scripts/check-static-binary.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/leaderd/static-target}"
export CARGO_TERM_COLOR=never
TARGET=x86_64-unknown-linux-gnu
mkdir -p "$CARGO_TARGET_DIR"

# The etcd-client crate compiles etcd's .proto files at build time and needs protoc (the
# Dockerfile's builder stage installs it; .ci/run does on the host).
if [[ -z "${PROTOC:-}" ]] && ! command -v protoc >/dev/null; then
  echo "protoc is missing: apt-get install protobuf-compiler (or set PROTOC)" >&2
  exit 1
fi
if [[ -z "${PROTOC_INCLUDE:-}" && ! -f /usr/include/google/protobuf/descriptor.proto ]]; then
  echo "protobuf's .proto files are missing: apt-get install libprotobuf-dev (or set PROTOC_INCLUDE)" >&2
  exit 1
fi

echo "== build (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
start=$(date +%s)
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TARGET"
echo "built in $(($(date +%s) - start)) s"
bin="$CARGO_TARGET_DIR/$TARGET/release/leaderd"

fail=0
echo "== checks"
desc="$(file -b "$bin" 2>/dev/null || echo "file(1) missing")"
echo "file: $desc"
if [[ "$desc" == *"statically linked"* || "$desc" == *"static-pie linked"* ]]; then
  echo "ok    file: statically linked"
elif [[ "$desc" == "file(1) missing" ]]; then
  echo "skip  file(1) is not installed (apt-get install file)"
else
  echo "FAIL  file: not statically linked"; fail=1
fi
ldd_out="$(ldd "$bin" 2>&1 || true)"
echo "ldd: $ldd_out"
if grep -q '=>' <<<"$ldd_out"; then
  echo "FAIL  ldd lists shared libraries"; fail=1
else
  echo "ok    ldd: no shared libraries"
fi
if ! command -v readelf >/dev/null; then
  echo "skip  readelf is not installed (apt-get install binutils)"
elif readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
  echo "FAIL  the ELF requests a program interpreter (dynamic)"; fail=1
else
  echo "ok    no ELF program interpreter"
fi
if version="$("$bin" --version)"; then
  echo "ok    --version: $version"
else
  echo "FAIL  --version"; fail=1
fi
size=$(stat -c %s "$bin")
echo "size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.1f MiB", s / 1048576 }'))  $bin"
exit "$fail"
