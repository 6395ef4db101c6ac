//! Fault injection for the rollback and crash tests: with the `failpoints`
//! feature, the step named in `MACVLAN_FAILPOINT` fails on purpose
//! (`NAME`), or kills the process on the spot (`kill:NAME`, SIGKILL to
//! itself: no unwinding, no rollback — a crash at that instant). Without
//! the feature (every release build) `check` is an empty inline function.

/// Fails with an error, or dies, when the failpoint `name` is armed.
#[cfg(feature = "failpoints")]
pub fn check(name: &str) -> anyhow::Result<()> {
    let Ok(armed) = std::env::var("MACVLAN_FAILPOINT") else {
        return Ok(());
    };
    if armed == name {
        anyhow::bail!("failpoint {name} triggered");
    }
    if armed.strip_prefix("kill:") == Some(name) {
        // SAFETY: sends a signal to this process; nothing is touched after.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn check(_name: &str) -> anyhow::Result<()> {
    Ok(())
}
