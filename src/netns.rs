//! Work inside another network namespace, on a short-lived thread or on
//! the calling thread for a moment: setns moves only the calling thread,
//! and sockets or sysctl files opened there keep pointing at the namespace
//! they were opened in.

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

/// This thread inside another network namespace until dropped, when it
/// goes back to the one it came from. Cheaper than a thread of its own (no
/// thread start, no hand-over between threads: each a wake-up, tens of
/// microseconds on a VM; issue 17), for work that opens nothing meant for
/// the thread's own namespace meanwhile.
struct Inside {
    home: File,
}

impl Drop for Inside {
    fn drop(&mut self) {
        if let Err(e) = nix::sched::setns(&self.home, nix::sched::CloneFlags::CLONE_NEWNET) {
            // Going on in a container's namespace would configure the
            // wrong one: stop here.
            eprintln!("macvlan: cannot return to this thread's network namespace: {e}");
            std::process::abort();
        }
    }
}

/// Runs `work` on this thread inside the namespace `netns`, then returns
/// the thread to its own.
pub fn on_this_thread<T>(netns: &File, work: impl FnOnce() -> T) -> io::Result<T> {
    let home = File::open("/proc/thread-self/ns/net")?;
    nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| io::Error::from_raw_os_error(e as i32))?;
    let inside = Inside { home };
    let result = work();
    drop(inside);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn own() -> (u64, u64) {
        let meta = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        (meta.dev(), meta.ino())
    }

    #[test]
    fn work_runs_inside_and_the_thread_comes_back() {
        let before = own();
        // A namespace of its own, held by a process for the test.
        let mut holder = std::process::Command::new("unshare")
            .args(["-n", "sleep", "30"])
            .spawn()
            .unwrap();
        let path = format!("/proc/{}/ns/net", holder.id());
        let mut target = None;
        for _ in 0..100 {
            let meta = std::fs::metadata(&path).unwrap();
            if (meta.dev(), meta.ino()) != before {
                target = Some((meta.dev(), meta.ino()));
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let target = target.expect("unshare made a namespace");
        let netns = File::open(&path).unwrap();
        let inside = on_this_thread(&netns, own).unwrap();
        let _ = holder.kill();
        let _ = holder.wait();
        assert_eq!(inside, target);
        assert_eq!(own(), before);
        // Not a namespace: refused, and the thread stays where it was.
        let not_a_namespace = File::open("/dev/null").unwrap();
        let error = on_this_thread(&not_a_namespace, || ()).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EINVAL));
        assert_eq!(own(), before);
    }
}
