//! `pilotfish iptables`: istio-iptables' flags, then apply the capture (one atomic
//! iptables-restore of the nat table), print it (`--dry-run`), or remove it
//! (`--cleanup-only`). Unknown flags are an error.

use std::io::Write;
use std::process::{Command, Stdio};

use clap::Parser;

use super::{
    Capture, Family, cidr_selection, cidrs, port_selection, ports, render, restore_text, split,
};

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
    /// Capture IPv6 as well (ip6tables), as istio-iptables does when ENABLE_INBOUND_IPV6 is
    /// true.
    #[arg(skip = ipv6_from_env())]
    ipv6: bool,
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
        let ipv6 = self.ipv6;
        let outbound_cidrs = cidr_selection("-i", &self.service_cidr)?;
        if self.service_exclude_cidr.trim() == "*" {
            return Err("-x: `*` is not a valid exclusion".into());
        }
        let outbound_cidrs_exclude = cidrs("-x", &self.service_exclude_cidr)?;
        if !ipv6 {
            let listed = match &outbound_cidrs {
                super::Selection::Some(l) => l.as_slice(),
                _ => &[],
            };
            for (flag, list) in [("-i", listed), ("-x", &outbound_cidrs_exclude)] {
                for c in list.iter().filter(|c| c.addr.is_ipv6()) {
                    notes.push(format!(
                        "{flag}: IPv6 range {c} skipped (IPv6 capture is off; ENABLE_INBOUND_IPV6=true turns it on)"
                    ));
                }
            }
        }
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
                ipv6,
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
    let mut families = vec![Family::V4];
    if capture.ipv6 {
        families.push(Family::V6);
    }
    for family in families {
        let rules = render(&capture, family);
        if args.dry_run {
            print!(
                "{}",
                restore_text(if args.cleanup_only { &[] } else { &rules })
            );
            continue;
        }
        let result = save(family).and_then(|saved| {
            let input = if args.cleanup_only {
                super::restore::merge(&saved, &rules, &[])
            } else {
                super::restore::merge(&saved, &[], &rules)
            };
            restore(family, &input)
        });
        if let Err(e) = result {
            eprintln!("error: {e}");
            return 1;
        }
        if family == Family::V6 && !args.cleanup_only {
            // Inbound-to-application connections bind ::6, as istio-iptables sets up.
            add_inbound_passthrough_v6();
        }
    }
    0
}

/// Puts ::6 on the loopback interface (a no-op when it is there).
fn add_inbound_passthrough_v6() {
    let out = Command::new("ip")
        .args(["-6", "addr", "add", "::6/128", "dev", "lo"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) if String::from_utf8_lossy(&o.stderr).contains("File exists") => {}
        Ok(o) => eprintln!(
            "note: cannot add ::6 to lo: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => eprintln!("note: cannot run ip: {e}"),
    }
}

/// The current nat table of `family`.
fn save(family: Family) -> Result<String, String> {
    let tool = family.tools().0;
    let out = Command::new(tool)
        .args(["-t", "nat"])
        .output()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Replaces the nat table of `family` with `input` in one transaction.
fn restore(family: Family, input: &str) -> Result<(), String> {
    let tool = family.tools().1;
    let mut child = Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {tool}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| format!("{tool}: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} refused the rules: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// istio-iptables' `ENABLE_INBOUND_IPV6` environment variable.
fn ipv6_from_env() -> bool {
    std::env::var("ENABLE_INBOUND_IPV6").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}
