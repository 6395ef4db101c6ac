//! `macvlan dns`: answers A, AAAA and SRV queries for `<service>.<domain>`
//! and PTR queries for endpoint addresses from the store's live endpoints,
//! over UDP and TCP (RFC 7766); other names are forwarded or refused.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, Result};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::Endpoint;
use crate::log::Level;
use crate::net::Context;

/// TTL of the answers: short, since endpoints come and go with health checks.
pub const ANSWER_TTL: u32 = 5;

/// What to do with a name outside the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Others {
    Refuse,
    Forward(SocketAddr),
}

/// How the responder was asked to run.
#[derive(Debug, Clone)]
pub struct DnsOptions {
    pub listen: SocketAddr,
    /// The zone it answers for, e.g. `lab.` (stored lower case, fully qualified).
    pub domain: Name,
    pub others: Others,
    /// Who may have other names forwarded (an open resolver on a LAN
    /// address would serve anyone's queries, and amplify floods).
    pub forward_clients: ForwardClients,
}

/// The clients whose queries for other names are forwarded; everyone else
/// gets REFUSED for them (names in the zone are answered for all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardClients {
    /// The subnets of the networks in the store (read again every
    /// `CLIENTS_REFRESH`), and loopback.
    Served,
    /// These prefixes (`--forward-clients`), and loopback.
    Listed(Vec<Prefix>),
}

/// An IPv4 or IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    V4(crate::cidr::Ipv4Cidr),
    V6(crate::cidr::Ipv6Cidr),
}

impl Prefix {
    pub fn parse(text: &str) -> Result<Prefix> {
        if let Ok(v4) = text.parse() {
            return Ok(Prefix::V4(v4));
        }
        text.parse::<crate::cidr::Ipv6Cidr>()
            .ok()
            .map(Prefix::V6)
            .with_context(|| {
                format!("--forward-clients {text:?}: expected a prefix like 192.0.2.0/24 or 2001:db8::/64")
            })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self, ip) {
            (Prefix::V4(p), IpAddr::V4(ip)) => p.contains(ip),
            (Prefix::V6(p), IpAddr::V6(ip)) => p.contains(ip),
            _ => false,
        }
    }
}

/// How often the served networks' subnets are read again.
const CLIENTS_REFRESH: Duration = Duration::from_secs(5);

/// The forwarding allow-list as one thread sees it.
struct Clients {
    rule: ForwardClients,
    prefixes: Vec<Prefix>,
    read_at: Option<std::time::Instant>,
}

impl Clients {
    fn new(rule: &ForwardClients) -> Clients {
        Clients {
            rule: rule.clone(),
            prefixes: match rule {
                ForwardClients::Listed(list) => list.clone(),
                ForwardClients::Served => Vec::new(),
            },
            read_at: None,
        }
    }

    /// Whether `peer` may have names outside the zone forwarded.
    fn may_forward(&mut self, ctx: &Context, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        if peer.is_loopback() {
            return true;
        }
        if self.rule == ForwardClients::Served
            && self
                .read_at
                .is_none_or(|at| at.elapsed() >= CLIENTS_REFRESH)
        {
            // A store that cannot be read keeps the last list.
            if let Ok(networks) = ctx
                .store()
                .and_then(|store| Ok(crate::network::list(store, &ctx.keys)?))
            {
                self.prefixes = networks
                    .iter()
                    .flat_map(|n| {
                        n.subnet()
                            .map(Prefix::V4)
                            .into_iter()
                            .chain(n.subnet6().map(Prefix::V6))
                    })
                    .collect();
            }
            self.read_at = Some(std::time::Instant::now());
        }
        self.prefixes.iter().any(|p| p.contains(peer))
    }
}

impl DnsOptions {
    pub fn parse_domain(text: &str) -> Result<Name> {
        let mut name = Name::from_str(text.trim())
            .ok()
            .filter(|n| n.num_labels() > 0)
            .with_context(|| format!("--domain {text:?}: expected a domain name like svc.example"))?
            .to_lowercase();
        name.set_fqdn(true);
        Ok(name)
    }
}

/// The answer to one query, or the decision to forward it, or to stay
/// silent.
pub enum Reply {
    Answer(Message),
    Forward,
    /// A response (QR=1) arrived: answering it, even with FORMERR, lets two
    /// responders ping-pong forever on one spoofed packet.
    Ignore,
}

/// The zone's SOA, in the authority section of negative answers so that
/// resolvers may cache them (RFC 2308): the minimum is the answers' TTL.
fn soa(domain: &Name) -> Record {
    let host = |label: &str| {
        Name::from_str(label)
            .and_then(|n| n.append_domain(domain))
            .unwrap_or_else(|_| domain.clone())
    };
    Record::from_rdata(
        domain.clone(),
        ANSWER_TTL,
        RData::SOA(SOA::new(
            host("ns"),
            host("hostmaster"),
            1,
            60,
            60,
            3600,
            ANSWER_TTL,
        )),
    )
}

/// The largest UDP answer `request` can take: 512 bytes without EDNS
/// (RFC 1035), else what it advertises (at least 512, at most 4096).
pub fn udp_limit(request: &Message) -> usize {
    match &request.edns {
        None => 512,
        Some(edns) => usize::from(edns.max_payload()).clamp(512, 4096),
    }
}

/// `message` on the wire within `limit` bytes: records are dropped from the
/// end (additional section first) until it fits, and then TC says so, so
/// the client asks again over TCP or makes do with what fits.
pub fn encode_within(mut message: Message, limit: usize) -> Option<Vec<u8>> {
    loop {
        let bytes = message.to_vec().ok()?;
        if bytes.len() <= limit {
            return Some(bytes);
        }
        message.metadata.truncation = true;
        if message.additionals.pop().is_none() && message.answers.pop().is_none() {
            // Nothing left to drop: the header and question alone.
            return message.to_vec().ok().filter(|b| b.len() <= limit);
        }
    }
}

/// Whose endpoints a query name asks for, relative to the domain.
#[derive(Debug, PartialEq, Eq)]
enum Question {
    /// The zone's own name.
    Apex,
    /// `<service>.D` or `_<service>._tcp.D`.
    Service(String),
    /// `<container-id-prefix>.<service>.D`: an SRV target, one endpoint.
    Endpoint { service: String, container: String },
}

/// Splits `name` (lower case) into what it asks for; `None` outside the
/// zone's names.
fn question(name: &Name, domain: &Name) -> Option<Question> {
    let labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_string())
        .collect();
    let relative = &labels[..labels.len() - domain.num_labels() as usize];
    match relative {
        [] => Some(Question::Apex),
        [service] => Some(Question::Service(service.clone())),
        [service, protocol] if service.starts_with('_') && protocol == "_tcp" => {
            Some(Question::Service(service[1..].to_string()))
        }
        [container, service] => Some(Question::Endpoint {
            service: service.clone(),
            container: container.clone(),
        }),
        _ => None,
    }
}

/// The SRV target naming one endpoint: the first 12 characters of its
/// container id under the service's name.
fn target(endpoint: &Endpoint, service: &str, domain: &Name) -> Result<Name> {
    let short: String = endpoint
        .container
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(12)
        .collect::<String>()
        .to_ascii_lowercase();
    Ok(Name::from_str(&format!("{short}.{service}"))?.append_domain(domain)?)
}

/// Where the answers come from: the live endpoints.
pub trait Endpoints {
    /// The endpoints of one service name.
    fn of(&self, service: &str) -> Result<Vec<Endpoint>>;
    /// Every endpoint with its service name (for PTR queries).
    fn all(&self) -> Result<Vec<(String, Endpoint)>>;
}

/// How often the snapshot of the endpoints is read again from the store.
const SNAPSHOT_REFRESH: Duration = Duration::from_secs(1);

/// Every endpoint with its service name, as read from the store at
/// `read_at`. Queries are answered from it, never from the store: a slow
/// store (an etcd election, say) holds up the next refresh, not the
/// answers. Past `ANSWER_TTL` without a successful read it is stale, and
/// names in the zone get SERVFAIL rather than old addresses.
#[derive(Default)]
pub struct Snapshot {
    endpoints: Vec<(String, Endpoint)>,
    read_at: Option<std::time::Instant>,
}

type Shared = std::sync::Arc<std::sync::RwLock<Snapshot>>;

/// The snapshot as the queries see it.
struct Current<'a>(&'a Shared);

impl Current<'_> {
    fn fresh(&self) -> Result<std::sync::RwLockReadGuard<'_, Snapshot>> {
        let snapshot = self.0.read().unwrap_or_else(|e| e.into_inner());
        match snapshot.read_at {
            Some(at) if at.elapsed() < Duration::from_secs(u64::from(ANSWER_TTL)) => Ok(snapshot),
            Some(at) => anyhow::bail!("the store has not been read for {:?}", at.elapsed()),
            None => anyhow::bail!("the store has not been read yet"),
        }
    }
}

impl Endpoints for Current<'_> {
    fn of(&self, service: &str) -> Result<Vec<Endpoint>> {
        Ok(self
            .fresh()?
            .endpoints
            .iter()
            .filter(|(name, _)| name == service)
            .map(|(_, e)| e.clone())
            .collect())
    }

    fn all(&self) -> Result<Vec<(String, Endpoint)>> {
        Ok(self.fresh()?.endpoints.clone())
    }
}

/// Reads every endpoint into `shared` every `SNAPSHOT_REFRESH`, on a
/// thread with a store connection of its own. An endpoint whose value does
/// not parse is left out (and logged once).
fn keep_snapshot(ctx: Context, shared: Shared) -> Result<()> {
    std::thread::Builder::new()
        .name("dns-snapshot".into())
        .spawn(move || {
            let prefix = ctx.keys.service_prefix(None);
            let mut reported = std::collections::HashSet::new();
            loop {
                let started = std::time::Instant::now();
                if let Ok(listed) = ctx.store().and_then(|store| Ok(store.list(&prefix)?)) {
                    let mut endpoints = Vec::with_capacity(listed.len());
                    for (key, value) in listed {
                        let name = key[prefix.len()..].split('/').next().unwrap_or_default();
                        match serde_json::from_str::<Endpoint>(&value) {
                            Ok(endpoint) => endpoints.push((name.to_string(), endpoint)),
                            Err(e) if reported.insert(key.clone()) => ctx.logger.log(
                                Level::Error,
                                "dns",
                                &[
                                    ("key", &key),
                                    ("error", &format!("corrupt endpoint, left out: {e}")),
                                ],
                            ),
                            Err(_) => {}
                        }
                    }
                    let mut snapshot = shared.write().unwrap_or_else(|e| e.into_inner());
                    snapshot.endpoints = endpoints;
                    snapshot.read_at = Some(started);
                }
                std::thread::sleep(SNAPSHOT_REFRESH.saturating_sub(started.elapsed()));
            }
        })
        .context("start the DNS snapshot thread")?;
    Ok(())
}

/// Whether `name` (lower case) is a reverse-lookup name.
fn is_reverse(name: &Name) -> bool {
    let text = name.to_ascii();
    text.ends_with(".in-addr.arpa.") || text.ends_with(".ip6.arpa.")
}

/// The PTR answer for a reverse name that is an endpoint's address: the
/// endpoint's SRV target name. `None`: no endpoint has that address.
fn reverse(name: &Name, domain: &Name, endpoints: &dyn Endpoints) -> Result<Option<Vec<Name>>> {
    let mut found = Vec::new();
    for (service, endpoint) in endpoints.all()? {
        let addresses = endpoint
            .ip
            .map(std::net::IpAddr::V4)
            .into_iter()
            .chain(endpoint.ip6.map(std::net::IpAddr::V6));
        for address in addresses {
            if Name::from(address).to_lowercase() == *name {
                found.push(target(&endpoint, &service, domain)?);
            }
        }
    }
    Ok((!found.is_empty()).then_some(found))
}

/// Answers `request` from `endpoints` (the live endpoints).
pub fn answer(
    request: &Message,
    domain: &Name,
    forwarding: bool,
    endpoints: &dyn Endpoints,
) -> Reply {
    let mut response = Message::new(request.metadata.id, MessageType::Response, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = forwarding;
    if request.edns.is_some() {
        response.edns = Some(Edns::new());
    }
    let rcode = |mut message: Message, code: ResponseCode| {
        message.metadata.response_code = code;
        Reply::Answer(message)
    };
    if request.metadata.message_type != MessageType::Query {
        return Reply::Ignore;
    }
    if request.metadata.op_code != OpCode::Query {
        response.metadata.op_code = request.metadata.op_code;
        return rcode(response, ResponseCode::NotImp);
    }
    let [query] = request.queries.as_slice() else {
        return rcode(response, ResponseCode::FormErr);
    };
    response.add_query(query.clone());
    let name = query.name().to_lowercase();
    if is_reverse(&name) {
        match reverse(&name, domain, endpoints) {
            Err(_) => return rcode(response, ResponseCode::ServFail),
            Ok(Some(targets)) => {
                if query.query_type() == RecordType::PTR {
                    for target in targets {
                        response.add_answer(Record::from_rdata(
                            query.name().clone(),
                            ANSWER_TTL,
                            RData::PTR(PTR(target)),
                        ));
                    }
                }
                response.metadata.authoritative = true;
                return Reply::Answer(response);
            }
            Ok(None) => {}
        }
    }
    if !domain.zone_of(&name) {
        return if forwarding {
            Reply::Forward
        } else {
            rcode(response, ResponseCode::Refused)
        };
    }
    response.metadata.authoritative = true;
    let owner = query.name().clone();
    let negative = |mut message: Message, code: ResponseCode| {
        message.add_authority(soa(domain));
        rcode(message, code)
    };
    let Some(asked) = question(&name, domain) else {
        return negative(response, ResponseCode::NXDomain);
    };
    let (service, container) = match asked {
        Question::Apex => return Reply::Answer(response),
        Question::Service(service) => (service, None),
        Question::Endpoint { service, container } => (service, Some(container)),
    };
    let endpoints = match endpoints.of(&service) {
        Ok(endpoints) => endpoints,
        Err(_) => return rcode(response, ResponseCode::ServFail),
    };
    let endpoints: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| match &container {
            Some(short) => e.container.to_ascii_lowercase().starts_with(short.as_str()),
            None => true,
        })
        .collect();
    if endpoints.is_empty() {
        return negative(response, ResponseCode::NXDomain);
    }
    // An endpoint's address records: A, AAAA or both.
    let addresses = |e: &Endpoint, owner: &Name, kind: RecordType| -> Vec<Record> {
        let v4 =
            e.ip.filter(|_| kind != RecordType::AAAA)
                .map(|ip| Record::from_rdata(owner.clone(), ANSWER_TTL, RData::A(A(ip))));
        let v6 = e
            .ip6
            .filter(|_| kind != RecordType::A)
            .map(|ip| Record::from_rdata(owner.clone(), ANSWER_TTL, RData::AAAA(AAAA(ip))));
        v4.into_iter().chain(v6).collect()
    };
    match query.query_type() {
        kind @ (RecordType::A | RecordType::AAAA) => {
            for endpoint in &endpoints {
                for record in addresses(endpoint, &owner, kind) {
                    response.add_answer(record);
                }
            }
            if response.answers.is_empty() {
                // The name exists, without addresses of that family (NODATA).
                return negative(response, ResponseCode::NoError);
            }
        }
        RecordType::SRV if container.is_none() => {
            for endpoint in &endpoints {
                let Ok(target) = target(endpoint, &service, domain) else {
                    continue;
                };
                response.add_answer(Record::from_rdata(
                    owner.clone(),
                    ANSWER_TTL,
                    RData::SRV(SRV::new(0, 10, endpoint.port, target.clone())),
                ));
                for record in addresses(endpoint, &target, RecordType::ANY) {
                    response.add_additional(record);
                }
            }
        }
        // The name exists, with no records of that type (NODATA).
        _ => return negative(response, ResponseCode::NoError),
    }
    Reply::Answer(response)
}

/// TCP (RFC 7766): this many connections are served at once, each by a
/// thread of its own with its own store connection; more wait in the
/// listen queue. A connection carries any number of queries and ends when
/// idle this long.
const TCP_WORKERS: usize = 8;
const TCP_IDLE: Duration = Duration::from_secs(5);

/// Serves UDP and TCP queries until the process is killed.
pub fn serve(ctx: &Context, options: &DnsOptions) -> Result<()> {
    let socket = UdpSocket::bind(options.listen)
        .with_context(|| format!("listen on {} (udp)", options.listen))?;
    let listener = TcpListener::bind(options.listen)
        .with_context(|| format!("listen on {} (tcp)", options.listen))?;
    ctx.store()?;
    let snapshot = Shared::default();
    keep_snapshot(
        Context::new(ctx.config.clone(), ctx.logger.clone())?,
        snapshot.clone(),
    )?;
    for i in 0..TCP_WORKERS {
        let listener = listener.try_clone().context("clone the TCP listener")?;
        let worker = Context::new(ctx.config.clone(), ctx.logger.clone())?;
        let options = options.clone();
        let snapshot = snapshot.clone();
        std::thread::Builder::new()
            .name(format!("dns-tcp-{i}"))
            .spawn(move || loop {
                if let Ok((stream, peer)) = listener.accept() {
                    serve_connection(&worker, &options, &snapshot, stream, peer.ip());
                }
            })
            .context("start the DNS TCP threads")?;
    }
    ctx.logger.log(
        Level::Info,
        "dns-start",
        &[
            ("listen", &options.listen.to_string()),
            ("domain", &options.domain.to_ascii()),
        ],
    );
    let mut clients = Clients::new(&options.forward_clients);
    let forwarders = match options.others {
        Others::Refuse => None,
        Others::Forward(upstream) => Some(forwarding_pool(&socket, upstream)?),
    };
    let mut buffer = [0u8; 4096];
    loop {
        let (length, peer) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("receive a query"),
        };
        let packet = &buffer[..length];
        let Ok(request) = Message::from_vec(packet) else {
            continue;
        };
        let forwarding = forwarders.is_some() && clients.may_forward(ctx, peer.ip());
        let reply = answer(&request, &options.domain, forwarding, &Current(&snapshot));
        count_query(&request, &reply);
        match (reply, &forwarders) {
            (Reply::Answer(message), _) => {
                if let Some(bytes) = encode_within(message, udp_limit(&request)) {
                    let _ = socket.send_to(&bytes, peer);
                }
            }
            // A slow upstream must not hold up the names this responder
            // answers itself, nor may a flood of forwarded queries start a
            // thread each: a fixed pool takes them from a bounded queue,
            // and what does not fit is dropped (the client asks again).
            (Reply::Forward, Some(queue)) => {
                let _ = queue.try_send((peer, packet.to_vec()));
            }
            (Reply::Forward, None) | (Reply::Ignore, _) => {}
        }
    }
}

/// Counts a query by its type and what it got (an rcode, or forwarded).
fn count_query(request: &Message, reply: &Reply) {
    let qtype = request
        .queries
        .first()
        .map(|q| q.query_type().to_string())
        .unwrap_or_else(|| "none".into());
    let rcode = match reply {
        Reply::Answer(message) => format!("{:?}", message.metadata.response_code),
        Reply::Forward => "forwarded".into(),
        Reply::Ignore => return,
    };
    crate::metrics::count(
        "macvlan_dns_queries",
        &[("qtype", &qtype), ("rcode", &rcode)],
    );
}

/// One TCP connection: length-prefixed queries answered in turn until the
/// client closes it, sends garbage, or stays idle for `TCP_IDLE`.
fn serve_connection(
    ctx: &Context,
    options: &DnsOptions,
    snapshot: &Shared,
    mut stream: TcpStream,
    peer: IpAddr,
) {
    let _ = stream.set_read_timeout(Some(TCP_IDLE));
    let _ = stream.set_write_timeout(Some(TCP_IDLE));
    let forwarding = matches!(options.others, Others::Forward(_))
        && Clients::new(&options.forward_clients).may_forward(ctx, peer);
    loop {
        let mut length = [0u8; 2];
        if stream.read_exact(&mut length).is_err() {
            return;
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
        if stream.read_exact(&mut query).is_err() {
            return;
        }
        let Ok(request) = Message::from_vec(&query) else {
            return;
        };
        let reply = answer(&request, &options.domain, forwarding, &Current(snapshot));
        count_query(&request, &reply);
        let response = match reply {
            Reply::Answer(message) => encode_within(message, usize::from(u16::MAX)),
            Reply::Forward => match options.others {
                Others::Forward(upstream) => forward_tcp(upstream, &query).ok(),
                Others::Refuse => None,
            },
            Reply::Ignore => continue,
        };
        let Some(bytes) = response else { return };
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        if stream.write_all(&framed).is_err() {
            return;
        }
    }
}

/// Relays one query to the upstream server over TCP.
fn forward_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = TcpStream::connect_timeout(&upstream, Duration::from_secs(3))?;
    out.set_read_timeout(Some(Duration::from_secs(3)))?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    out.write_all(&framed)?;
    let mut length = [0u8; 2];
    out.read_exact(&mut length)?;
    let mut response = vec![0u8; usize::from(u16::from_be_bytes(length))];
    out.read_exact(&mut response)?;
    Ok(response)
}

/// Forwarding threads and the queue that feeds them.
const FORWARDERS: usize = 8;
const FORWARD_QUEUE: usize = 256;

type ForwardQueue = std::sync::mpsc::SyncSender<(SocketAddr, Vec<u8>)>;

/// Starts the forwarding threads (all at start, so that none has to be
/// made — or fail to be made — under load).
fn forwarding_pool(socket: &UdpSocket, upstream: SocketAddr) -> Result<ForwardQueue> {
    let (queue, jobs) = std::sync::mpsc::sync_channel::<(SocketAddr, Vec<u8>)>(FORWARD_QUEUE);
    let jobs = std::sync::Arc::new(std::sync::Mutex::new(jobs));
    for i in 0..FORWARDERS {
        let socket = socket.try_clone().context("clone the DNS socket")?;
        let jobs = jobs.clone();
        std::thread::Builder::new()
            .name(format!("dns-forward-{i}"))
            .spawn(move || loop {
                let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((peer, query)) = job else { return };
                forward(&socket, peer, upstream, &query);
            })
            .context("start the DNS forwarding threads")?;
    }
    Ok(queue)
}

fn forward(socket: &UdpSocket, peer: SocketAddr, upstream: SocketAddr, query: &[u8]) {
    let relay = || -> std::io::Result<Vec<u8>> {
        let local: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0".parse().expect("address")
        } else {
            "[::]:0".parse().expect("address")
        };
        let out = UdpSocket::bind(local)?;
        out.set_read_timeout(Some(Duration::from_secs(3)))?;
        out.connect(upstream)?;
        out.send(query)?;
        let mut buffer = vec![0u8; 4096];
        let length = out.recv(&mut buffer)?;
        buffer.truncate(length);
        Ok(buffer)
    };
    if let Ok(response) = relay() {
        let _ = socket.send_to(&response, peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn endpoint(ip: &str, port: u16, container: &str) -> Endpoint {
        Endpoint {
            ip: Some(ip.parse().unwrap()),
            ip6: None,
            port,
            container: container.into(),
            host: "h".into(),
        }
    }

    /// Fixed endpoints by service name.
    struct Fixed(Vec<(String, Endpoint)>);

    impl Endpoints for Fixed {
        fn of(&self, service: &str) -> Result<Vec<Endpoint>> {
            Ok(self
                .0
                .iter()
                .filter(|(s, _)| s == service)
                .map(|(_, e)| e.clone())
                .collect())
        }

        fn all(&self) -> Result<Vec<(String, Endpoint)>> {
            Ok(self.0.clone())
        }
    }

    fn lab() -> Fixed {
        let mut dual = endpoint("192.0.2.11", 8001, "second");
        dual.ip6 = Some("2001:db8::b".parse().unwrap());
        let mut v6_only = endpoint("192.0.2.1", 80, "v6only");
        v6_only.ip = None;
        v6_only.ip6 = Some("2001:db8::c".parse().unwrap());
        Fixed(vec![
            (
                "webapp".into(),
                endpoint("192.0.2.10", 8000, "AbcDef1234567890"),
            ),
            ("webapp".into(), dual),
            ("six".into(), v6_only),
        ])
    }

    fn ask(name: &str, kind: RecordType, forwarding: bool) -> Reply {
        let mut request = Message::new(7, MessageType::Query, OpCode::Query);
        request.add_query(Query::query(Name::from_str(name).unwrap(), kind));
        let domain = DnsOptions::parse_domain("lab").unwrap();
        answer(&request, &domain, forwarding, &lab())
    }

    fn message(reply: Reply) -> Message {
        match reply {
            Reply::Answer(message) => {
                // Every answer survives the wire format.
                Message::from_vec(&message.to_vec().unwrap()).unwrap()
            }
            Reply::Forward => panic!("forwarded"),
            Reply::Ignore => panic!("ignored"),
        }
    }

    #[test]
    fn responses_are_never_answered() {
        let mut response = Message::new(9, MessageType::Response, OpCode::Query);
        response.add_query(Query::query(
            Name::from_str("webapp.lab.").unwrap(),
            RecordType::A,
        ));
        let domain = DnsOptions::parse_domain("lab").unwrap();
        assert!(matches!(
            answer(&response, &domain, false, &Fixed(vec![])),
            Reply::Ignore
        ));
    }

    #[test]
    fn negative_answers_carry_the_zone_soa() {
        for (name, kind, code) in [
            ("nothing.lab.", RecordType::A, ResponseCode::NXDomain),
            ("webapp.lab.", RecordType::TXT, ResponseCode::NoError),
            ("six.lab.", RecordType::A, ResponseCode::NoError),
        ] {
            let m = message(ask(name, kind, false));
            assert_eq!(m.metadata.response_code, code);
            assert_eq!(m.authorities.len(), 1, "{name}");
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
            assert_eq!(m.authorities[0].ttl, ANSWER_TTL);
        }
        assert!(message(ask("webapp.lab.", RecordType::A, false))
            .authorities
            .is_empty());
    }

    #[test]
    fn answers_fit_the_client_and_say_when_cut() {
        let many: Vec<Endpoint> = (0..60)
            .map(|i| {
                endpoint(
                    &format!("192.0.2.{}", i + 10),
                    8000,
                    &format!("container{i:02}x"),
                )
            })
            .collect();
        let domain = DnsOptions::parse_domain("lab").unwrap();
        let mut request = Message::new(3, MessageType::Query, OpCode::Query);
        request.add_query(Query::query(
            Name::from_str("webapp.lab.").unwrap(),
            RecordType::SRV,
        ));
        let many = Fixed(
            many.into_iter()
                .map(|e| ("webapp".to_string(), e))
                .collect(),
        );
        let Reply::Answer(full) = answer(&request, &domain, false, &many) else {
            panic!()
        };
        assert!(full.to_vec().unwrap().len() > 512);
        assert_eq!(udp_limit(&request), 512);
        let cut = encode_within(full.clone(), udp_limit(&request)).unwrap();
        assert!(cut.len() <= 512);
        let cut = Message::from_vec(&cut).unwrap();
        assert!(cut.metadata.truncation);
        assert!(cut.answers.len() < 60);
        // With EDNS the client's size counts: 4096 holds them all.
        request.edns = Some({
            let mut edns = Edns::new();
            edns.set_max_payload(4096);
            edns
        });
        let whole = encode_within(full, udp_limit(&request)).unwrap();
        let whole = Message::from_vec(&whole).unwrap();
        assert!(!whole.metadata.truncation);
        assert_eq!(whole.answers.len(), 60);
    }

    #[test]
    fn aaaa_and_ptr_for_ipv6_and_dual_stack_endpoints() {
        let m = message(ask("webapp.lab.", RecordType::AAAA, false));
        let ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, ["2001:db8::b"]);
        let m = message(ask("six.lab.", RecordType::AAAA, false));
        let ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, ["2001:db8::c"]);
        // SRV's additional section: both families of a dual-stack endpoint.
        let m = message(ask("webapp.lab.", RecordType::SRV, false));
        assert_eq!(m.additionals.len(), 3);
        for (address, target) in [
            ("10.2.0.192.in-addr.arpa.", "abcdef123456.webapp.lab."),
            ("11.2.0.192.in-addr.arpa.", "second.webapp.lab."),
            (
                "b.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.",
                "second.webapp.lab.",
            ),
            (
                "C.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.B.D.0.1.0.0.2.IP6.ARPA.",
                "v6only.six.lab.",
            ),
        ] {
            let m = message(ask(address, RecordType::PTR, false));
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{address}");
            let names: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
            assert_eq!(names, [target], "{address}");
        }
        // An address no endpoint has: not ours (refused, or forwarded).
        let m = message(ask("99.2.0.192.in-addr.arpa.", RecordType::PTR, false));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(matches!(
            ask("99.2.0.192.in-addr.arpa.", RecordType::PTR, true),
            Reply::Forward
        ));
    }

    #[test]
    fn a_records_for_every_endpoint() {
        let m = message(ask("WebApp.lab.", RecordType::A, false));
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        let ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, ["192.0.2.10", "192.0.2.11"]);
    }

    #[test]
    fn srv_records_with_resolvable_targets() {
        for name in ["webapp.lab.", "_webapp._tcp.lab."] {
            let m = message(ask(name, RecordType::SRV, false));
            assert_eq!(m.answers.len(), 2, "{name}");
            let first = m.answers[0].data.to_string();
            assert!(
                first.contains("8000") && first.contains("abcdef123456.webapp.lab."),
                "{first}"
            );
            // The dual-stack endpoint's target has A and AAAA.
            assert_eq!(m.additionals.len(), 3);
        }
        let m = message(ask("abcdef123456.webapp.lab.", RecordType::A, false));
        let ips: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(ips, ["192.0.2.10"]);
    }

    #[test]
    fn unknown_names_other_types_and_other_zones() {
        let m = message(ask("nothing.lab.", RecordType::A, false));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = message(ask("webapp.lab.", RecordType::MX, false));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        let m = message(ask("example.org.", RecordType::A, false));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(matches!(
            ask("example.org.", RecordType::A, true),
            Reply::Forward
        ));
        let m = message(ask("a.b.c.webapp.lab.", RecordType::A, false));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    #[test]
    fn domain_must_be_a_name() {
        assert!(DnsOptions::parse_domain("").is_err());
        assert_eq!(
            DnsOptions::parse_domain("Svc.Example").unwrap().to_ascii(),
            "svc.example."
        );
    }
}
