# syntax=docker/dockerfile:1
# leaderd image: a fully static binary (glibc, +crt-static) on distroless/static, non-root.
#
#   docker build -t leaderd:0.1.0 --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#
# The build command is the one scripts/check-static-binary.sh runs (and checks) without Docker.
# Static glibc cannot load NSS modules at run time, so host names resolve only through the
# parts glibc handles itself (numeric addresses); in a cluster leaderd reaches the API server at
# $KUBERNETES_SERVICE_HOST, which is an IP address.

ARG RUST_VERSION=1.95

FROM --platform=linux/amd64 rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/leaderd /out/leaderd
# Fail the build unless the binary is static (no program interpreter) and runs.
RUN if readelf -l /out/leaderd | grep -q 'Requesting program interpreter'; then \
      echo "leaderd is dynamically linked" >&2; exit 1; \
    fi \
 && /out/leaderd --version

FROM --platform=linux/amd64 gcr.io/distroless/static-debian12:nonroot
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="leaderd" \
      org.opencontainers.image.description="Leader-election sidecar for Kubernetes: campaigns for a coordination.k8s.io/v1 Lease and tells the app over localhost HTTP whether it leads, with a fencing epoch" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=builder --chown=0:0 --chmod=0555 /out/leaderd /leaderd
USER 65532:65532
# 4040: the app API (/leader, /healthz, /readyz); 9464: /metrics.
EXPOSE 4040 9464
ENTRYPOINT ["/leaderd"]
