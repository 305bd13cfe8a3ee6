# pixmill-gateway: the HTTP API, the upload page and the reply consumer.
#
# Build from the repository root (the context must be the workspace):
#   docker build -f deploy/docker/gateway.Dockerfile -t pixmill-gateway .
#
# The build stage runs the same cargo command as `make build`. The cache mounts keep the
# crate downloads and the target folder between builds; the worker image shares them, so
# whichever image builds second finds both binaries already built.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
# cmake and nasm build the worker's libjpeg-turbo (what deploy/deps.sh installs). Versions
# come from the bookworm release the base image is on.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake nasm \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,id=pixmill-cargo-registry,sharing=locked,target=/usr/local/cargo/registry \
    --mount=type=cache,id=pixmill-target,sharing=locked,target=/src/target \
    cargo build --release --bins \
 && install -D -m 0755 target/release/pixmill-gateway /out/pixmill-gateway

FROM ${RUNTIME_IMAGE}
# The binary links only glibc (and libgcc_s, part of the base image); ca-certificates
# serves https S3 endpoints.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 pixmill \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/pixmill --no-create-home \
      --shell /usr/sbin/nologin pixmill \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/pixmill
COPY --from=build /out/pixmill-gateway /usr/local/bin/pixmill-gateway
# Listen on every interface inside the container. PIXMILL_DATA_DIR only places the
# defaults (SQLite file and blob folder); set PIXMILL_DATABASE_URL and PIXMILL_BLOB_URL
# to run several gateways (docs/scaling.md). PIXMILL_AUTH is left for whoever runs the
# image to choose: on 0.0.0.0 the gateway will not start until it is `required` (API
# keys) or `open` (something in front decides who may call).
ENV PIXMILL_HTTP_ADDR=0.0.0.0:8080 \
    PIXMILL_DATA_DIR=/var/lib/pixmill
WORKDIR /var/lib/pixmill
USER 10001:10001
EXPOSE 8080
# SIGTERM: stop accepting, finish the requests in flight.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/pixmill-gateway"]
