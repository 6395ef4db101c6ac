//! `macvlan`: the OCI hook and the admin command line.

fn main() {
    macvlan_runc::log::mark_start();
    // Run by udhcpc as its script (`[dhcp] client = "udhcpc"`): argv[1] is
    // udhcpc's event, the lease is in the environment.
    if let Ok(container) = std::env::var(macvlan_runc::dhcp::external::SCRIPT_ENV) {
        let event = std::env::args().nth(1).unwrap_or_default();
        if let Err(error) = macvlan_runc::dhcp::external::script(&container, &event) {
            eprintln!("macvlan: udhcpc script: {error:#}");
            std::process::exit(1);
        }
        return;
    }
    // Run by a container runtime as a CNI plugin (spec 1.1): the command
    // is in the environment, the network configuration on stdin.
    if std::env::var_os("CNI_COMMAND").is_some() {
        std::process::exit(macvlan_runc::cni::main());
    }
    let cli = macvlan_runc::cli::Cli::from_args();
    if let Err(error) = macvlan_runc::cli::run(cli) {
        // One line: the whole context chain, outermost first.
        eprintln!("macvlan: {error:#}");
        std::process::exit(1);
    }
}
