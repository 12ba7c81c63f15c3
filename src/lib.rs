//! pilotfish: an Envoy-compatible data-plane proxy.
//!
//! The crate is laid out by Envoy concept: `bootstrap` loads config, `config` converts it into
//! the immutable model, `listener`, `network`, `http` and `upstream` move bytes, `admin` and
//! `stats` observe. `app` wires them together.

// Envoy still honours its deprecated fields (Istio sends several), so the converters read them.
#![allow(deprecated)]

pub mod access_log;
pub mod admin;
pub mod app;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod http;
pub mod http1;
pub mod iptables;
pub mod listener;
pub mod network;
pub mod server;
pub mod stats;
pub mod sys;
pub mod tls;
pub mod upstream;
pub mod xds;
