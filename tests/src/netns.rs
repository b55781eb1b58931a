//! Network namespaces for booted nodes, made with `ip netns` and deleted on drop.
//!
//! The harness never adds interfaces or addresses to the machine's own namespace. Its
//! servers reach into a namespace by socket instead: a thread enters the namespace,
//! binds a listener there and leaves; the socket stays in the namespace it was made in,
//! while the server that accepts on it runs on the harness's runtime as usual.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sched::CloneFlags;

/// Every name the harness gives a namespace starts with this, then the owning test
/// process's pid, so that leftovers of a killed test can be found (see [`crate::janitor`]).
pub const PREFIX: &str = "nw-";

pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `nw-<pid>-<nonce>-<tag>` with its loopback up.
    pub fn create(tag: &str) -> Self {
        let name = format!("{PREFIX}{}-{}", crate::janitor::owner_tag(), tag);
        run_ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, for `systemd-nspawn --network-namespace-path`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n <ns> ARGS`, panicking with its stderr when it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ip(&full);
    }

    /// A listener bound to `addr` inside this namespace (non-blocking, for tokio).
    pub fn bind_tcp(&self, addr: SocketAddr) -> std::io::Result<TcpListener> {
        bind_tcp_in(&self.path(), addr)
    }
}

/// A listener bound to `addr` inside the namespace at `path` (non-blocking, for tokio).
pub fn bind_tcp_in(path: &Path, addr: SocketAddr) -> std::io::Result<TcpListener> {
    inside(path, || {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        Ok(listener)
    })
}

/// A UDP socket bound to `addr` inside the namespace at `path` (non-blocking, for tokio).
pub fn bind_udp_in(path: &Path, addr: SocketAddr) -> std::io::Result<UdpSocket> {
    inside(path, || {
        let socket = UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    })
}

/// Runs `make` on a thread that has entered the namespace at `path`; what it makes (a
/// socket) stays in that namespace.
fn inside<T: Send>(
    path: &Path,
    make: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let ns = std::fs::File::open(path)?;
                nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
                make()
            })
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the binding thread panicked")))
    })
}

impl Drop for NetNs {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Deletes a namespace by name; a missing one is not an error.
pub fn delete(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "delete", name])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The names of all namespaces `ip netns` knows.
pub fn list() -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn run_ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running ip {}: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}
