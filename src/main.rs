//! The `pilotfish` binary: Envoy's command line, then the app; or `pilotfish iptables`.

use clap::Parser;

fn main() {
    // `pilotfish iptables ...` sets up traffic capture, as istio-iptables does.
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("iptables") {
        std::process::exit(pilotfish::iptables::cli::run(args.collect()));
    }
    let opts = pilotfish::bootstrap::cli::Options::parse();
    std::process::exit(pilotfish::app::run(opts));
}
