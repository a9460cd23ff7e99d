//! An authoritative DNS server on 127.0.0.1 (UDP, port 0) whose answers and
//! TTLs a test changes while drawbridge runs; it can also be told to fail.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA};
use hickory_resolver::proto::rr::{RData, Record, RecordType};

type Zone = Arc<Mutex<HashMap<String, (Vec<IpAddr>, u32)>>>;

/// A running test DNS server.
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Zone,
    failing: Arc<AtomicBool>,
}

impl DnsServer {
    /// Starts the server with no records.
    pub async fn start() -> DnsServer {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let zone: Zone = Arc::default();
        let failing = Arc::new(AtomicBool::new(false));
        let (z, f) = (zone.clone(), failing.clone());
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut answer =
                    Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
                answer.metadata.recursion_desired = query.metadata.recursion_desired;
                answer.metadata.recursion_available = true;
                answer.metadata.authoritative = true;
                for q in &query.queries {
                    answer.add_query(q.clone());
                    if f.load(Ordering::SeqCst) {
                        answer.metadata.response_code = ResponseCode::ServFail;
                        continue;
                    }
                    let name = q
                        .name()
                        .to_string()
                        .trim_end_matches('.')
                        .to_ascii_lowercase();
                    let Some((ips, ttl)) = z.lock().unwrap().get(&name).cloned() else {
                        answer.metadata.response_code = ResponseCode::NXDomain;
                        continue;
                    };
                    for ip in ips {
                        let rdata = match (ip, q.query_type()) {
                            (IpAddr::V4(v4), RecordType::A) => RData::A(A(v4)),
                            (IpAddr::V6(v6), RecordType::AAAA) => RData::AAAA(AAAA(v6)),
                            _ => continue,
                        };
                        answer.add_answer(Record::from_rdata(q.name().clone(), ttl, rdata));
                    }
                }
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
        DnsServer {
            addr,
            zone,
            failing,
        }
    }

    /// Answers `name` with `ips` and `ttl` seconds from now on.
    pub fn set(&self, name: &str, ips: &[&str], ttl: u32) {
        let ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        self.zone
            .lock()
            .unwrap()
            .insert(name.to_string(), (ips, ttl));
    }

    /// Answers SERVFAIL to everything while `on`.
    pub fn fail(&self, on: bool) {
        self.failing.store(on, Ordering::SeqCst);
    }
}
