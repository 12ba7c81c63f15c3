//! The `pilotfish` binary: Envoy's command line, then the app.

use clap::Parser;

fn main() {
    let opts = pilotfish::bootstrap::cli::Options::parse();
    std::process::exit(pilotfish::app::run(opts));
}
