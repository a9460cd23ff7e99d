//! Validation of `[wireguard]`.

use super::Validator;
use crate::config::raw::RawWireguard;
use crate::config::WireguardConfig;

impl Validator<'_> {
    pub(super) fn wireguard(&mut self, raw: RawWireguard) -> WireguardConfig {
        let d = WireguardConfig::default();
        let listen = match raw.listen {
            Some(given) => match given.get_ref().parse() {
                Ok(addr) => addr,
                Err(_) => {
                    self.report.at(
                        &given.span(),
                        format!("`{}` is not an address and port; write it like \"[::]:51820\" or \"0.0.0.0:51820\"", given.get_ref()),
                    );
                    d.listen
                }
            },
            None => d.listen,
        };
        let address = match raw.address {
            Some(given) => match given.get_ref().parse::<ipnet::Ipv4Net>() {
                Ok(net)
                    if net.prefix_len() <= 30
                        && net.addr() != net.network()
                        && net.addr() != net.broadcast() =>
                {
                    net
                }
                _ => {
                    self.report.at(
                        &given.span(),
                        format!("`{}` is not the edge's tunnel address with its network; write it like \"10.99.0.1/24\" (IPv4, a /30 or wider, the edge's own address in it)", given.get_ref()),
                    );
                    d.address
                }
            },
            None => d.address,
        };
        let endpoint = raw.endpoint.and_then(|given| {
            let text = given.get_ref();
            let valid = text
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
            if valid {
                Some(text.clone())
            } else {
                self.report.at(
                    &given.span(),
                    format!("`{text}` is not what a home router dials; write it like \"vps.example.com:51820\""),
                );
                None
            }
        });
        let keepalive_span = raw.keepalive.as_ref().map(toml::Spanned::span);
        let mut keepalive = self.duration(raw.keepalive, d.keepalive);
        if let Some(span) =
            keepalive_span.filter(|_| keepalive.as_secs() == 0 || keepalive.as_secs() > 3600)
        {
            self.report.at(
                &span,
                "keepalive must be between 1s and 1h: the edge tells a peer down by its silence",
            );
            keepalive = d.keepalive;
        }
        let mtu = self.count(raw.mtu, u32::from(d.mtu), 1280, 1500) as u16;
        let interface = match raw.interface {
            Some(given) => {
                let name = given.get_ref();
                let valid = (1..=15).contains(&name.len())
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
                if !valid {
                    self.report.at(
                        &given.span(),
                        format!(
                            "`{name}` is not an interface name: 1 to 15 of a-z, A-Z, 0-9, - and _"
                        ),
                    );
                }
                name.clone()
            }
            None => d.interface,
        };
        WireguardConfig {
            listen,
            address,
            endpoint,
            keepalive,
            mtu,
            interface,
        }
    }
}
