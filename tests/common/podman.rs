//! podman 4.3 (Debian) with its own storage, run root and hooks directory
//! holding a copy of `hooks/macvlan.json`, run inside a lab host's namespace.

use std::path::PathBuf;
use std::process::Output;

use super::{run, text, Lab, MACVLAN};

pub const IMAGE: &str = "lab/busybox:1";

pub struct Podman {
    pub dir: PathBuf,
    netns: String,
    /// podman instances share /run/libpod and their shm locks whatever
    /// their roots: two at once in one test binary trip over each other
    /// ("acquiring lock … file exists"), so tests take turns.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Podman {
    pub fn new(lab: &Lab, host: &str) -> Podman {
        let turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
        let dir = lab.dir.path().join(format!("podman-{host}"));
        let hooks = dir.join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        // The shipped hooks.d file, pointed at the binary under test and the
        // lab host's config.
        let shipped: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/hooks/macvlan.json"))
                .unwrap(),
        )
        .unwrap();
        let mut hook = shipped.clone();
        hook["hook"]["path"] = MACVLAN.into();
        hook["hook"]["args"] =
            serde_json::json!(["macvlan", "--config", lab.config_path(host), "hook"]);
        assert_eq!(hook["when"], shipped["when"]);
        std::fs::write(hooks.join("macvlan.json"), hook.to_string()).unwrap();
        // The limits this machine needs (DESIGN.md §4) for every container,
        // also those podman makes itself, such as a pod's infra container.
        std::fs::write(
            dir.join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n",
        )
        .unwrap();
        let podman = Podman {
            dir,
            netns: format!("--net=/run/netns/{}", lab.ns(host)),
            _turn: turn,
        };
        let tar = podman.dir.join("rootfs.tar");
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
        podman.must(&["import", tar.to_str().unwrap(), IMAGE]);
        podman
    }

    /// podman with its CNI backend: our plugin (the binary under test, as
    /// `macvlan-runc`) beside Debian's, and `conflists` (name, JSON) in a
    /// network configuration directory of its own.
    pub fn with_cni(lab: &Lab, host: &str, conflists: &[(&str, serde_json::Value)]) -> Podman {
        let podman = Podman::new(lab, host);
        let plugins = podman.dir.join("cni-bin");
        let networks = podman.dir.join("cni-net");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&networks).unwrap();
        std::os::unix::fs::symlink(MACVLAN, plugins.join("macvlan-runc")).unwrap();
        for (name, conflist) in conflists {
            std::fs::write(
                networks.join(format!("{name}.conflist")),
                conflist.to_string(),
            )
            .unwrap();
        }
        std::fs::write(
            podman.dir.join("containers.conf"),
            format!(
                "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
                 [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\", \"/usr/lib/cni\"]\n\
                 network_config_dir = \"{}\"\n",
                plugins.display(),
                networks.display()
            ),
        )
        .unwrap();
        podman
    }

    /// containers/storage keeps one directory per container here.
    pub fn containers_dir(&self) -> PathBuf {
        self.dir.join("storage/vfs-containers")
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        let root = self.dir.join("storage");
        let runroot = self.dir.join("run");
        let hooks = self.dir.join("hooks");
        let conf = format!(
            "CONTAINERS_CONF={}",
            self.dir.join("containers.conf").display()
        );
        let mut all = vec![
            "120",
            "env",
            conf.as_str(),
            "nsenter",
            self.netns.as_str(),
            "podman",
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--hooks-dir",
            hooks.to_str().unwrap(),
            "--runtime",
            "runc",
        ];
        all.extend_from_slice(args);
        run("timeout", &all)
    }

    pub fn must(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(out.status.success(), "podman {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "--all", "--force", "--time", "0"]);
        let _ = self.podman(&["system", "reset", "--force"]);
    }
}
