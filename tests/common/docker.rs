//! A dockerd of the test's own, inside a lab host's namespace, with its own
//! data root, exec root, socket and containerd namespace, and macvlan-runc
//! added as a runtime. Stopped by its process id in `Drop`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{run, text, Lab, MACVLAN_RUNC};

pub const IMAGE: &str = "lab/busybox:1";

pub struct Dockerd {
    pub dir: PathBuf,
    socket: PathBuf,
    child: Child,
}

impl Dockerd {
    /// Starts dockerd in `host`'s namespace and imports the busybox image.
    pub fn start(lab: &Lab, host: &str) -> Dockerd {
        Dockerd::start_with(lab, host, &[], &[])
    }

    /// As [`Dockerd::start`], with further runtimes (name, a config file
    /// passed as `runtimeArgs`, or none: the config from the environment)
    /// and environment variables for dockerd (and the containerd it runs).
    pub fn start_with(
        lab: &Lab,
        host: &str,
        runtimes: &[(&str, Option<&Path>)],
        env: &[(&str, &Path)],
    ) -> Dockerd {
        let dir = lab.dir.path().join(format!("docker-{host}"));
        std::fs::create_dir_all(&dir).unwrap();
        let daemon_json = dir.join("daemon.json");
        let runtime = |config: Option<&Path>| match config {
            Some(config) => serde_json::json!({
                "path": MACVLAN_RUNC,
                "runtimeArgs": ["--macvlan-config", config]
            }),
            None => serde_json::json!({ "path": MACVLAN_RUNC }),
        };
        let mut all = serde_json::json!({
            "macvlan-runc": runtime(Some(&lab.config_path(host)))
        });
        for (name, config) in runtimes {
            all[*name] = runtime(*config);
        }
        std::fs::write(
            &daemon_json,
            serde_json::json!({ "runtimes": all }).to_string(),
        )
        .unwrap();
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = Command::new("nsenter")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .arg(format!("--net=/run/netns/{}", lab.ns(host)))
            .arg("dockerd")
            .arg("--config-file")
            .arg(&daemon_json)
            .arg("--data-root")
            .arg(dir.join("data"))
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("docker.pid"))
            .arg("-H")
            .arg(format!("unix://{}", socket.display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=vfs",
            ])
            .arg(format!("--containerd-namespace={}-moby", lab.name))
            .arg(format!(
                "--containerd-plugins-namespace={}-plugins",
                lab.name
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd (Debian docker.io)");
        let dockerd = Dockerd { dir, socket, child };
        let started = Instant::now();
        while !dockerd.docker(&["version"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "dockerd did not come up: {}",
                std::fs::read_to_string(dockerd.dir.join("dockerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let tar = dockerd.dir.join("rootfs.tar");
        super::must(
            "tar",
            &[
                "-C",
                lab.rootfs.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ],
        );
        let out = dockerd.docker(&["import", tar.to_str().unwrap(), IMAGE]);
        assert!(out.status.success(), "docker import: {}", text(&out));
        dockerd
    }

    /// The containers directory: one entry per container that exists, running or not.
    pub fn containers_dir(&self) -> PathBuf {
        self.dir.join("data/containers")
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        let host = format!("unix://{}", self.socket.display());
        let mut all = vec!["120", "/usr/bin/docker", "-H", host.as_str()];
        all.extend_from_slice(args);
        run("timeout", &all)
    }

    /// `docker ARGS`, which must succeed; returns stdout, trimmed.
    pub fn must(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(out.status.success(), "docker {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // SIGTERM by pid: dockerd stops its own containerd and unmounts.
        let pid = self.child.id() as i32;
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
