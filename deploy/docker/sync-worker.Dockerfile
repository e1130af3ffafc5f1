# syntax=docker/dockerfile:1
# The sync-worker image: built on the official Rust image, run on distroless (glibc, CA
# certificates, no shell, no package manager) as an unprivileged user. Build from the
# repository root:
#
#   docker build -f deploy/docker/sync-worker.Dockerfile -t scaidrive/sync-worker:0.1.0 .
#
# A worker keeps nothing on disk: content streams from SMB to the api-server over gRPC.
# Its only listener is the health endpoint (/healthz, /readyz on port 9100).

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --release -p sync-worker \
    && install -D -m 0755 target/release/sync-worker /out/sync-worker

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/sync-worker /usr/local/bin/sync-worker
ENV SCAIDRIVE_WORKER_LISTEN=0.0.0.0:9100
USER 65532:65532
EXPOSE 9100
ENTRYPOINT ["/usr/local/bin/sync-worker"]
