//! Links `macvlan-runc` and `macvlan` with entry points of their own, which
//! pass runtime calls other than create/run to runc and hand hooks to the
//! daemon before the C library starts (issue 17; `src/early.rs`).

fn main() {
    // The entry point is x86_64 Linux assembly; elsewhere the wrapper
    // starts at the C library's `_start` and takes the full path always.
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if arch == "x86_64" && os == "linux" {
        println!("cargo:rustc-link-arg-bin=macvlan-runc=-Wl,--entry=macvlan_runc_entry");
        println!("cargo:rustc-link-arg-bin=macvlan=-Wl,--entry=macvlan_entry");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
