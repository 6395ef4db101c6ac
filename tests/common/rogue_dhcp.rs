//! A scripted DHCP server for hostile-offer tests: a thread inside the lab
//! gateway's namespace that answers every DISCOVER and REQUEST with the
//! fields a test sets (any of them wrong on purpose), and notes the
//! hostnames (option 12) clients sent. Stopped and joined on drop.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use dhcproto::v4::{self, DhcpOption, Message, MessageType, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

use super::{Lab, UPLINK};

/// What the server puts in its OFFERs and ACKs.
#[derive(Debug, Clone)]
pub struct Offer {
    pub address: Ipv4Addr,
    pub server: Ipv4Addr,
    pub mask: Option<Ipv4Addr>,
    pub router: Option<Ipv4Addr>,
    pub lease_time: Option<u32>,
}

impl Offer {
    /// A sound offer of `address` in 192.0.2.0/24 from the lab gateway.
    pub fn sound(address: &str) -> Offer {
        Offer {
            address: address.parse().unwrap(),
            server: super::GATEWAY.parse().unwrap(),
            mask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            router: Some(super::GATEWAY.parse().unwrap()),
            lease_time: Some(600),
        }
    }
}

pub struct RogueDhcp {
    offer: Arc<Mutex<Offer>>,
    silent: Arc<AtomicBool>,
    hostnames: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl RogueDhcp {
    pub fn start(lab: &Lab, offer: Offer) -> RogueDhcp {
        let netns = format!("/run/netns/{}", lab.ns("gw"));
        let offer = Arc::new(Mutex::new(offer));
        let hostnames = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (offer, hostnames, stop) = (offer.clone(), hostnames.clone(), stop.clone());
            let silent = silent.clone();
            std::thread::spawn(move || {
                // setns moves only this thread into the gateway's namespace.
                let file = std::fs::File::open(&netns).unwrap();
                nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
                let socket = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 67)).unwrap();
                socket.set_broadcast(true).unwrap();
                bind_to_device(&socket, UPLINK);
                socket
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                ready_tx.send(()).unwrap();
                serve(&socket, &offer, &hostnames, &stop, &silent);
            })
        };
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the scripted DHCP server did not start");
        RogueDhcp {
            offer,
            silent,
            hostnames,
            stop,
            thread: Some(thread),
        }
    }

    /// Changes what the next replies carry.
    pub fn set(&self, offer: Offer) {
        *self.offer.lock().unwrap() = offer;
    }

    /// Stops answering (or starts again): a server that went away.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }

    /// The hostnames clients sent in option 12, in arrival order.
    pub fn hostnames(&self) -> Vec<String> {
        self.hostnames.lock().unwrap().clone()
    }
}

impl Drop for RogueDhcp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn bind_to_device(socket: &UdpSocket, device: &str) {
    // SAFETY: the option value is the device name's bytes, its length given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            device.as_ptr().cast(),
            device.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_BINDTODEVICE {device}");
}

fn serve(
    socket: &UdpSocket,
    offer: &Mutex<Offer>,
    hostnames: &Mutex<Vec<String>>,
    stop: &AtomicBool,
    silent: &AtomicBool,
) {
    let mut buffer = [0u8; 1500];
    while !stop.load(Ordering::SeqCst) {
        let Ok((n, _)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let Ok(request) = Message::decode(&mut Decoder::new(&buffer[..n])) else {
            continue;
        };
        if silent.load(Ordering::SeqCst) || !(6..=16).contains(&request.hlen()) {
            continue;
        }
        if let Some(DhcpOption::Hostname(name)) = request.opts().get(OptionCode::Hostname) {
            hostnames.lock().unwrap().push(name.clone());
        }
        let kind = match request.opts().msg_type() {
            Some(MessageType::Discover) => MessageType::Offer,
            Some(MessageType::Request) => MessageType::Ack,
            _ => continue,
        };
        let offer = offer.lock().unwrap().clone();
        let mut reply = Message::default();
        reply
            .set_opcode(v4::Opcode::BootReply)
            .set_xid(request.xid())
            .set_flags(request.flags())
            .set_chaddr(&request.chaddr()[..6])
            .set_yiaddr(offer.address)
            .set_siaddr(offer.server);
        let options = reply.opts_mut();
        options.insert(DhcpOption::MessageType(kind));
        options.insert(DhcpOption::ServerIdentifier(offer.server));
        if let Some(mask) = offer.mask {
            options.insert(DhcpOption::SubnetMask(mask));
        }
        if let Some(router) = offer.router {
            options.insert(DhcpOption::Router(vec![router]));
        }
        if let Some(lease) = offer.lease_time {
            options.insert(DhcpOption::AddressLeaseTime(lease));
        }
        let mut bytes = Vec::new();
        reply.encode(&mut Encoder::new(&mut bytes)).unwrap();
        let _ = socket.send_to(&bytes, SocketAddrV4::new(Ipv4Addr::BROADCAST, 68));
    }
}
