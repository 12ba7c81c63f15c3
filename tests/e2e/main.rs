//! End-to-end tests: the proxy binary with real clients and upstreams on loopback.

mod access_log;
mod admin;
mod capture;
mod config;
mod grpc;
mod hcm;
mod http;
mod http1_codec;
mod http_inspector;
mod istio;
mod netns;
mod original_dst;
mod sds;
mod support;
mod tcp;
mod test_ca;
mod tls;
mod tls_interop;
mod upstream_http1;
mod xds;
