//! Traffic capture, as `istio-iptables` sets it up in REDIRECT mode: the nat-table chains
//! ISTIO_INBOUND, ISTIO_REDIRECT, ISTIO_IN_REDIRECT and ISTIO_OUTPUT that send a pod's
//! inbound TCP to the inbound capture port (15006) and its outbound TCP to the outbound port
//! (15001), except the proxy's own traffic (its uid and gid) and what the flags exclude.
//!
//! [`render`] is pure: flags in, iptables-restore rules out, in istio-iptables' order.
//! [`restore`] merges them into a saved nat table; [`cli`] is the `pilotfish iptables`
//! command that applies, prints (dry run) or removes them.

pub mod cli;
pub mod restore;

use std::net::IpAddr;

/// The chains the capture owns, in the order they are created.
pub const CHAINS: [&str; 4] = [
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
];

/// A set of ports or addresses: everything, or a list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Selection<T> {
    /// Nothing (the flag is empty).
    #[default]
    None,
    /// `*`.
    All,
    /// An explicit list.
    Some(Vec<T>),
}

/// An IPv4 or IPv6 CIDR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// The prefix length.
    pub len: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An IP family: istio-iptables renders the same chains for each, with its loopback and
/// inbound-passthrough source addresses and the CIDRs of that family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// iptables.
    V4,
    /// ip6tables.
    V6,
}

impl Family {
    fn loopback(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.1/32",
            Family::V6 => "::1/128",
        }
    }

    /// The source address inbound-to-application connections bind (never captured again).
    fn inbound_passthrough_source(self) -> &'static str {
        match self {
            Family::V4 => "127.0.0.6/32",
            Family::V6 => "::6/128",
        }
    }

    fn has(self, c: &Cidr) -> bool {
        c.addr.is_ipv4() == (self == Family::V4)
    }

    /// The save and restore commands of its table.
    pub fn tools(self) -> (&'static str, &'static str) {
        match self {
            Family::V4 => ("iptables-save", "iptables-restore"),
            Family::V6 => ("ip6tables-save", "ip6tables-restore"),
        }
    }
}

/// The capture, as istio-iptables' flags describe it (REDIRECT mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// `-p`: where outbound TCP goes.
    pub proxy_port: u16,
    /// `-z`: where inbound TCP goes.
    pub inbound_capture_port: u16,
    /// `-e`: the inbound tunnel port, never captured.
    pub inbound_tunnel_port: u16,
    /// `-u`: the proxy's users (their traffic is not captured).
    pub proxy_uids: Vec<String>,
    /// `-g`: the proxy's groups.
    pub proxy_gids: Vec<String>,
    /// `-b`: inbound ports captured.
    pub inbound_ports: Selection<u16>,
    /// `-d`: inbound ports not captured (with `-b '*'`).
    pub inbound_ports_exclude: Vec<u16>,
    /// `-i`: outbound destinations captured.
    pub outbound_cidrs: Selection<Cidr>,
    /// `-x`: outbound destinations not captured.
    pub outbound_cidrs_exclude: Vec<Cidr>,
    /// `-q`: outbound ports captured whatever the destination.
    pub outbound_ports: Vec<u16>,
    /// `-o`: outbound ports not captured.
    pub outbound_ports_exclude: Vec<u16>,
    /// `-k`: virtual interfaces whose traffic is treated as outbound.
    pub kube_virt_interfaces: Vec<String>,
    /// `-c`: interfaces whose traffic is never captured.
    pub exclude_interfaces: Vec<String>,
    /// Capture IPv6 too (istio-iptables' `ENABLE_INBOUND_IPV6`).
    pub ipv6: bool,
}

impl Default for Capture {
    fn default() -> Self {
        Self {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            inbound_tunnel_port: 15008,
            proxy_uids: vec!["1337".into()],
            proxy_gids: vec!["1337".into()],
            inbound_ports: Selection::None,
            inbound_ports_exclude: Vec::new(),
            outbound_cidrs: Selection::None,
            outbound_cidrs_exclude: Vec::new(),
            outbound_ports: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            kube_virt_interfaces: Vec::new(),
            exclude_interfaces: Vec::new(),
            ipv6: false,
        }
    }
}

/// A comma-separated flag value as its non-empty items.
pub fn split(v: &str) -> Vec<&str> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Ports of flag `flag`.
pub fn ports(flag: &str, v: &str) -> Result<Vec<u16>, String> {
    split(v)
        .into_iter()
        .map(|p| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{flag}: {p:?} is not a port")),
        })
        .collect()
}

/// A port selection (`*`, a list, or empty).
pub fn port_selection(flag: &str, v: &str) -> Result<Selection<u16>, String> {
    Ok(match v.trim() {
        "" => Selection::None,
        "*" => Selection::All,
        other => Selection::Some(ports(flag, other)?),
    })
}

/// CIDRs of flag `flag`, of both families (an address alone is a host route).
pub fn cidrs(flag: &str, v: &str) -> Result<Vec<Cidr>, String> {
    split(v)
        .into_iter()
        .map(|item| {
            let bad = || format!("{flag}: {item:?} is not a CIDR");
            let (addr, len) = item.split_once('/').unwrap_or((item, ""));
            let addr: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let len = if len.is_empty() {
                max
            } else {
                len.parse::<u8>()
                    .ok()
                    .filter(|l| *l <= max)
                    .ok_or_else(bad)?
            };
            Ok(Cidr { addr, len })
        })
        .collect()
}

/// A CIDR selection (`*`, a list, or empty).
pub fn cidr_selection(flag: &str, v: &str) -> Result<Selection<Cidr>, String> {
    Ok(match v.trim() {
        "" => Selection::None,
        "*" => Selection::All,
        other => Selection::Some(cidrs(flag, other)?),
    })
}

/// `--dport P` or `-m multiport --dports P,Q` for several.
fn dports(ports: &[u16]) -> String {
    match ports {
        [p] => format!("--dport {p}"),
        _ => format!(
            "-m multiport --dports {}",
            ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// The nat-table commands of the capture for `family`, in istio-iptables' order, as
/// iptables-restore lines: `-N` creates a chain, `-A` appends, `-I <chain> 1` inserts first.
pub fn render(c: &Capture, family: Family) -> Vec<String> {
    let outbound_cidrs = match &c.outbound_cidrs {
        Selection::Some(l) => {
            Selection::Some(l.iter().filter(|c| family.has(c)).copied().collect())
        }
        other => other.clone(),
    };
    let outbound_cidrs_exclude: Vec<Cidr> = c
        .outbound_cidrs_exclude
        .iter()
        .filter(|c| family.has(c))
        .copied()
        .collect();
    let (loopback, passthrough_source) = (family.loopback(), family.inbound_passthrough_source());
    let mut out: Vec<String> = CHAINS.iter().map(|ch| format!("-N {ch}")).collect();
    let mut add = |s: String| out.push(s);
    for i in &c.exclude_interfaces {
        add(format!("-A PREROUTING -i {i} -j RETURN"));
        add(format!("-A OUTPUT -o {i} -j RETURN"));
    }
    for i in &c.kube_virt_interfaces {
        add(format!("-I PREROUTING 1 -i {i} -j RETURN"));
    }
    add(format!(
        "-A ISTIO_INBOUND -p tcp --dport {} -j RETURN",
        c.inbound_tunnel_port
    ));
    add(format!(
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        c.proxy_port
    ));
    add(format!(
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
        c.inbound_capture_port
    ));
    match &c.inbound_ports {
        Selection::None => {}
        Selection::All => {
            add("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
            if !c.inbound_ports_exclude.is_empty() {
                add(format!(
                    "-A ISTIO_INBOUND -p tcp {} -j RETURN",
                    dports(&c.inbound_ports_exclude)
                ));
            }
            add("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
        }
        Selection::Some(ports) => {
            add("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
            for p in ports {
                add(format!(
                    "-A ISTIO_INBOUND -p tcp --dport {p} -j ISTIO_IN_REDIRECT"
                ));
            }
        }
    }
    add("-A OUTPUT -j ISTIO_OUTPUT".into());
    if !c.outbound_ports_exclude.is_empty() {
        let d = dports(&c.outbound_ports_exclude);
        add(format!("-A ISTIO_OUTPUT -p tcp {d} -j RETURN"));
        add(format!("-A ISTIO_OUTPUT -p udp {d} -j RETURN"));
    }
    // Inbound-to-application connections bind 127.0.0.6: never captured again.
    add(format!(
        "-A ISTIO_OUTPUT -o lo -s {passthrough_source} -j RETURN"
    ));
    let loopback_included =
        matches!(&outbound_cidrs, Selection::Some(l) if l.iter().any(|c| c.addr.is_loopback()));
    for (kind, ids) in [("uid", &c.proxy_uids), ("gid", &c.proxy_gids)] {
        for id in ids {
            // The proxy calling its own pod's address goes through the inbound listener.
            add(format!(
                "-A ISTIO_OUTPUT -o lo ! -d {loopback} -p tcp ! --dport {} -m owner --{kind}-owner {id} -j ISTIO_IN_REDIRECT",
                c.inbound_tunnel_port
            ));
            // The application calling itself over loopback is left alone.
            if !loopback_included {
                add(format!(
                    "-A ISTIO_OUTPUT -o lo -m owner ! --{kind}-owner {id} -j RETURN"
                ));
            }
            // The proxy's own traffic is never captured.
            add(format!(
                "-A ISTIO_OUTPUT -m owner --{kind}-owner {id} -j RETURN"
            ));
        }
    }
    add(format!("-A ISTIO_OUTPUT -d {loopback} -j RETURN"));
    for cidr in &outbound_cidrs_exclude {
        add(format!("-A ISTIO_OUTPUT -d {cidr} -j RETURN"));
    }
    for p in &c.outbound_ports {
        add(format!(
            "-A ISTIO_OUTPUT -p tcp --dport {p} -j ISTIO_REDIRECT"
        ));
    }
    match &outbound_cidrs {
        Selection::None => {}
        Selection::All => {
            add("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into());
            for i in &c.kube_virt_interfaces {
                add(format!("-I PREROUTING 1 -i {i} -j ISTIO_REDIRECT"));
            }
        }
        Selection::Some(list) => {
            for cidr in list {
                for i in &c.kube_virt_interfaces {
                    add(format!(
                        "-I PREROUTING 1 -i {i} -d {cidr} -j ISTIO_REDIRECT"
                    ));
                }
                add(format!("-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT"));
            }
        }
    }
    out
}

/// The rules as an iptables-restore input for the nat table (what a dry run prints).
pub fn restore_text(rules: &[String]) -> String {
    let mut s = String::from("*nat\n");
    for r in rules {
        s.push_str(r);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

#[cfg(test)]
mod tests;
