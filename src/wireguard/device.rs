//! The edge's WireGuard device: gotatun's responder on the `[wireguard]
//! listen` UDP socket, and a TUN of drawbridge's own (`drawbridge0`) with
//! the edge's tunnel address, so the kernel's TCP carries every connection
//! home. Every packet crossing the TUN passes the fence (`fence.rs`). Needs
//! CAP_NET_ADMIN for the TUN and its routes; `ip` (iproute2) adds a route
//! for each address at home a site names outside the tunnel network.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use gotatun::device::{Device, DeviceBuilder};
use gotatun::packet::{Ip, Packet, PacketBufPool};
use gotatun::tun::tun_async_device::TunDevice;
use gotatun::tun::{IpRecv, IpSend, MtuWatcher};
use gotatun::udp::socket::{SockOpt, UdpSocket};
use gotatun::udp::UdpRecv;
use gotatun::udp::{UdpTransportFactory, UdpTransportFactoryParams};
use gotatun::x25519::StaticSecret;

use super::fence::Fence;
use crate::config::WireguardConfig;

/// The running device's transports: the listen socket, the fenced TUN.
pub(super) type Running = Device<(Listen, Fenced, Fenced)>;

/// When a datagram last came from each address: a peer's keepalives carry
/// no data, and gotatun counts only data, so this is how the edge knows a
/// quiet peer is still there (read for each peer's authenticated endpoint
/// only, so a forged source proves nothing for another).
pub(super) type Arrivals = Arc<Mutex<HashMap<SocketAddr, tokio::time::Instant>>>;

/// How many sources `Arrivals` holds between two samples.
const MAX_ARRIVALS: usize = 4096;

/// The listen socket's receiving side, noting where datagrams come from.
pub(super) struct Noted {
    socket: UdpSocket,
    arrivals: Arrivals,
}

impl Noted {
    fn note<'a>(&self, sources: impl Iterator<Item = &'a SocketAddr>) {
        let now = tokio::time::Instant::now();
        let mut arrivals = self.arrivals.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = None;
        for source in sources {
            if last != Some(source) {
                // Bounded against floods of forged sources: the sampler
                // empties it of all but the peers' endpoints every second.
                if arrivals.len() < MAX_ARRIVALS || arrivals.contains_key(source) {
                    arrivals.insert(*source, now);
                }
                last = Some(source);
            }
        }
    }
}

impl UdpRecv for Noted {
    type RecvManyBuf = <UdpSocket as UdpRecv>::RecvManyBuf;

    async fn recv_from(&mut self, pool: &mut PacketBufPool) -> io::Result<(Packet, SocketAddr)> {
        let (packet, source) = self.socket.recv_from(pool).await?;
        self.note(std::iter::once(&source));
        Ok((packet, source))
    }

    async fn recv_many_from(
        &mut self,
        recv_buf: &mut Self::RecvManyBuf,
        pool: &mut PacketBufPool,
        packets: &mut Vec<(Packet, SocketAddr)>,
    ) -> io::Result<()> {
        let before = packets.len();
        self.socket.recv_many_from(recv_buf, pool, packets).await?;
        self.note(packets[before..].iter().map(|(_, source)| source));
        Ok(())
    }

    fn enable_udp_gro(&self) -> io::Result<()> {
        self.socket.enable_udp_gro()
    }
}

/// Binds the configured `listen` address (both families for `[::]`), and
/// remembers what was bound.
pub(super) struct Listen {
    addr: SocketAddr,
    bound: Arc<Mutex<Option<SocketAddr>>>,
    arrivals: Arrivals,
    /// The socket, once bound: gotatun asks again at every reconfiguration
    /// (a new key), while its old tasks may still hold the old one — the
    /// port would be taken. The same socket is handed out again.
    socket: Option<UdpSocket>,
}

impl UdpTransportFactory for Listen {
    type Send = UdpSocket;
    type Recv = Noted;

    async fn bind(
        &mut self,
        _params: &UdpTransportFactoryParams,
    ) -> io::Result<(UdpSocket, Noted)> {
        let socket = match &self.socket {
            Some(socket) => socket.clone(),
            None => self.bind_once()?,
        };
        self.socket = Some(socket.clone());
        let noted = Noted {
            socket: socket.clone(),
            arrivals: self.arrivals.clone(),
        };
        Ok((socket, noted))
    }
}

impl Listen {
    fn bind_once(&self) -> io::Result<UdpSocket> {
        let dual = self.addr.ip() == IpAddr::V6(Ipv6Addr::UNSPECIFIED);
        let opts = SockOpt {
            only_v6: self.addr.is_ipv6().then_some(!dual),
            // As wireguard-go asks: a burst of a film's packets waits in the
            // socket rather than being dropped while the device is busy.
            recv_buffer_size: Some(7 << 20),
            send_buffer_size: Some(7 << 20),
            ..SockOpt::default()
        };
        let socket = match UdpSocket::bind(self.addr, opts) {
            Ok(socket) => socket,
            // A machine without IPv6: the IPv4 half of `[::]`.
            Err(_) if dual => UdpSocket::bind(
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), self.addr.port()),
                opts,
            )?,
            Err(error) => return Err(error),
        };
        // The kernel hands over a burst of datagrams in one read (UDP GRO),
        // as gotatun's own socket factory asks; without it, one read each.
        if let Err(error) = UdpRecv::enable_udp_gro(&socket) {
            tracing::debug!(%error, "WireGuard: no UDP GRO");
        }
        *self.bound.lock().unwrap_or_else(|e| e.into_inner()) = Some(socket.local_addr()?);
        Ok(socket)
    }
}

/// The TUN behind the fence, and how many packets it turned away.
#[derive(Clone)]
pub(super) struct Fenced {
    tun: TunDevice,
    fence: Arc<ArcSwap<Fence>>,
    pub(super) refused: Arc<std::sync::atomic::AtomicU64>,
}

impl Fenced {
    fn refuse(&self) {
        self.refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl IpSend for Fenced {
    /// A packet from home, decrypted: to the kernel if the fence lets it in.
    async fn send(&mut self, packet: Packet<Ip>) -> io::Result<()> {
        let bytes = packet.into_bytes();
        if !self.fence.load().lets_in(bytes.as_ref()) {
            self.refuse();
            return Ok(());
        }
        match bytes.try_into_ip() {
            Ok(packet) => self.tun.send(packet).await,
            Err(_) => Ok(()),
        }
    }
}

impl IpRecv for Fenced {
    /// Packets the kernel routes home: on to the peer if the fence lets
    /// them out.
    async fn recv<'a>(
        &'a mut self,
        pool: &mut PacketBufPool,
    ) -> io::Result<impl Iterator<Item = Packet<Ip>> + Send + 'a> {
        let fence = self.fence.load_full();
        let refused = self.refused.clone();
        let packets = self.tun.recv(pool).await?;
        Ok(packets.filter_map(move |packet| {
            let bytes = packet.into_bytes();
            if fence.lets_out(bytes.as_ref()) {
                bytes.try_into_ip().ok()
            } else {
                refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                None
            }
        }))
    }

    fn mtu(&self) -> MtuWatcher {
        self.tun.mtu()
    }
}

/// What starting the device left: the device, the bound address (once a
/// peer is added: the socket is bound with the first), the
/// counter of packets the fence refused.
pub(super) struct Started {
    pub(super) device: Running,
    pub(super) bound: Arc<Mutex<Option<SocketAddr>>>,
    pub(super) arrivals: Arrivals,
    pub(super) refused: Arc<std::sync::atomic::AtomicU64>,
}

/// Makes the TUN (address, MTU, up) and starts the responder with the
/// edge's `key`, no peers yet.
pub(super) async fn start(
    config: &WireguardConfig,
    key: StaticSecret,
    fence: Arc<ArcSwap<Fence>>,
) -> Result<Started, String> {
    let mut tun = gotatun::tun::tun::Configuration::default();
    tun.tun_name(&config.interface)
        .address(config.address.addr())
        .netmask(config.address.netmask())
        .mtu(config.mtu)
        .up();
    let device = gotatun::tun::tun::create_as_async(&tun).map_err(|e| {
        format!(
            "cannot make the TUN device {}: {e} (it needs CAP_NET_ADMIN and /dev/net/tun; docs/operations.md has the unit's drop-in)",
            config.interface
        )
    })?;
    let tun = TunDevice::from_tun_device(device).map_err(|e| e.to_string())?;
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let fenced = Fenced {
        tun,
        fence,
        refused: refused.clone(),
    };
    let bound = Arc::new(Mutex::new(None));
    let arrivals = Arrivals::default();
    let device = DeviceBuilder::new()
        .with_udp(Listen {
            addr: config.listen,
            bound: bound.clone(),
            arrivals: arrivals.clone(),
            socket: None,
        })
        .with_ip(fenced)
        .with_listen_port(config.listen.port())
        .with_private_key(key)
        .build()
        .await
        .map_err(|e| format!("cannot start WireGuard on {}: {e}", config.listen))?;
    Ok(Started {
        device,
        bound,
        arrivals,
        refused,
    })
}

/// Routes `addresses` (outside the tunnel network) into the TUN, with
/// iproute2's `ip route replace`.
pub(super) async fn route(interface: &str, addresses: &[IpAddr]) -> Result<(), String> {
    for address in addresses {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let output = tokio::process::Command::new("ip")
            .args([
                "route",
                "replace",
                &format!("{address}/{prefix}"),
                "dev",
                interface,
            ])
            .output()
            .await
            .map_err(|e| {
                format!("cannot run `ip` (iproute2) to route {address} into {interface}: {e}")
            })?;
        if !output.status.success() {
            return Err(format!(
                "`ip route replace {address}/{prefix} dev {interface}` failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
    }
    Ok(())
}

/// Takes the routes of `addresses` out of the TUN again (a site no longer
/// names them); one already gone is no matter.
pub(super) async fn unroute(interface: &str, addresses: &[IpAddr]) {
    for address in addresses {
        let prefix = if address.is_ipv4() { 32 } else { 128 };
        let deleted = tokio::process::Command::new("ip")
            .args([
                "route",
                "del",
                &format!("{address}/{prefix}"),
                "dev",
                interface,
            ])
            .output()
            .await;
        if !deleted.is_ok_and(|out| out.status.success()) {
            tracing::debug!(%address, "WireGuard: no route to take out");
        }
    }
}
