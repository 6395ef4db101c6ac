//! `macvlan`: the OCI hook and the admin command line.

use clap::Parser;

fn main() {
    let cli = macvlan_runc::cli::Cli::parse();
    if let Err(error) = macvlan_runc::cli::run(cli) {
        // One line: the whole context chain, outermost first.
        eprintln!("macvlan: {error:#}");
        std::process::exit(1);
    }
}
