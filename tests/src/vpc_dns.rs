//! The VPC's DNS resolver, as far as booted nodes need it. On EC2 every instance's
//! `/etc/resolv.conf` names the Amazon-provided resolver at the VPC's base address + 2,
//! which answers the records of the Route53 private hosted zones of the VPC: a record one
//! control-plane node publishes (`etcd-a.internal.<cluster>`, `api.internal.<cluster>`)
//! resolves on every node. Here the resolver listens at [`RESOLVER_ADDR`] inside the
//! fleet's network and answers A queries from the emulator's Route53 as it is at the
//! moment of the query (no cache, like a zero TTL): multivalue records answer all their
//! values. A name no zone holds is NXDOMAIN; a name with records of another type only
//! gets an empty answer.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use simple_dns::rdata::{A, RData};
use simple_dns::{CLASS, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};
use tokio::net::UdpSocket;

use crate::network::Network;
use crate::runtime::runtime;

/// Where nodes send their queries (`nameserver` in their `/etc/resolv.conf`).
pub const RESOLVER_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 53);

/// The resolver; stops when dropped.
pub struct VpcResolver {
    task: tokio::task::JoinHandle<()>,
}

impl VpcResolver {
    /// Starts answering in `network` from the Route53 zones `route53` sees (the
    /// emulator, called directly: not through the fault-injecting front).
    pub fn start(network: &Network, route53: aws_sdk_route53::Client) -> Self {
        let socket = network.bind_udp(RESOLVER_ADDR);
        let socket = {
            let _guard = runtime().enter();
            UdpSocket::from_std(socket).expect("a non-blocking UDP socket")
        };
        let task = runtime().spawn(serve(Arc::new(socket), route53));
        Self { task }
    }
}

impl Drop for VpcResolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(socket: Arc<UdpSocket>, route53: aws_sdk_route53::Client) {
    let mut buffer = [0u8; 1500];
    while let Ok((len, from)) = socket.recv_from(&mut buffer).await {
        let query = buffer[..len].to_vec();
        let (socket, route53) = (socket.clone(), route53.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, &route53).await {
                let _ = socket.send_to(&reply, from).await;
            }
        });
    }
}

/// The reply to one query datagram, or `None` for one that does not parse.
async fn answer(query: &[u8], route53: &aws_sdk_route53::Client) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    if query.has_flags(PacketFlag::RECURSION_DESIRED) {
        reply.set_flags(PacketFlag::RECURSION_DESIRED | PacketFlag::RECURSION_AVAILABLE);
    }
    let Some(question) = query.questions.first() else {
        *reply.rcode_mut() = RCODE::FormatError;
        return reply.build_bytes_vec().ok();
    };
    let name = question
        .qname
        .to_string()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    match records_named(route53, &name).await {
        Err(e) => {
            eprintln!("vpc resolver: reading Route53 for {name}: {e}");
            *reply.rcode_mut() = RCODE::ServerFailure;
        }
        Ok(records) if records.is_empty() => *reply.rcode_mut() = RCODE::NameError,
        Ok(records) => {
            if question.qtype == QTYPE::TYPE(TYPE::A) {
                for (ttl, address) in records.iter().filter_map(|r| r.a()) {
                    reply.answers.push(ResourceRecord::new(
                        question.qname.clone(),
                        CLASS::IN,
                        ttl,
                        RData::A(A::from(address)),
                    ));
                }
            }
        }
    }
    reply.questions.push(question.clone());
    reply.build_bytes_vec_compressed().ok()
}

/// One record set: its type, TTL and values.
struct RecordSet {
    kind: String,
    ttl: u32,
    values: Vec<String>,
}

impl RecordSet {
    /// The IPv4 addresses of an A record, with its TTL.
    fn a(&self) -> Option<(u32, Ipv4Addr)> {
        (self.kind == "A").then_some(())?;
        self.values
            .iter()
            .find_map(|v| v.parse().ok())
            .map(|ip| (self.ttl, ip))
    }
}

/// Every record set named `name` in every hosted zone (a multivalue name has one per
/// instance).
async fn records_named(
    route53: &aws_sdk_route53::Client,
    name: &str,
) -> Result<Vec<RecordSet>, String> {
    let zones = route53
        .list_hosted_zones()
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    let mut found = Vec::new();
    for zone in zones.hosted_zones() {
        let zone_name = zone.name().trim_end_matches('.').to_ascii_lowercase();
        if name != zone_name && !name.ends_with(&format!(".{zone_name}")) {
            continue;
        }
        let sets = route53
            .list_resource_record_sets()
            .hosted_zone_id(zone.id())
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        for set in sets.resource_record_sets() {
            if set.name().trim_end_matches('.').to_ascii_lowercase() != name {
                continue;
            }
            found.push(RecordSet {
                kind: set.r#type().as_str().to_owned(),
                ttl: set.ttl().unwrap_or(0).try_into().unwrap_or(0),
                values: set
                    .resource_records()
                    .iter()
                    .map(|r| r.value().to_owned())
                    .collect(),
            });
        }
    }
    Ok(found)
}
