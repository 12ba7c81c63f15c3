# Builds pilotfish and an istio-proxy image that runs it in place of Envoy.
#
#   docker build --target pilotfish -t pilotfish .                       # the binary alone
#   docker build --build-arg ISTIO_VERSION=1.28.0 -t proxyv2-pilotfish .  # drop-in istio/proxyv2
#
# pilot-agent starts /usr/local/bin/envoy with Envoy's command line; pilotfish accepts it.

ARG ISTIO_VERSION=1.28.0
ARG RUST_VERSION=1.88

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
COPY src ./src
COPY benches ./benches
RUN cargo build --profile dist --bin pilotfish

FROM debian:bookworm-slim AS pilotfish
COPY --from=build /src/target/dist/pilotfish /usr/local/bin/pilotfish
ENTRYPOINT ["/usr/local/bin/pilotfish"]

FROM docker.io/istio/proxyv2:${ISTIO_VERSION} AS istio-proxy
COPY --from=build /src/target/dist/pilotfish /usr/local/bin/envoy
