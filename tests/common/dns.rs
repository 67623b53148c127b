//! A DNS responder on loopback: hand-encoded wire format answering A, AAAA and
//! CNAME queries from a fixed zone (SERVFAIL and NXDOMAIN too), for `[dns]` tests.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::net::UdpSocket;

/// One record of the zone.
#[derive(Debug, Clone, Copy)]
pub enum Rec {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(&'static str),
    ServFail,
}

pub type Zone = Vec<(&'static str, Rec)>;

/// Answer DNS queries from `zone` on a loopback UDP socket.
pub async fn start_dns(zone: Zone) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind dns");
    let addr = socket.local_addr().expect("dns addr");
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            if let Some(reply) = answer(&buf[..n], &zone) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    addr
}

/// Parse the question name at `pos`; returns the lowercase name and the offset after it.
fn read_name(msg: &[u8], mut pos: usize) -> Option<(String, usize)> {
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*msg.get(pos)?);
        pos += 1;
        if len == 0 {
            return Some((labels.join(".").to_ascii_lowercase(), pos));
        }
        labels.push(String::from_utf8_lossy(msg.get(pos..pos + len)?).into_owned());
        pos += len;
    }
}

fn write_name(out: &mut Vec<u8>, name: &str) {
    for label in name.split('.') {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
}

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;

fn answer(query: &[u8], zone: &Zone) -> Option<Vec<u8>> {
    let header = query.get(..12)?;
    let (qname, after) = read_name(query, 12)?;
    let qtype = u16::from_be_bytes([*query.get(after)?, *query.get(after + 1)?]);
    let question = query.get(12..after + 4)?;
    let mut records: Vec<(String, u16, Vec<u8>)> = Vec::new();
    let mut current = qname.clone();
    let mut rcode = 0u8;
    for _ in 0..8 {
        let here: Vec<Rec> = zone
            .iter()
            .filter(|(n, _)| *n == current)
            .map(|(_, r)| *r)
            .collect();
        if here.iter().any(|r| matches!(r, Rec::ServFail)) {
            rcode = 2;
            records.clear();
            break;
        }
        if here.is_empty() {
            rcode = 3;
            break;
        }
        if let Some(Rec::Cname(target)) = here.iter().find(|r| matches!(r, Rec::Cname(_))) {
            let mut rdata = Vec::new();
            write_name(&mut rdata, target);
            records.push((current.clone(), TYPE_CNAME, rdata));
            current = target.to_string();
            continue;
        }
        for rec in here {
            match (rec, qtype) {
                (Rec::A(ip), TYPE_A) => records.push((current.clone(), TYPE_A, ip.octets().into())),
                (Rec::Aaaa(ip), TYPE_AAAA) => {
                    records.push((current.clone(), TYPE_AAAA, ip.octets().into()))
                }
                _ => {}
            }
        }
        break;
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&header[..2]);
    out.push(0x84 | (header[2] & 0x01)); // QR, AA, RD copied
    out.push(0x80 | rcode); // RA
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(question);
    for (name, rtype, rdata) in records {
        write_name(&mut out, &name);
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&60u32.to_be_bytes());
        out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        out.extend_from_slice(&rdata);
    }
    Some(out)
}

/// The `[dns]` section asking `server`: our access addresses are 203.0.113.10 and
/// 2001:db8::10, our CNAME target gw.icpgate.test.
pub fn dns_section(server: SocketAddr) -> String {
    format!(
        "[dns]\nnameservers = [\"{server}\"]\naccess_ips = [\"203.0.113.10\", \"2001:db8::10\"]\n\
         cname_targets = [\"gw.icpgate.test\"]\n"
    )
}
