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

type Job = Box<dyn FnOnce() + Send>;

/// A thread inside a network namespace for the length of one attach, for
/// several pieces of work: each [`run_in`] costs a thread start and a
/// setns (0.05–0.1 ms here, docs/hook-timing.md).
pub struct Worker {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread and enters `netns`.
    pub fn enter(netns: &File, name: &str) -> io::Result<Worker> {
        let netns = netns.try_clone()?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (entered, outcome) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let result = nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32));
                let ok = result.is_ok();
                let _ = entered.send(result);
                if ok {
                    for job in queue {
                        job();
                    }
                }
            })?;
        let worker = Worker {
            jobs: Some(jobs),
            thread: Some(thread),
        };
        outcome
            .recv()
            .map_err(|_| io::Error::other("netns thread ended before entering"))??;
        Ok(worker)
    }

    /// Runs `work` inside the namespace and returns what it returned.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| io::Error::other("netns thread gone"))?;
        result
            .recv()
            .map_err(|_| io::Error::other("netns thread panicked"))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
