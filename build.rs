//! Links `macvlan-runc` with its own entry point, which passes runtime calls
//! other than create/run to runc before the C library starts (issue 17;
//! `src/oci/passthrough.rs`).

fn main() {
    println!("cargo:rustc-link-arg-bin=macvlan-runc=-Wl,--entry=macvlan_runc_entry");
    println!("cargo:rerun-if-changed=build.rs");
}
