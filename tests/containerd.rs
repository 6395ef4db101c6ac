//! containerd 1.6 directly: `ctr run --runc-binary macvlan-runc`, the
//! containerd of the test's own inside a lab host's namespace.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{run, text, Lab, GATEWAY, MACVLAN_RUNC, UPLINK};

struct Containerd {
    child: Child,
    socket: String,
    netns: String,
}

impl Containerd {
    fn start(lab: &Lab, host: &str) -> Containerd {
        let dir = lab.dir.path().join(format!("containerd-{host}"));
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("containerd.sock").display().to_string();
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n[grpc]\n  address = \"{socket}\"\n[ttrpc]\n  address = \"{socket}.ttrpc\"\n",
                root = dir.join("root").display(),
                state = dir.join("state").display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let netns = format!("--net=/run/netns/{}", lab.ns(host));
        // `--runc-binary` takes a path only: the shim, and so the wrapper,
        // inherit containerd's environment, which names the config file.
        let child = Command::new("nsenter")
            .args([&netns, "containerd", "--config", config.to_str().unwrap()])
            .env("MACVLAN_CONFIG", lab.config_path(host))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let containerd = Containerd {
            child,
            socket,
            netns,
        };
        let started = Instant::now();
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "containerd did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        containerd
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        let mut all = vec![
            "60",
            "nsenter",
            self.netns.as_str(),
            "ctr",
            "-a",
            self.socket.as_str(),
        ];
        all.extend_from_slice(args);
        run("timeout", &all)
    }

    fn must(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(out.status.success(), "ctr {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let tasks = self.ctr(&["task", "ls", "-q"]);
        for id in String::from_utf8_lossy(&tasks.stdout).split_whitespace() {
            let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
            std::thread::sleep(Duration::from_millis(300));
            let _ = self.ctr(&["task", "rm", "-f", id]);
        }
        let containers = self.ctr(&["container", "ls", "-q"]);
        for id in String::from_utf8_lossy(&containers.stdout).split_whitespace() {
            let _ = self.ctr(&["container", "rm", id]);
        }
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_run_with_macvlan_runc_as_the_runc_binary() {
    let lab = Lab::new(&["hA"]);
    let containerd = Containerd::start(&lab, "hA");
    let id = lab.id("ctr");
    containerd.must(&[
        "run",
        "-d",
        "--rootfs",
        "--runc-binary",
        MACVLAN_RUNC,
        "--env",
        "PATH=/bin",
        "--env",
        "TYPE=flat",
        "--env",
        &format!("HOSTIF={UPLINK}"),
        "--env",
        "IP=192.0.2.10/24",
        "--env",
        &format!("GW={GATEWAY}"),
        lab.rootfs.to_str().unwrap(),
        &id,
        "/bin/sleep",
        "100000",
    ]);
    let address = containerd.must(&[
        "task",
        "exec",
        "--exec-id",
        "a",
        &id,
        "/bin/ip",
        "-o",
        "-4",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(address.contains("192.0.2.10/24"), "{address}");
    containerd.must(&[
        "task",
        "exec",
        "--exec-id",
        "p",
        &id,
        "/bin/ping",
        "-c",
        "2",
        "-W",
        "3",
        GATEWAY,
    ]);
    assert_eq!(lab.records("hA")[0]["state"], "running");

    containerd.must(&["task", "kill", "-s", "KILL", &id]);
    let started = Instant::now();
    while !containerd.ctr(&["task", "rm", &id]).status.success() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "task did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(lab.records("hA")[0]["state"], "stopped");
}
