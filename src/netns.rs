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

/// A job for a [`Worker`]'s thread, told whether entering failed.
type Job = Box<dyn FnOnce(Option<&io::Error>) + Send>;

/// A thread inside a network namespace for the length of one attach, for
/// several pieces of work: each [`run_in`] costs a thread start and a
/// setns (0.05–0.1 ms here, docs/hook-timing.md). It starts entering at
/// once, while its caller goes on.
pub struct Worker {
    jobs: Option<std::sync::mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Work given to a [`Worker`], its result to be collected.
pub struct Pending<T>(std::sync::mpsc::Receiver<io::Result<T>>);

impl<T> Pending<T> {
    /// Waits for the work's result (or why it could not run).
    pub fn wait(self) -> io::Result<T> {
        self.0
            .recv()
            .map_err(|_| io::Error::other("netns thread panicked"))?
    }
}

impl Worker {
    /// Starts the thread, which enters `netns`; a failure to enter is
    /// every job's error.
    pub fn enter(netns: &File, name: &str) -> io::Result<Worker> {
        let netns = netns.try_clone()?;
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .stack_size(64 * 1024)
            .spawn(move || {
                let entered = nix::sched::setns(&netns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(|e| io::Error::from_raw_os_error(e as i32));
                for job in queue {
                    job(entered.as_ref().err());
                }
            })?;
        Ok(Worker {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Starts `work` inside the namespace; its result is collected later.
    pub fn start<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Pending<T> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |failed| {
            let _ = done.send(match failed {
                Some(e) => Err(io::Error::new(e.kind(), e.to_string())),
                None => Ok(work()),
            });
        });
        if let Some(jobs) = &self.jobs {
            // A thread gone drops the job, and `wait` says so.
            let _ = jobs.send(job);
        }
        Pending(result)
    }

    /// Runs `work` inside the namespace and returns what it returned.
    pub fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> io::Result<T> {
        self.start(work).wait()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_runs_jobs_in_turn_and_reports_a_failed_entry_to_each() {
        let own = File::open("/proc/self/ns/net").unwrap();
        let worker = Worker::enter(&own, "test-netns").unwrap();
        let first = worker.start(|| std::thread::current().name().map(str::to_string));
        let second = worker.run(|| 2).unwrap();
        assert_eq!(first.wait().unwrap().as_deref(), Some("test-netns"));
        assert_eq!(second, 2);
        drop(worker);
        // Not a namespace: setns fails, and every job says why.
        let not_a_namespace = File::open("/dev/null").unwrap();
        let worker = Worker::enter(&not_a_namespace, "test-netns").unwrap();
        let error = worker.run(|| ()).unwrap_err();
        assert_eq!(error.raw_os_error(), None);
        assert!(error.to_string().contains("Invalid argument"), "{error}");
        assert!(worker.run(|| ()).is_err());
    }
}
