//! Envoy's command line, as pilot-agent and operators pass it.

use clap::{Parser, ValueEnum};

/// What the process does with the bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Load the config and serve.
    Serve,
    /// Check the whole config, print every error, bind nothing, exit.
    Validate,
    /// Load and initialise everything, then exit without serving.
    #[value(name = "init_only")]
    InitOnly,
}

/// How draining discourages connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DrainStrategy {
    /// Discourage a growing share of connections over the drain time.
    Gradual,
    /// Discourage every connection as soon as draining starts.
    Immediate,
}

/// The IP version of the server's local address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IpVersion {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// Envoy-compatible options. Unknown flags are an error.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "pilotfish",
    about = "An Envoy-compatible data-plane proxy",
    disable_version_flag = true
)]
pub struct Options {
    /// Path to the bootstrap (YAML or JSON).
    #[arg(short = 'c', long = "config-path", default_value = "")]
    pub config_path: String,
    /// Bootstrap YAML merged over the file, as Envoy merges it.
    #[arg(long = "config-yaml", default_value = "")]
    pub config_yaml: String,
    /// serve, validate or init_only.
    #[arg(long, value_enum, default_value = "serve")]
    pub mode: Mode,
    /// Log level: trace, debug, info, warning, warn, error, critical, off.
    #[arg(short = 'l', long = "log-level", default_value = "info")]
    pub log_level: String,
    /// Per-component levels, `upstream:debug,connection:trace`.
    #[arg(long = "component-log-level", default_value = "")]
    pub component_log_level: String,
    /// Log line format (accepted; the built-in format is used).
    #[arg(long = "log-format", default_value = "")]
    pub log_format: String,
    /// Log to this file instead of stderr.
    #[arg(long = "log-path", default_value = "")]
    pub log_path: String,
    /// Number of worker threads (default: the number of CPUs).
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Drain time in seconds.
    #[arg(long = "drain-time-s", default_value_t = 600)]
    pub drain_time_s: u64,
    /// gradual or immediate.
    #[arg(long = "drain-strategy", value_enum, default_value = "gradual")]
    pub drain_strategy: DrainStrategy,
    /// Hot-restart parent shutdown time (accepted; hot restart is not supported).
    #[arg(long = "parent-shutdown-time-s", default_value_t = 900)]
    pub parent_shutdown_time_s: u64,
    /// v4 or v6.
    #[arg(long = "local-address-ip-version", value_enum, default_value = "v4")]
    pub local_address_ip_version: IpVersion,
    /// Access log flush interval in milliseconds.
    #[arg(long = "file-flush-interval-msec", default_value_t = 10000)]
    pub file_flush_interval_msec: u64,
    /// Access log flush size threshold in KiB.
    #[arg(long = "file-flush-min-size-kb", default_value_t = 64)]
    pub file_flush_min_size_kb: u64,
    /// Hot restart is never enabled; the flag is accepted.
    #[arg(long = "disable-hot-restart")]
    pub disable_hot_restart: bool,
    /// Restart epoch; only 0 is supported.
    #[arg(long = "restart-epoch", default_value_t = 0)]
    pub restart_epoch: u32,
    /// Shared-memory base id (accepted; hot restart is not supported).
    #[arg(long = "base-id", default_value_t = 0)]
    pub base_id: u32,
    /// Accepted; hot restart is not supported.
    #[arg(long = "use-dynamic-base-id")]
    pub use_dynamic_base_id: bool,
    /// Unknown fields in the static bootstrap are logged and skipped instead of refused.
    #[arg(long = "allow-unknown-static-fields")]
    pub allow_unknown_static_fields: bool,
    /// Unknown fields in dynamic resources are refused (the default is to ignore them).
    #[arg(long = "reject-unknown-dynamic-fields")]
    pub reject_unknown_dynamic_fields: bool,
    /// Unknown fields in dynamic resources are ignored without a log.
    #[arg(long = "ignore-unknown-dynamic-fields")]
    pub ignore_unknown_dynamic_fields: bool,
    /// Overrides node.id.
    #[arg(long = "service-node", default_value = "")]
    pub service_node: String,
    /// Overrides node.cluster.
    #[arg(long = "service-cluster", default_value = "")]
    pub service_cluster: String,
    /// Overrides node.locality.zone.
    #[arg(long = "service-zone", default_value = "")]
    pub service_zone: String,
    /// Do not log deprecated-feature warnings.
    #[arg(long = "skip-deprecated-logs")]
    pub skip_deprecated_logs: bool,
    /// Accepted: core dumps follow the process limits already in place.
    #[arg(long = "enable-core-dump")]
    pub enable_core_dump: bool,
    /// Write the admin listener's bound address to this file once it is up.
    #[arg(long = "admin-address-path", default_value = "")]
    pub admin_address_path: String,
    /// Print the version and exit.
    #[arg(long = "version")]
    pub version: bool,
}

/// The version line `--version` prints, in Envoy's shape.
pub fn version_line() -> String {
    format!(
        "pilotfish  version: 0000000000000000000000000000000000000000/{}/Clean/RELEASE/rustls",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pilot_agent_command_line_parses() {
        let o = Options::try_parse_from([
            "envoy",
            "-c",
            "./etc/istio/proxy/envoy-rev.json",
            "--drain-time-s",
            "45",
            "--drain-strategy",
            "immediate",
            "--local-address-ip-version",
            "v4",
            "--file-flush-interval-msec",
            "1000",
            "--disable-hot-restart",
            "--allow-unknown-static-fields",
            "-l",
            "warning",
            "--component-log-level",
            "misc:error",
            "--concurrency",
            "2",
        ])
        .unwrap();
        assert_eq!(o.config_path, "./etc/istio/proxy/envoy-rev.json");
        assert_eq!(o.drain_time_s, 45);
        assert_eq!(o.drain_strategy, DrainStrategy::Immediate);
        assert_eq!(o.concurrency, Some(2));
    }

    #[test]
    fn unknown_flag_is_an_error() {
        assert!(Options::try_parse_from(["envoy", "--no-such-flag"]).is_err());
    }
}
