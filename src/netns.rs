//! Work inside another network namespace on a short-lived thread: setns
//! moves only the calling thread, so the caller's own namespace never
//! changes, and sockets or sysctl files opened there keep pointing at the
//! namespace they were opened in.

use std::fs::File;
use std::io;

/// Runs `work` on a new thread that has entered the namespace `netns`.
pub fn run_in<T: Send + 'static>(
    netns: &File,
    name: &str,
    work: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let netns = netns.try_clone()?;
    std::thread::Builder::new()
        .name(name.into())
        .stack_size(64 * 1024)
        .spawn(move || {
            nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
            work()
        })?
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
}
