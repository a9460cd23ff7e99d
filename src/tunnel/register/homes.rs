//! The addresses agents attach from (`homes.json`): what kernel bans leave
//! out while the agent is enrolled.

use serde::{Deserialize, Serialize};

use super::{Register, RegisterError};

/// How many agent addresses `homes.json` keeps.
pub const MAX_HOMES: usize = 16;

/// An address an agent attached from, and that agent's key's pin: kept out
/// of kernel bans while the agent is enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Home {
    pub(super) ip: std::net::IpAddr,
    pub(super) pin: String,
}

/// `homes.json` as written now, or as the first version wrote it (bare
/// addresses, whose agent is not known: they age out as new ones come).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum StoredHome {
    Pinned(Home),
    Bare(std::net::IpAddr),
}

impl From<StoredHome> for Home {
    fn from(stored: StoredHome) -> Home {
        match stored {
            StoredHome::Pinned(home) => home,
            StoredHome::Bare(ip) => Home {
                ip,
                pin: String::new(),
            },
        }
    }
}

impl Register {
    /// The addresses agents last attached from (`homes.json`, at most
    /// `MAX_HOMES`, newest last): what kernel bans leave out.
    pub fn homes(&self) -> Vec<std::net::IpAddr> {
        self.stored_homes()
            .into_iter()
            .map(|home| home.ip)
            .collect()
    }

    pub(super) fn stored_homes(&self) -> Vec<Home> {
        let stored: Vec<StoredHome> = self.read("homes.json").unwrap_or_default();
        stored.into_iter().map(Home::from).collect()
    }

    /// Notes that the agent whose key has `pin` attached from `ip`; false
    /// if that was the last one noted.
    pub fn note_home(&self, ip: std::net::IpAddr, pin: &str) -> Result<bool, RegisterError> {
        let _turn = self.exclusive()?;
        let mut homes = self.stored_homes();
        let home = Home {
            ip,
            pin: pin.to_string(),
        };
        if homes.last() == Some(&home) {
            return Ok(false);
        }
        homes.retain(|h| h.ip != ip);
        homes.push(home);
        let excess = homes.len().saturating_sub(MAX_HOMES);
        homes.drain(..excess);
        self.write("homes.json", &homes)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::token_for;
    use super::super::Register;

    #[test]
    fn homes_keep_the_newest_addresses_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        let ip = |n: u8| std::net::IpAddr::from([192, 0, 2, n]);
        assert!(register.note_home(ip(1), "sha256/a").unwrap());
        assert!(
            !register.note_home(ip(1), "sha256/a").unwrap(),
            "known: nothing written"
        );
        for n in 2..=20 {
            register.note_home(ip(n), "sha256/a").unwrap();
        }
        assert!(
            register.note_home(ip(5), "sha256/a").unwrap(),
            "seen again: moved last"
        );
        let homes = register.homes();
        assert_eq!(homes.len(), super::MAX_HOMES);
        assert_eq!(homes.last(), Some(&ip(5)));
        assert!(!homes.contains(&ip(1)), "the oldest forgotten");
        assert_eq!(homes.iter().filter(|h| **h == ip(5)).count(), 1);
    }

    /// `tunnel remove` takes the agent's addresses out of the homes kernel
    /// bans leave alone; another agent's stay, and so do the bare addresses
    /// the first version of the file kept.
    #[test]
    fn a_removed_agents_addresses_are_no_longer_homes() {
        let dir = tempfile::tempdir().unwrap();
        let register = Register::new(dir.path());
        crate::owner::create_dir_all(dir.path().join("tunnel")).unwrap();
        std::fs::write(dir.path().join("tunnel/homes.json"), r#"["192.0.2.9"]"#).unwrap();
        let channel = [7u8; 32];
        for (name, pin) in [("home", "sha256/a"), ("other", "sha256/b")] {
            let token = token_for(&register, name);
            register
                .redeem(&token.id, &token.proof(&channel), &channel, pin)
                .unwrap();
        }
        let ip = |n: u8| std::net::IpAddr::from([192, 0, 2, n]);
        register.note_home(ip(1), "sha256/a").unwrap();
        register.note_home(ip(2), "sha256/b").unwrap();
        assert_eq!(register.homes(), [ip(9), ip(1), ip(2)]);
        assert!(register.remove("home").unwrap());
        assert_eq!(register.homes(), [ip(9), ip(2)]);
    }
}
