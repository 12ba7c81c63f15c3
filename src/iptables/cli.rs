//! `pilotfish iptables`: istio-iptables' flags, then apply the capture (one atomic
//! iptables-restore of the nat table), print it (`--dry-run`), or remove it
//! (`--cleanup-only`). Unknown flags are an error.

use std::io::Write;
use std::process::{Command, Stdio};

use clap::Parser;

use super::{Capture, cidr_selection, cidrs, port_selection, ports, render, restore_text, split};

/// istio-iptables' flags (REDIRECT mode).
#[derive(Debug, Parser)]
#[command(
    name = "pilotfish iptables",
    about = "Set up, print or remove the traffic capture istio-iptables sets up (REDIRECT mode)"
)]
pub struct Args {
    /// Port outbound TCP is redirected to.
    #[arg(short = 'p', long = "envoy-port", default_value = "15001")]
    envoy_port: u16,
    /// Port inbound TCP is redirected to.
    #[arg(short = 'z', long = "inbound-capture-port", default_value = "15006")]
    inbound_capture_port: u16,
    /// Inbound tunnel port, never captured.
    #[arg(short = 'e', long = "inbound-tunnel-port", default_value = "15008")]
    inbound_tunnel_port: u16,
    /// The proxy's user ids (comma-separated): their traffic is not captured.
    #[arg(short = 'u', long = "proxy-uid", default_value = "1337")]
    proxy_uid: String,
    /// The proxy's group ids (default: the user ids).
    #[arg(short = 'g', long = "proxy-gid")]
    proxy_gid: Option<String>,
    /// Inbound interception mode: REDIRECT (TPROXY is not supported).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        default_value = "REDIRECT"
    )]
    mode: String,
    /// Inbound ports to capture (`*` for all).
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "")]
    inbound_ports: String,
    /// Inbound ports not to capture (with `-b '*'`).
    #[arg(short = 'd', long = "istio-local-exclude-ports", default_value = "")]
    inbound_exclude: String,
    /// Outbound destinations (CIDRs, or `*`) to capture.
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "")]
    service_cidr: String,
    /// Outbound destinations (CIDRs) not to capture.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    service_exclude_cidr: String,
    /// Outbound ports to capture whatever the destination.
    #[arg(short = 'q', long = "istio-outbound-ports", default_value = "")]
    outbound_ports: String,
    /// Outbound ports not to capture.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    outbound_exclude: String,
    /// Virtual interfaces whose traffic is treated as outbound.
    #[arg(short = 'k', long = "kube-virt-interfaces", default_value = "")]
    kube_virt_interfaces: String,
    /// Interfaces whose traffic is never captured.
    #[arg(short = 'c', long = "istio-exclude-interfaces", default_value = "")]
    exclude_interfaces: String,
    /// Print the rules instead of applying them.
    #[arg(short = 'n', long = "dry-run")]
    dry_run: bool,
    /// Remove the capture (the chains, and the rules these flags would add) and exit.
    #[arg(long = "cleanup-only")]
    cleanup_only: bool,
    /// The log level (accepted for istio-iptables' command line; this command only prints
    /// errors).
    #[arg(long = "log_output_level")]
    _log_output_level: Option<String>,
}

impl Args {
    /// The capture these flags describe; notes name what is skipped.
    pub fn capture(&self) -> Result<(Capture, Vec<String>), String> {
        if self.mode != "REDIRECT" {
            return Err(format!(
                "-m: interception mode {:?} is not supported (REDIRECT is)",
                self.mode
            ));
        }
        let mut notes = Vec::new();
        let (outbound_cidrs, skipped) = cidr_selection("-i", &self.service_cidr)?;
        notes.extend(
            skipped
                .into_iter()
                .map(|c| format!("-i: IPv6 range {c} skipped")),
        );
        if self.service_exclude_cidr.trim() == "*" {
            return Err("-x: `*` is not a valid exclusion".into());
        }
        let (outbound_cidrs_exclude, skipped) = cidrs("-x", &self.service_exclude_cidr)?;
        notes.extend(
            skipped
                .into_iter()
                .map(|c| format!("-x: IPv6 range {c} skipped")),
        );
        let ids = |v: &str| split(v).into_iter().map(str::to_string).collect::<Vec<_>>();
        let proxy_uids = ids(&self.proxy_uid);
        let proxy_gids = match &self.proxy_gid {
            Some(g) => ids(g),
            None => proxy_uids.clone(),
        };
        Ok((
            Capture {
                proxy_port: self.envoy_port,
                inbound_capture_port: self.inbound_capture_port,
                inbound_tunnel_port: self.inbound_tunnel_port,
                proxy_uids,
                proxy_gids,
                inbound_ports: port_selection("-b", &self.inbound_ports)?,
                inbound_ports_exclude: ports("-d", &self.inbound_exclude)?,
                outbound_cidrs,
                outbound_cidrs_exclude,
                outbound_ports: ports("-q", &self.outbound_ports)?,
                outbound_ports_exclude: ports("-o", &self.outbound_exclude)?,
                kube_virt_interfaces: ids(&self.kube_virt_interfaces),
                exclude_interfaces: ids(&self.exclude_interfaces),
            },
            notes,
        ))
    }
}

/// Runs the command on `args` (without the program name and `iptables`); returns the exit
/// code.
pub fn run(args: Vec<String>) -> i32 {
    let args =
        match Args::try_parse_from(std::iter::once("pilotfish iptables".to_string()).chain(args)) {
            Ok(a) => a,
            Err(e) => {
                let _ = e.print();
                return if e.use_stderr() { 2 } else { 0 };
            }
        };
    let (capture, notes) = match args.capture() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    for n in notes {
        eprintln!("note: {n}");
    }
    let rules = render(&capture);
    if args.dry_run {
        print!(
            "{}",
            restore_text(if args.cleanup_only { &[] } else { &rules })
        );
        return 0;
    }
    let result = save().and_then(|saved| {
        let input = if args.cleanup_only {
            super::restore::merge(&saved, &rules, &[])
        } else {
            super::restore::merge(&saved, &[], &rules)
        };
        restore(&input)
    });
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// The current nat table.
fn save() -> Result<String, String> {
    let out = Command::new("iptables-save")
        .args(["-t", "nat"])
        .output()
        .map_err(|e| format!("cannot run iptables-save: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-save failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces the nat table with `input` in one transaction.
fn restore(input: &str) -> Result<(), String> {
    let mut child = Command::new("iptables-restore")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run iptables-restore: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("iptables-restore: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("iptables-restore: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "iptables-restore refused the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
