//! The rendered rules of the scenarios istio-iptables' own tests cover, against golden files
//! in `iptables/testdata/` (`UPDATE_GOLDEN=1` rewrites them after a deliberate change).

use clap::Parser;

use super::cli::Args;
use super::{Family, render, restore_text};

fn rendered(flags: &[&str], family: Family) -> String {
    let args = Args::try_parse_from(std::iter::once("iptables").chain(flags.iter().copied()))
        .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
    let (capture, _) = args.capture().unwrap();
    restore_text(&render(&capture, family))
}

fn golden(name: &str, flags: &[&str]) {
    golden_of(name, flags, Family::V4)
}

fn golden_of(name: &str, flags: &[&str], family: Family) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("iptables/testdata")
        .join(format!("{name}.golden"));
    let got = rendered(flags, family);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(
        got,
        want,
        "{name}: rendered rules differ from {}",
        path.display()
    );
}

#[test]
fn default_flags_capture_outbound_of_nothing_and_no_inbound() {
    golden("empty", &[]);
}

/// The flags Istio's sidecar injector passes.
const SIDECAR: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
];

#[test]
fn the_sidecar_injector_flags() {
    golden("istio-sidecar", SIDECAR);
}

#[test]
fn inbound_ports() {
    golden("inbound-ports-wildcard", &["-b", "*"]);
    golden("inbound-ports-include", &["-b", "32000,31000"]);
    golden("inbound-wildcard-exclude", &["-b", "*", "-d", "22,80,443"]);
}

#[test]
fn outbound_ports_and_cidrs() {
    golden("ipnets", &["-i", "10.0.0.0/8"]);
    golden("ip-range", &["-i", "9.9.0.0/16", "-x", "1.1.0.0/16"]);
    golden("outbound-ports-include", &["-q", "32000,31000"]);
    golden("outbound-ports-exclude", &["-o", "22,80,443"]);
    golden("outbound-ports-exclude-single", &["-o", "22"]);
    golden("loopback-outbound-iprange", &["-i", "127.1.2.3/32"]);
}

#[test]
fn uid_and_gid_exclusion() {
    golden("uid-gid", &["-u", "3,4", "-g", "1,2"]);
}

#[test]
fn interfaces() {
    golden("kube-virt-interfaces", &["-k", "eth1,eth2", "-i", "*"]);
    golden("basic-exclude-nic", &["-c", "not-istio-nic"]);
}

#[test]
fn bad_flags_are_errors_naming_the_flag() {
    let err = |flags: &[&str]| -> String {
        match Args::try_parse_from(std::iter::once("iptables").chain(flags.iter().copied())) {
            Err(e) => e.to_string(),
            Ok(a) => a.capture().err().unwrap_or_default(),
        }
    };
    assert!(err(&["-b", "80,http"]).contains("-b: \"http\" is not a port"));
    assert!(err(&["-i", "10.0.0.0/40"]).contains("-i: \"10.0.0.0/40\" is not a CIDR"));
    assert!(err(&["-x", "*"]).contains("-x"));
    assert!(err(&["-m", "TPROXY"]).contains("TPROXY"));
    assert!(err(&["--no-such-flag"]).contains("--no-such-flag"));
    // IPv6 ranges are skipped while IPv6 capture is off, with a note.
    let args = Args::try_parse_from(["iptables", "-i", "10.0.0.0/8,2001:db8::/32"]).unwrap();
    let (c, notes) = args.capture().unwrap();
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].starts_with("-i: IPv6 range 2001:db8::/32 skipped"),
        "{notes:?}"
    );
    assert!(!restore_text(&render(&c, Family::V4)).contains("2001"));
}

#[test]
fn ipv6_renders_the_same_chains_with_its_own_addresses() {
    golden_of("ipv6-istio-sidecar", SIDECAR, Family::V6);
    let v6 = rendered(SIDECAR, Family::V6);
    assert!(
        v6.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN"),
        "{v6}"
    );
    assert!(v6.contains("-A ISTIO_OUTPUT -d ::1/128 -j RETURN"), "{v6}");
    assert!(!v6.contains("127.0.0"), "{v6}");
    // Each family gets the CIDRs of its own.
    let mixed = [
        "-i",
        "10.0.0.0/8,2001:db8::/32",
        "-x",
        "10.1.0.0/16,2001:db8:1::/48",
    ];
    let (v4, v6) = (rendered(&mixed, Family::V4), rendered(&mixed, Family::V6));
    assert!(
        v4.contains("-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"),
        "{v4}"
    );
    assert!(
        v4.contains("-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN"),
        "{v4}"
    );
    assert!(!v4.contains("2001:"), "{v4}");
    assert!(
        v6.contains("-A ISTIO_OUTPUT -d 2001:db8::/32 -j ISTIO_REDIRECT"),
        "{v6}"
    );
    assert!(
        v6.contains("-A ISTIO_OUTPUT -d 2001:db8:1::/48 -j RETURN"),
        "{v6}"
    );
    assert!(!v6.contains("10.0.0.0"), "{v6}");
}
