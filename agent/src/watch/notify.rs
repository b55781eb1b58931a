//! systemd's notification protocol (sd_notify): a datagram to `$NOTIFY_SOCKET`.
//! A dozen lines of std, so the static binary needs no libsystemd.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`, `WATCHDOG=1`, `STATUS=…`); `Ok(false)` when the
/// process does not run under systemd's notification socket.
pub fn notify(state: &str) -> std::io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let bytes = path.as_encoded_bytes();
    let socket = UnixDatagram::unbound()?;
    let address = match bytes.strip_prefix(b"@") {
        // An abstract socket: systemd writes its leading NUL as '@'.
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    socket.send_to_addr(state.as_bytes(), &address)?;
    Ok(true)
}

/// How often to ping the watchdog (half its timeout), when systemd asks for pings.
pub fn watchdog_period() -> Option<Duration> {
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

/// Sends, logging (not failing) when it cannot.
pub fn send(state: &str) {
    if let Err(e) = notify(state) {
        tracing::warn!(error = %e, state, "could not notify systemd");
    }
}
