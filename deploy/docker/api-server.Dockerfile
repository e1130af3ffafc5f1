# syntax=docker/dockerfile:1
# The api-server image: built on the official Rust image, run on distroless (glibc, CA
# certificates, no shell, no package manager) as an unprivileged user. Build from the
# repository root:
#
#   docker build -f deploy/docker/api-server.Dockerfile -t scaidrive/api-server:0.1.0 .
#
# Nothing else goes into the image: the configuration comes from the environment (README,
# "Configuration"), the probes are the orchestrator's (/healthz, /readyz on port 8080).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# The registry and target caches are BuildKit cache mounts, so the binary is copied out of
# target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p api-server \
    && install -D -m 0755 target/release/api-server /out/api-server \
    && install -d /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/api-server /usr/local/bin/api-server
# The data directory, writable by the runtime user even without a volume (distroless has no
# shell to make it).
COPY --from=builder --chown=65532:65532 /out/data /var/lib/scaidrive
# In a container the loopback defaults of the binary are useless: listen on every interface.
# /var/lib/scaidrive is the data directory; mount a volume there (the content store must be
# shared by every replica).
ENV SCAIDRIVE_LISTEN=0.0.0.0:8080 \
    SCAIDRIVE_GRPC_LISTEN=0.0.0.0:8081 \
    SCAIDRIVE_DATA_DIR=/var/lib/scaidrive
# distroless' "nonroot" user, numeric so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# 8080: REST API and probes; 8081: the workers' gRPC service.
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/api-server"]
CMD ["serve"]
