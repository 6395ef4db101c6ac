//! Fault injection for the rollback tests: with the `failpoints` feature, a
//! step named in `MACVLAN_FAILPOINT` fails on purpose. Without the feature
//! (every release build) `check` is an empty inline function.

/// Fails with an error when the failpoint `name` is armed.
#[cfg(feature = "failpoints")]
pub fn check(name: &str) -> anyhow::Result<()> {
    match std::env::var("MACVLAN_FAILPOINT") {
        Ok(armed) if armed == name => anyhow::bail!("failpoint {name} triggered"),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &str) -> anyhow::Result<()> {
    Ok(())
}
