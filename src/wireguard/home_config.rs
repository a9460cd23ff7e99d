//! The home side's configuration as `wg-quick` and router firmwares import
//! it (OpenWrt, FRITZ!Box, UniFi, OPNsense, the WireGuard apps), and as a
//! QR code in the terminal for the apps that scan one.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnet::Ipv4Net;

/// What the home side needs to know.
#[derive(Debug)]
pub struct HomeConfig<'a> {
    /// The home peer's private key (base64).
    pub private_key: &'a str,
    /// Its address in the tunnel network.
    pub address: Ipv4Addr,
    /// The edge's public key (base64).
    pub edge_public_key: &'a str,
    /// The edge's tunnel address and network.
    pub edge: Ipv4Net,
    /// `host:port` the home dials.
    pub endpoint: &'a str,
    /// Its `PersistentKeepalive`.
    pub keepalive: Duration,
    /// The tunnel's MTU.
    pub mtu: u16,
}

impl HomeConfig<'_> {
    /// The `wg-quick` file. `AllowedIPs` is the edge's address alone: the
    /// home routes nothing else to the edge.
    pub fn text(&self) -> String {
        let mut text = String::new();
        let _ = writeln!(text, "[Interface]");
        let _ = writeln!(text, "PrivateKey = {}", self.private_key);
        let _ = writeln!(text, "Address = {}/32", self.address);
        let _ = writeln!(text, "MTU = {}", self.mtu);
        let _ = writeln!(text);
        let _ = writeln!(text, "[Peer]");
        let _ = writeln!(text, "PublicKey = {}", self.edge_public_key);
        let _ = writeln!(text, "Endpoint = {}", self.endpoint);
        let _ = writeln!(text, "AllowedIPs = {}/32", self.edge.addr());
        let _ = writeln!(
            text,
            "PersistentKeepalive = {}",
            self.keepalive.as_secs().max(1)
        );
        text
    }

    /// The file as a QR code drawn with half-block characters, dark on a
    /// light terminal and light on a dark one both scan.
    pub fn qr(&self) -> Option<String> {
        let code =
            qrcode::QrCode::with_error_correction_level(self.text().as_bytes(), qrcode::EcLevel::L)
                .ok()?;
        Some(
            code.render::<qrcode::render::unicode::Dense1x2>()
                .dark_color(qrcode::render::unicode::Dense1x2::Light)
                .light_color(qrcode::render::unicode::Dense1x2::Dark)
                .quiet_zone(true)
                .build(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_home_file_names_the_edge_and_nothing_else() {
        let config = HomeConfig {
            private_key: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
            address: Ipv4Addr::new(10, 99, 0, 2),
            edge_public_key: "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=",
            edge: "10.99.0.1/24".parse().unwrap(),
            endpoint: "vps.example.com:51820",
            keepalive: Duration::from_secs(25),
            mtu: 1420,
        };
        let text = config.text();
        assert!(text.contains("Address = 10.99.0.2/32\n"));
        assert!(text.contains("AllowedIPs = 10.99.0.1/32\n"));
        assert!(text.contains("Endpoint = vps.example.com:51820\n"));
        assert!(text.contains("PersistentKeepalive = 25\n"));
        let qr = config.qr().unwrap();
        assert!(qr.lines().count() > 20);
    }
}
