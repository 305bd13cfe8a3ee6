# pixmill-worker: a competing consumer of the pixmill.jobs queue.
#
# Build from the repository root (the context must be the workspace):
#   docker build -f deploy/docker/worker.Dockerfile -t pixmill-worker .
#
# The build stage runs the same cargo command as `make build`. The cache mounts keep the
# crate downloads and the target folder between builds; the gateway image shares them, so
# whichever image builds second finds both binaries already built.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# cmake and nasm build libjpeg-turbo from the source bundled with the turbojpeg crate
# (what deploy/deps.sh installs). Versions come from the bookworm release the base image
# is on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=pixmill-cargo-registry,sharing=locked,target=/usr/local/cargo/registry \
    --mount=type=cache,id=pixmill-target,sharing=locked,target=/src/target \
    cargo build --release --bins \
 && install -D -m 0755 target/release/pixmill-worker /out/pixmill-worker

FROM ${RUNTIME_IMAGE}
# The binary links only glibc (and libgcc_s, part of the base image); libjpeg-turbo is
# linked in statically. ca-certificates serves https S3 endpoints.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pixmill \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pixmill --no-create-home \
      --shell /usr/sbin/nologin pixmill \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/pixmill
COPY --from=build /out/pixmill-worker /usr/local/bin/pixmill-worker
# /metrics and /healthz on every interface inside the container. A worker needs only
# PIXMILL_AMQP_URL and PIXMILL_BLOB_URL (a shared file:// folder, or s3:// with AWS_*);
# the folder default below is for a volume shared with the gateway.
ENV PIXMILL_METRICS_ADDR=0.0.0.0:9102 \
    PIXMILL_DATA_DIR=/var/lib/pixmill
WORKDIR /var/lib/pixmill
USER 10001:10001
EXPOSE 9102
# SIGTERM: cancel the consumer, finish the jobs in hand within
# PIXMILL_SHUTDOWN_GRACE_SECS (30 s by default), then exit. Give the container longer
# than that to stop (docker stop -t, compose stop_grace_period, Kubernetes
# terminationGracePeriodSeconds).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pixmill-worker"]
