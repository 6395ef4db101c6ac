//! The token bucket filter (tbf) qdisc's netlink attributes, built by hand:
//! neither rtnetlink nor netlink-packet-route knows tbf. The layout follows
//! `struct tc_tbf_qopt` (linux/pkt_sched.h) and the values follow what
//! `tc qdisc add … tbf rate R burst B latency L` computes (iproute2
//! tc/q_tbf.c, lib/tc_core.c); the unit tests compare the bytes with
//! captures of what tc itself sent.

use netlink_packet_core::DefaultNla;
use netlink_packet_route::tc::TcOption;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RTAB: u16 = 2;
const TCA_TBF_BURST: u16 = 6;
/// `TC_LINKLAYER_ETHERNET`: with it the kernel needs no rate table, but tc
/// sends one anyway and so do we.
const LINKLAYER_ETHERNET: u8 = 1;

/// One token bucket, in the units the kernel takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bytes per second.
    pub rate: u32,
    /// Bucket size in bytes.
    pub burst: u32,
    /// Queue limit in bytes (tc derives it from the latency).
    pub limit: u32,
}

impl Tbf {
    /// `rate` in kbit/s (1 kbit = 1000 bit, as tc), `burst` in bytes,
    /// `latency` in ms: tc's limit = rate × latency + burst.
    pub fn new(rate_kbit: u64, burst: u32, latency_ms: u32) -> Option<Tbf> {
        let rate = u32::try_from(rate_kbit.checked_mul(125)?).ok()?;
        let limit = u64::from(rate) * u64::from(latency_ms) / 1000 + u64::from(burst);
        Some(Tbf {
            rate,
            burst,
            limit: u32::try_from(limit).ok()?,
        })
    }
}

/// The kernel's scheduler clock: ticks per microsecond, from
/// `/proc/net/psched` as tc reads it (t2us / us2t × clock_res / 10⁶).
pub fn ticks_per_usec() -> f64 {
    let text = std::fs::read_to_string("/proc/net/psched").unwrap_or_default();
    let words: Vec<u32> = text
        .split_whitespace()
        .filter_map(|w| u32::from_str_radix(w, 16).ok())
        .collect();
    match words.as_slice() {
        [t2us, us2t, clock_res, ..] if *us2t != 0 => {
            // tc_core_init: a nanosecond clock reports t2us == us2t.
            let t2us = if *clock_res == 1_000_000_000 {
                *us2t
            } else {
                *t2us
            };
            f64::from(t2us) / f64::from(*us2t) * (f64::from(*clock_res) / 1_000_000.0)
        }
        _ => 15.625,
    }
}

/// Transmission time of `size` bytes at `rate` bytes/s, in scheduler ticks,
/// truncated exactly as tc does (whole microseconds first).
fn xmit_ticks(rate: u32, size: u32, ticks_per_usec: f64) -> u32 {
    // tc_calc_xmittime: size / rate first, then × 10⁶ (the order changes
    // the truncation of some cells).
    let usec = (1_000_000.0 * (f64::from(size) / f64::from(rate))) as u32;
    (f64::from(usec) * ticks_per_usec) as u32
}

/// `struct tc_ratespec`: cell_log, linklayer, overhead, cell_align, mpu, rate.
fn ratespec(cell_log: u8, rate: u32) -> [u8; 12] {
    let mut spec = [0u8; 12];
    spec[0] = cell_log;
    spec[1] = LINKLAYER_ETHERNET;
    spec[4..6].copy_from_slice(&(-1i16).to_ne_bytes());
    spec[8..12].copy_from_slice(&rate.to_ne_bytes());
    spec
}

/// The TCA_OPTIONS of a tbf qdisc: PARMS, BURST and RTAB, in tc's order.
pub fn options(tbf: &Tbf, ticks_per_usec: f64) -> Vec<TcOption> {
    // tc_calc_rtable with mtu 0 (= 2047): the smallest cell_log for which
    // 2047 >> cell_log fits in 255 cells.
    let mut cell_log = 0u8;
    while (2047u32 >> cell_log) > 255 {
        cell_log += 1;
    }
    let mut parms = Vec::with_capacity(36);
    parms.extend_from_slice(&ratespec(cell_log, tbf.rate));
    parms.extend_from_slice(&[0u8; 12]); // no peak rate
    parms.extend_from_slice(&tbf.limit.to_ne_bytes());
    parms.extend_from_slice(&xmit_ticks(tbf.rate, tbf.burst, ticks_per_usec).to_ne_bytes());
    parms.extend_from_slice(&0u32.to_ne_bytes()); // mtu: only with a peak rate
    let mut rtab = Vec::with_capacity(1024);
    for cell in 0..256u32 {
        rtab.extend_from_slice(
            &xmit_ticks(tbf.rate, (cell + 1) << cell_log, ticks_per_usec).to_ne_bytes(),
        );
    }
    vec![
        TcOption::Other(DefaultNla::new(TCA_TBF_PARMS, parms)),
        TcOption::Other(DefaultNla::new(
            TCA_TBF_BURST,
            tbf.burst.to_ne_bytes().to_vec(),
        )),
        TcOption::Other(DefaultNla::new(TCA_TBF_RTAB, rtab)),
    ]
}

/// Reads rate, burst and limit back from a tbf qdisc's TCA_TBF_PARMS.
pub fn parse_parms(parms: &[u8], ticks_per_usec: f64) -> Option<Tbf> {
    if parms.len() < 36 {
        return None;
    }
    let u32_at = |at: usize| u32::from_ne_bytes(parms[at..at + 4].try_into().unwrap());
    let rate = u32_at(8);
    let limit = u32_at(24);
    let buffer_ticks = u32_at(28);
    let burst =
        (f64::from(buffer_ticks) / ticks_per_usec * f64::from(rate) / 1_000_000.0).round() as u32;
    Some(Tbf { rate, burst, limit })
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
    use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage};
    use netlink_packet_route::RouteNetlinkMessage;

    /// The RTM_NEWQDISC payload (after the 16-byte nlmsghdr) for `tc qdisc
    /// add dev <ifindex 3> root tbf …`.
    fn payload(tbf: &Tbf) -> Vec<u8> {
        let mut message = TcMessage::default();
        message.header.index = 3;
        message.header.parent = TcHandle {
            major: 0xffff,
            minor: 0xffff,
        };
        message.attributes = vec![
            TcAttribute::Kind("tbf".into()),
            TcAttribute::Options(options(tbf, 15.625)),
        ];
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::NewQueueDiscipline(message)),
        );
        packet.finalize();
        let mut bytes = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut bytes);
        bytes[16..].to_vec()
    }

    // Captured with `strace -xx -e trace=sendmsg tc qdisc add dev v0 root
    // tbf …` (iproute2 6.1, /proc/net/psched "000003e8 00000040 000f4240
    // 3b9aca00", i.e. 15.625 ticks per µs), v0 having ifindex 3.
    #[test]
    fn bytes_match_tc_10mbit_32kb_50ms() {
        let tbf = Tbf::new(10_000, 32 * 1024, 50).unwrap();
        let tc = include_bytes!("testdata/tc-tbf-rate-10mbit-burst-32kb-latency-50ms.bin");
        assert_eq!(payload(&tbf), tc.to_vec());
    }

    #[test]
    fn bytes_match_tc_1mbit_4000b_20ms() {
        let tbf = Tbf::new(1_000, 4000, 20).unwrap();
        let tc = include_bytes!("testdata/tc-tbf-rate-1mbit-burst-4000-latency-20ms.bin");
        assert_eq!(payload(&tbf), tc.to_vec());
    }

    #[test]
    fn parms_read_back() {
        let tbf = Tbf::new(10_000, 32 * 1024, 50).unwrap();
        let TcOption::Other(parms) = &options(&tbf, 15.625)[0] else {
            panic!()
        };
        let mut value = vec![0u8; 36];
        netlink_packet_core::Nla::emit_value(parms, &mut value);
        let back = parse_parms(&value, 15.625).unwrap();
        assert_eq!(back.rate, tbf.rate);
        assert_eq!(back.limit, tbf.limit);
        assert!((i64::from(back.burst) - 32768).abs() <= 1, "{back:?}");
    }

    #[test]
    fn refuses_rates_the_kernel_cannot_hold() {
        assert!(Tbf::new(u64::MAX, 1, 1).is_none());
        assert!(Tbf::new(40_000_000, 1, 1).is_none()); // 40 Gbit/s > u32 bytes/s
        assert_eq!(Tbf::new(8, 1500, 0).unwrap().rate, 1000);
    }
}
