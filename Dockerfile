# syntax=docker/dockerfile:1
# leaderd image: a fully static binary (glibc, +crt-static) on an empty (`scratch`) base, non-root.
#
#   docker build -t leaderd:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The build command is the one scripts/check-static-binary.sh runs (and checks) without Docker.
# Static glibc cannot load NSS modules at run time, so host names resolve only through the
# parts glibc handles itself (numeric addresses); in a cluster leaderd reaches the API server at
# $KUBERNETES_SERVICE_HOST, which is an IP address.
#
# What the image contains (nothing else: no shell, no libc, no passwd file, no package database):
#   /leaderd                             the static binary, root-owned, mode 0555
#   /etc/ssl/certs/ca-certificates.crt   Debian's CA bundle (package ca-certificates), mode 0444
# and it runs as UID/GID 65532 (numeric, so no /etc/passwd entry is needed), e.g. with a
# read-only root filesystem and no capabilities: leaderd writes no files.
# Why the CA bundle: kube-rs builds its TLS client eagerly, and when the kubeconfig names no
# certificate authority (a plain http:// server, or an https server signed by a public CA) it
# asks the system trust store (rustls-platform-verifier -> rustls-native-certs), which fails at
# start with "No CA certificates were loaded from the system" when the file is missing. In a pod
# the service account's ca.crt is used instead; the bundle is what distroless/static carried.
#
# Two sources for the binary, one final stage:
#   - default (LEADERD_FROM=builder): compiled from source in the Rust stage below (needs a
#     registry for rust:bookworm);
#   - LEADERD_FROM=prebuilt: a build context directory holding `leaderd` (the static binary
#     scripts/check-static-binary.sh builds) and `ca-certificates.crt`, so that nothing is pulled:
#     scripts/build-image.sh does this (podman/buildah; BuildKit and buildah skip unused stages).
# With podman/buildah, name the source build explicitly: `podman build --build-arg
# LEADERD_FROM=builder .` (buildah 1.28, Debian 12, decides which stages to skip from the
# --build-arg values only, not from the ARG default below, and otherwise fails with "builder:
# image not known").

ARG RUST_VERSION=1.95
ARG LEADERD_FROM=builder

FROM --platform=linux/amd64 rust:${RUST_VERSION}-bookworm AS builder
# protoc and protobuf's own .proto files: the etcd-client crate compiles etcd's .proto files at
# build time (prost-build ships no protoc); the rust image has neither.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# A workspace member (the dev-dependency leaderd-testkit): cargo loads its manifest even though
# the release build never compiles it.
COPY testkit ./testkit
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/leaderd /out/leaderd \
 && install -D -m 0444 /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt
# Fail the build unless the binary is static (no program interpreter) and runs.
RUN if readelf -l /out/leaderd | grep -q 'Requesting program interpreter'; then \
      echo "leaderd is dynamically linked" >&2; exit 1; \
    fi \
 && /out/leaderd --version

FROM --platform=linux/amd64 scratch AS prebuilt
COPY leaderd ca-certificates.crt /out/

FROM ${LEADERD_FROM} AS binary

FROM --platform=linux/amd64 scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="leaderd" \
      org.opencontainers.image.description="Leader-election sidecar for Kubernetes: campaigns for a coordination.k8s.io/v1 Lease and tells the app over localhost HTTP whether it leads, with a fencing epoch" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=binary --chown=0:0 --chmod=0444 /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=binary --chown=0:0 --chmod=0555 /out/leaderd /leaderd
USER 65532:65532
# 4040: the app API (/leader, /healthz, /readyz); 9464: /metrics.
EXPOSE 4040 9464
ENTRYPOINT ["/leaderd"]
