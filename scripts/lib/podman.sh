# shellcheck shell=bash
# Shared helper for scripts/build-image.sh and scripts/e2e-image.sh: a podman that works on this
# project's VMs (Debian, root, no Docker engine, no registry). Sourced, not executed.
#
#   ensure_podman          installs Debian's podman, buildah and runc if one is missing and
#                          writes the containers.conf below (once)
#   pm ARGS...             podman with the flags these VMs need
#
# What these VMs need (docs in /work/shared/reference/real-apiserver.md, "Containers"):
#   - containers.conf `default_ulimits = []`: the VM may not raise rlimits, and the default
#     nofile ulimit makes the runtime fail with "setrlimit RLIMIT_NOFILE: Operation not permitted";
#   - `--cgroup-manager cgroupfs --runtime runc`: no systemd manager here, and crun refuses the
#     hybrid cgroup v1 tree;
#   - `--storage-driver vfs`: works on any filesystem (no overlay mounts needed).
# The storage is private to leaderd ($LEADERD_CACHE/podman/storage, run state under
# /run/leaderd-podman) so that it never clashes with another podman configuration on the
# machine (a different storage driver in /var/lib/containers would make every call fail).
# Override with LEADERD_PODMAN_ROOT / LEADERD_PODMAN_RUNROOT.

LEADERD_CACHE="${LEADERD_CACHE:-$HOME/.cache/leaderd}"
LEADERD_PODMAN_ROOT="${LEADERD_PODMAN_ROOT:-$LEADERD_CACHE/podman/storage}"
LEADERD_PODMAN_RUNROOT="${LEADERD_PODMAN_RUNROOT:-/run/leaderd-podman}"
LEADERD_CONTAINERS_CONF="${LEADERD_CONTAINERS_CONF:-$LEADERD_CACHE/podman/containers.conf}"
# The image both scripts build and run.
LEADERD_IMAGE="${LEADERD_IMAGE:-localhost/leaderd:dev}"

pm() {
  CONTAINERS_CONF="$LEADERD_CONTAINERS_CONF" podman \
    --root "$LEADERD_PODMAN_ROOT" --runroot "$LEADERD_PODMAN_RUNROOT" --storage-driver vfs \
    --cgroup-manager cgroupfs --runtime runc --events-backend file "$@"
}

# The command line a developer can paste to use the same storage (printed by build-image.sh).
pm_cmdline() {
  printf 'CONTAINERS_CONF=%q podman --root %q --runroot %q --storage-driver vfs --cgroup-manager cgroupfs --runtime runc --events-backend file' \
    "$LEADERD_CONTAINERS_CONF" "$LEADERD_PODMAN_ROOT" "$LEADERD_PODMAN_RUNROOT"
}

ensure_podman() {
  local missing=() t
  for t in podman buildah runc; do command -v "$t" >/dev/null || missing+=("$t"); done
  if ((${#missing[@]})); then
    printf 'installing %s (Debian packages)\n' "${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends podman buildah runc >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq --no-install-recommends podman buildah runc >/dev/null; }
  fi
  mkdir -p "$(dirname "$LEADERD_CONTAINERS_CONF")" "$LEADERD_PODMAN_ROOT"
  if [[ ! -f "$LEADERD_CONTAINERS_CONF" ]]; then
    cat > "$LEADERD_CONTAINERS_CONF.tmp" <<'CONF'
# Written by leaderd's scripts/lib/podman.sh.
[containers]
# This VM may not raise rlimits: do not ask the runtime to set any.
default_ulimits = []
CONF
    mv -f "$LEADERD_CONTAINERS_CONF.tmp" "$LEADERD_CONTAINERS_CONF"
  fi
}
