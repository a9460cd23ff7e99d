//! Binding the listeners, and saying what to do when one cannot be had.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

use super::ServerError;

/// What to do when a port below 1024 is refused for lack of privilege.
pub(super) fn bind_hint(addr: SocketAddr, error: &std::io::Error) -> &'static str {
    let denied = error.kind() == std::io::ErrorKind::PermissionDenied && addr.port() < 1024;
    if denied && std::env::var_os("DRAWBRIDGE_IN_CONTAINER").is_some() {
        // The image runs as its own user (`packaging/container`).
        " — in drawbridge's container, not root: let it have ports below 1024 with the sysctl \
         net.ipv4.ip_unprivileged_port_start=0 (compose: `sysctls:`, as \
         examples/compose/edge.yml does; podman/docker run: --sysctl), or listen above 1024 \
         in [server] and publish those ports"
    } else if denied {
        " — ports below 1024 need the CAP_NET_BIND_SERVICE capability: run drawbridge from its \
         systemd unit (AmbientCapabilities=CAP_NET_BIND_SERVICE), or give the binary the \
         capability (setcap cap_net_bind_service=+ep /usr/bin/drawbridge), or listen on ports \
         above 1024 in [server]"
    } else if error.kind() == std::io::ErrorKind::AddrInUse {
        " — another program (or another drawbridge) already listens there"
    } else {
        ""
    }
}

pub(super) fn bind_all(
    addrs: &[SocketAddr],
    proxy_protocol: &[SocketAddr],
) -> Result<Vec<(TcpListener, bool)>, ServerError> {
    addrs
        .iter()
        .map(|addr| {
            let listener = bind(*addr).map_err(|source| ServerError::Bind {
                addr: *addr,
                source,
            })?;
            Ok((listener, proxy_protocol.contains(addr)))
        })
        .collect()
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = crate::socket::for_address(addr, socket2::Type::STREAM)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let socket = TcpSocket::from_std_stream(socket.into());
    socket.listen(1024)
}
