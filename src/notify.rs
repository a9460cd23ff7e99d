//! Telling a supervisor how the process is doing: systemd's notify protocol
//! (`sd_notify(3)`: one datagram per state to the socket `$NOTIFY_SOCKET`
//! names) and a pid file. Without `$NOTIFY_SOCKET` every call is silent.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

/// Sends `state` (e.g. `READY=1\nSTATUS=serving 2 sites`) to systemd, if it
/// asked for it; a failure is logged once at debug and otherwise ignored.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

/// Sends `state` to the notify socket at `path`.
fn notify_to(path: &std::ffi::OsStr, state: &str) {
    let sent = UnixDatagram::unbound().and_then(|socket| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's usual choice in containers).
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)
        } else {
            socket.send_to(state.as_bytes(), Path::new(&path))
        }
    });
    if let Err(error) = sent {
        tracing::debug!(%error, state, "cannot notify systemd");
    }
}

/// Writes this process's id to `path` (for supervisors other than systemd).
pub fn write_pid_file(path: &Path) -> std::io::Result<()> {
    crate::atomic_file::write_atomic(path, format!("{}\n", std::process::id()).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    #[test]
    fn states_reach_the_socket_notify_socket_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        super::notify_to(path.as_os_str(), "READY=1\nSTATUS=serving");
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
