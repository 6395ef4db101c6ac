//! dnsmasq as the lab LAN's DHCP server, in the gateway namespace, with its
//! own lease file, log and pid file in the lab directory; stopped by pid.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Lab, UPLINK};

pub struct Dnsmasq {
    child: Child,
    pub leases: PathBuf,
    pub log: PathBuf,
}

/// One line of dnsmasq's lease file: `expiry mac ip hostname client-id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseLine {
    pub expiry: u64,
    pub mac: String,
    pub ip: String,
    pub client_id: String,
}

impl Dnsmasq {
    /// Serves 192.0.2.100–192.0.2.150 (/24, router 192.0.2.1) with
    /// `extra` options added (for example `--dhcp-option=option:T1,3`).
    pub fn start(lab: &Lab, tag: &str, extra: &[&str]) -> Dnsmasq {
        Dnsmasq::start_range(
            lab,
            tag,
            "192.0.2.100,192.0.2.150,255.255.255.0",
            "192.0.2.1",
            extra,
        )
    }

    /// Serves `range` (dnsmasq's `first,last,mask`; the gateway must hold an
    /// address in that subnet) with 2-minute leases and `router`.
    pub fn start_range(lab: &Lab, tag: &str, range: &str, router: &str, extra: &[&str]) -> Dnsmasq {
        let dir = lab.dir.path().join(format!("dnsmasq-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        let leases = dir.join("leases");
        let log = dir.join("log");
        std::fs::write(&leases, "").unwrap();
        let netns = format!("--net=/run/netns/{}", lab.ns("gw"));
        let mut args: Vec<String> = vec![
            netns,
            "dnsmasq".into(),
            "--keep-in-foreground".into(),
            "--conf-file=/dev/null".into(),
            "--port=0".into(),
            "--user=root".into(),
            "--group=root".into(),
            format!("--interface={UPLINK}"),
            "--bind-interfaces".into(),
            format!("--dhcp-range={range},2m"),
            "--dhcp-lease-max=100000".into(),
            format!("--dhcp-option=option:router,{router}"),
            "--dhcp-authoritative".into(),
            "--log-dhcp".into(),
            format!("--log-facility={}", log.display()),
            format!("--dhcp-leasefile={}", leases.display()),
            format!("--pid-file={}", dir.join("pid").display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let child = Command::new("nsenter")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start dnsmasq (dnsmasq-base installed?)");
        let server = Dnsmasq { child, leases, log };
        let started = Instant::now();
        while !server.log_text().contains("DHCP, IP range") {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "dnsmasq did not start: {}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The leases dnsmasq holds now.
    pub fn leases(&self) -> Vec<LeaseLine> {
        std::fs::read_to_string(&self.leases)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                Some(LeaseLine {
                    expiry: fields.first()?.parse().ok()?,
                    mac: fields.get(1)?.to_string(),
                    ip: fields.get(2)?.to_string(),
                    client_id: fields.get(4).unwrap_or(&"*").to_string(),
                })
            })
            .collect()
    }

    /// The lease of `mac`, waiting up to 3 s for dnsmasq to write it
    /// (it writes its lease file after it answers).
    pub fn wait_lease(&self, mac: &str) -> LeaseLine {
        let started = Instant::now();
        loop {
            if let Some(lease) = self.lease_for_mac(mac) {
                return lease;
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "no lease for {mac} in dnsmasq's lease file: {:?}",
                self.leases()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn lease_for_mac(&self, mac: &str) -> Option<LeaseLine> {
        self.leases().into_iter().find(|l| l.mac == mac)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
