//! A private network for booted nodes: a "switch" namespace holding a bridge, and one
//! namespace per node joined to it by a veth pair, like instances in one VPC subnet.
//!
//! ```text
//!  node netns (nw-…-n1)               switch netns (nw-…-sw)            harness (host)
//!  eth0 10.0.1.10/16  ── veth ──  br0 10.0.0.1/16
//!  lo   169.254.169.254 (IMDS)         10.0.0.2:80  AWS endpoint  ──► moto / AwsFront
//!                                      10.0.0.2:53  DNS (udp)     ──► Route53 zones (vpc_dns)
//!                                      10.0.0.N:P   more services ──► loopback servers
//! ```
//!
//! Services are listeners bound inside the switch namespace whose connections the
//! harness forwards to its own loopback servers; nodes reach them over the bridge. A
//! service can be made unreachable (nothing listens: connections are refused) and
//! reachable again, for outage tests. Nodes have no default route: any address outside
//! the subnet (the real AWS, the internet) fails at once.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};

use crate::netns::NetNs;
use crate::runtime::runtime;

/// The subnet's prefix length; nodes and services share 10.0.0.0/16.
const PREFIX_LEN: u8 = 16;
/// The switch's own address, on its bridge.
const SWITCH_ADDR: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// Where the AWS endpoint (S3, EC2, Route53, STS) answers inside the network.
pub const AWS_ADDR: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 80);

pub struct Network {
    switch: NetNs,
    next_port: Mutex<u32>,
}

impl Network {
    pub fn create() -> Self {
        let switch = NetNs::create("sw");
        switch.ip(&["link", "add", "br0", "type", "bridge"]);
        switch.ip(&["link", "set", "br0", "up"]);
        switch.ip(&[
            "addr",
            "add",
            &format!("{SWITCH_ADDR}/{PREFIX_LEN}"),
            "dev",
            "br0",
        ]);
        Self {
            switch,
            next_port: Mutex::new(0),
        }
    }

    /// Joins `node` to the network as `eth0` with `address`.
    pub fn attach(&self, node: &NetNs, address: Ipv4Addr) {
        let mut port = self.next_port.lock().expect("network lock");
        *port += 1;
        let peer = format!("p{}", *port);
        // Both ends are created directly in their namespaces: nothing appears in the
        // machine's own namespace, even for a moment.
        node.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            self.switch.name(),
        ]);
        self.switch.ip(&["link", "set", &peer, "master", "br0"]);
        self.switch.ip(&["link", "set", &peer, "up"]);
        node.ip(&[
            "addr",
            "add",
            &format!("{address}/{PREFIX_LEN}"),
            "dev",
            "eth0",
        ]);
        node.ip(&["link", "set", "eth0", "up"]);
    }

    /// Serves `target` (a loopback server of the harness) at `at` inside the network.
    pub fn expose(&self, at: SocketAddrV4, target: SocketAddr) -> Service {
        self.add_address(*at.ip());
        let service = Service {
            inner: Arc::new(ServiceInner {
                at,
                target,
                switch: self.switch.path(),
                task: Mutex::new(None),
            }),
        };
        service.set_reachable(true);
        service
    }
}

impl Network {
    /// A UDP socket at `at` inside the network, for a harness server that answers
    /// datagrams itself (the VPC's DNS resolver).
    pub fn bind_udp(&self, at: SocketAddrV4) -> std::net::UdpSocket {
        self.add_address(*at.ip());
        crate::netns::bind_udp_in(&self.switch.path(), at.into())
            .unwrap_or_else(|e| panic!("binding udp {at} in the network: {e}"))
    }

    /// One more address on the bridge; adding one twice is harmless.
    fn add_address(&self, address: Ipv4Addr) {
        if address == SWITCH_ADDR {
            return;
        }
        let _ = std::process::Command::new("ip")
            .args(["-n", self.switch.name(), "addr", "add"])
            .arg(format!("{address}/32"))
            .args(["dev", "br0"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A forwarded service; stops when the last clone is dropped.
#[derive(Clone)]
pub struct Service {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    at: SocketAddrV4,
    target: SocketAddr,
    switch: std::path::PathBuf,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Service {
    /// The URL nodes use, e.g. `http://10.0.0.2:80`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.at)
    }

    /// Reachable: a listener forwards each connection. Unreachable: nothing listens,
    /// so a node's connection is refused, as by a host that is down.
    pub fn set_reachable(&self, reachable: bool) {
        let mut task = self.inner.task.lock().expect("service lock");
        if let Some(running) = task.take() {
            running.abort();
            // The listener must be closed before a new one binds the same address.
            let _ = crate::runtime::block_on(running);
        }
        if !reachable {
            return;
        }
        let listener = crate::netns::bind_tcp_in(&self.inner.switch, self.inner.at.into())
            .unwrap_or_else(|e| {
                panic!("binding {} in the network: {e}", self.inner.at);
            });
        let target = self.inner.target;
        let listener = {
            let _guard = runtime().enter();
            TcpListener::from_std(listener).expect("a non-blocking listener")
        };
        *task = Some(runtime().spawn(forward(listener, target)));
    }
}

impl Drop for ServiceInner {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().ok().and_then(Option::take) {
            task.abort();
        }
    }
}

async fn forward(listener: TcpListener, target: SocketAddr) {
    let mut connections = tokio::task::JoinSet::new();
    while let Ok((mut inbound, _)) = listener.accept().await {
        connections.spawn(async move {
            if let Ok(mut outbound) = TcpStream::connect(target).await {
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            }
        });
    }
}
