//! Client keys and the capped table every per-client memory uses.
//!
//! A key is a client's address, or its /64 for IPv6 (one home connection owns
//! a whole /64, so per-address limits would be trivial to dodge). `KeyTable`
//! keeps at most `cap` keys in two generations: when the current one is half
//! full it becomes the previous one and the old previous is dropped. A flood of
//! distinct sources therefore costs bounded memory and O(1) work per key, and
//! what is forgotten first is what was touched longest ago.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv6Net};

use crate::client_ip::normalise;

/// A client as limits and bans count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(IpNet);

impl ClientKey {
    /// The key of `ip`: itself for IPv4, its /64 for IPv6.
    pub fn of(ip: IpAddr) -> ClientKey {
        match normalise(ip) {
            IpAddr::V4(v4) => ClientKey(IpNet::from(IpAddr::V4(v4))),
            IpAddr::V6(v6) => ClientKey(IpNet::V6(
                Ipv6Net::new(v6, 64).expect("64 is a valid prefix").trunc(),
            )),
        }
    }

    /// Parses a key as written by `Display` (an address, or an IPv6 /64).
    pub fn parse(text: &str) -> Option<ClientKey> {
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Some(ClientKey::of(ip));
        }
        text.parse::<IpNet>()
            .ok()
            .map(|net| ClientKey::of(net.addr()))
    }

    /// The key a ban given by hand names (`bans add|remove`): an address,
    /// or an IPv6 network of /64 or narrower (its /64). A wider range is
    /// refused with the reason, never narrowed to its first address.
    pub fn parse_one(text: &str) -> Result<ClientKey, String> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(ClientKey::of(ip));
        }
        match text.parse::<IpNet>() {
            Ok(IpNet::V4(net)) if net.prefix_len() == 32 => Ok(ClientKey::of(IpAddr::V4(net.addr()))),
            Ok(IpNet::V6(net)) if net.prefix_len() >= 64 => Ok(ClientKey::of(IpAddr::V6(net.addr()))),
            Ok(net) => Err(format!(
                "`{net}` is a range: bans are per address (an IPv6 /64 counts as one); to keep a whole range out, add it to a site's `deny` list (docs/config.md), which holds for every request"
            )),
            Err(_) => Err(format!("`{text}` is not an address")),
        }
    }

    /// Whether any of `nets` contains this client.
    pub fn in_any(&self, nets: &[IpNet]) -> bool {
        nets.iter()
            .any(|n| n.contains(&self.0.addr()) || n.contains(&self.0))
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpNet::V4(v4) => write!(f, "{}", v4.addr()),
            IpNet::V6(v6) => write!(f, "{v6}"),
        }
    }
}

/// At most `cap` keys with a value each; older keys are forgotten first.
#[derive(Debug)]
pub struct KeyTable<V> {
    half: usize,
    current: HashMap<ClientKey, V>,
    previous: HashMap<ClientKey, V>,
}

impl<V> KeyTable<V> {
    /// A table of at most `cap` keys.
    pub fn new(cap: usize) -> KeyTable<V> {
        KeyTable {
            half: (cap / 2).max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// The value of `key`, created by `make` if absent.
    pub fn entry(&mut self, key: ClientKey, make: impl FnOnce() -> V) -> &mut V {
        if !self.current.contains_key(&key) {
            let value = self.previous.remove(&key).unwrap_or_else(make);
            if self.current.len() >= self.half {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(key, value);
        }
        self.current.get_mut(&key).expect("just inserted")
    }

    /// The value of `key`, if remembered.
    pub fn get(&self, key: &ClientKey) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &ClientKey) -> Option<V> {
        self.current
            .remove(key)
            .or_else(|| self.previous.remove(key))
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{ClientKey, KeyTable};
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn ipv6_clients_are_grouped_by_their_64() {
        let a = ClientKey::of("2001:db8:1:2::1".parse().unwrap());
        let b = ClientKey::of("2001:db8:1:2:ffff::9".parse().unwrap());
        let c = ClientKey::of("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            ClientKey::of("::ffff:192.0.2.1".parse().unwrap()).to_string(),
            "192.0.2.1"
        );
        assert_eq!(ClientKey::parse("2001:db8:1:2::/64"), Some(a));
        assert_eq!(ClientKey::parse_one("2001:db8:1:2::/64"), Ok(a));
        assert_eq!(ClientKey::parse_one("2001:db8:1:2::9/128"), Ok(a));
        assert_eq!(
            ClientKey::parse_one("192.0.2.7/32"),
            ClientKey::parse_one("192.0.2.7")
        );
        for range in ["10.0.0.0/8", "192.0.2.0/31", "2001:db8::/48"] {
            let refused = ClientKey::parse_one(range).unwrap_err();
            assert!(refused.contains("is a range"), "{range}: {refused}");
        }
        assert!(ClientKey::parse_one("nonsense")
            .unwrap_err()
            .contains("not an address"));
        assert!(a.in_any(&["2001:db8::/32".parse().unwrap()]));
    }

    #[test]
    fn a_million_sources_stay_within_the_cap() {
        let mut table = KeyTable::new(10_000);
        for n in 0..1_000_000u32 {
            *table.entry(ClientKey::of(IpAddr::V4(Ipv4Addr::from(n))), || 0u32) += 1;
            assert!(table.len() <= 10_000);
        }
        // The latest keys are remembered; the earliest forgotten.
        assert!(table
            .get(&ClientKey::of(IpAddr::V4(Ipv4Addr::from(999_999))))
            .is_some());
        assert!(table
            .get(&ClientKey::of(IpAddr::V4(Ipv4Addr::from(0))))
            .is_none());
    }

    #[test]
    fn touched_keys_survive_a_rotation() {
        let mut table = KeyTable::new(4);
        let key = |n: u32| ClientKey::of(IpAddr::V4(Ipv4Addr::from(n)));
        *table.entry(key(1), || 0) = 7;
        table.entry(key(2), || 0);
        table.entry(key(3), || 0); // rotation: 1 and 2 move to previous
        assert_eq!(
            *table.entry(key(1), || 0),
            7,
            "promoted back from the previous generation"
        );
    }
}
