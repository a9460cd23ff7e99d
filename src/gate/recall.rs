//! A connection's recall: the credentials the gate last let through on it,
//! exactly as they were sent, so that the next request sending the same
//! bytes — nearly every request of an app or a player — passes without a
//! token read, a key made or the memory's look-up (together most of the
//! gate's cost; `docs/performance.md`). The same bytes for the same site
//! are the same key (`Sent`), so the recall answers only what the memory
//! would.
//!
//! A recall never outlives what it stands on: the word's lifetime, the
//! moment the address's grant is due to move on (the memory then moves it),
//! and the memory's forgetting — a logout anywhere, or Jellyfin refusing
//! credentials the gate thought good, ends every connection's recall at
//! once (`Memory::forgotten`). Only a good word is recalled, only for the
//! client address it was recalled for (a trusted proxy carries many clients
//! on one connection).

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::credentials::Sent;

/// One connection's recall (`Conn::recall`); empty until the gate lets
/// credentials through on it.
#[derive(Debug, Default)]
pub struct Recall(Mutex<Option<Box<Recalled>>>);

#[derive(Debug)]
struct Recalled {
    /// The site they passed on.
    site: Box<str>,
    /// What was sent (`Sent::bytes`).
    sent: Vec<u8>,
    /// Their key (`Found::key`).
    key: Arc<str>,
    /// Their Jellyfin user, where Jellyfin named one.
    user: Option<Arc<str>>,
    /// The client address they passed for.
    ip: IpAddr,
    /// Recalled while now is before this.
    until: Instant,
    /// `Memory::forgotten` when the word was read.
    forgotten: u64,
}

impl Recall {
    /// The key of what `sent` to `site`, if it is what passed on this
    /// connection for `ip` and still stands at `now`, the memory having
    /// `forgotten` as it counts.
    pub fn of(
        &self,
        site: &str,
        sent: &Sent<'_>,
        ip: IpAddr,
        now: Instant,
        forgotten: u64,
    ) -> Option<(Arc<str>, Option<Arc<str>>)> {
        let recalled = self.0.lock().expect("recall lock");
        let r = recalled.as_ref()?;
        let holds = r.forgotten == forgotten
            && now < r.until
            && r.ip == ip
            && *r.site == *site
            && sent.is(&r.sent);
        holds.then(|| (r.key.clone(), r.user.clone()))
    }

    /// Recalls what `sent` to `site` — credentials of `key` (and `user`), with a good
    /// word read while the memory counted `forgotten` (read before the word,
    /// so that forgetting in between ends the recall) — for `ip` until
    /// `until`.
    pub fn keep(
        &self,
        site: &str,
        sent: &Sent<'_>,
        (key, user): (&Arc<str>, Option<Arc<str>>),
        ip: IpAddr,
        until: Instant,
        forgotten: u64,
    ) {
        let recalled = Recalled {
            site: site.into(),
            sent: sent.bytes(),
            key: key.clone(),
            user,
            ip,
            until,
            forgotten,
        };
        *self.0.lock().expect("recall lock") = Some(Box::new(recalled));
    }
}

#[cfg(test)]
mod tests {
    use super::Recall;
    use crate::gate::credentials::Carried;
    use http::{HeaderMap, Uri};
    use std::net::IpAddr;
    use std::sync::Arc;
    use std::time::Duration;
    use tokio::time::Instant;

    #[test]
    fn a_recall_holds_for_what_was_sent_its_site_address_time_and_memory() {
        let recall = Recall::default();
        let now = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let until = now + Duration::from_secs(60);
        let mut headers = HeaderMap::new();
        headers.append("x-emby-token", "t".parse().unwrap());
        let uri: Uri = "/Videos/1/stream?ApiKey=u".parse().unwrap();
        let carried = Carried::of(&headers, &uri);
        let key: Arc<str> = Arc::from("k");
        assert!(
            recall.of("a", &carried.sent, ip, now, 3).is_none(),
            "empty until kept"
        );
        recall.keep("a", &carried.sent, (&key, None), ip, until, 3);
        assert_eq!(recall.of("a", &carried.sent, ip, now, 3), Some((key, None)));
        assert!(
            recall.of("b", &carried.sent, ip, now, 3).is_none(),
            "another site"
        );
        let other: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(
            recall.of("a", &carried.sent, other, now, 3).is_none(),
            "another client"
        );
        assert!(
            recall.of("a", &carried.sent, ip, until, 3).is_none(),
            "its time is over"
        );
        assert!(
            recall.of("a", &carried.sent, ip, now, 4).is_none(),
            "the memory forgot since"
        );
        // Anything else sent, anywhere the key is made from: not recalled.
        let mut more = headers.clone();
        more.append("authorization", "MediaBrowser Token=\"v\"".parse().unwrap());
        let longer: Uri = "/Videos/1/stream?ApiKey=uu".parse().unwrap();
        let shorter: Uri = "/Videos/1/stream?ApiKey=".parse().unwrap();
        let twice: Uri = "/Videos/1/stream?ApiKey=u&api_key=u".parse().unwrap();
        let mut other_value = HeaderMap::new();
        other_value.append("x-emby-token", "T".parse().unwrap());
        let mut other_name = HeaderMap::new();
        other_name.append("x-mediabrowser-token", "t".parse().unwrap());
        for (headers, uri) in [
            (&more, &uri),
            (&headers, &longer),
            (&headers, &shorter),
            (&headers, &twice),
            (&other_value, &uri),
            (&other_name, &uri),
        ] {
            let carried = Carried::of(headers, uri);
            assert!(
                recall.of("a", &carried.sent, ip, now, 3).is_none(),
                "{headers:?} {uri}"
            );
        }
        // The path and other parameters are no part of it.
        let elsewhere: Uri = "/Items/2/Images/Primary?ApiKey=u&maxWidth=300"
            .parse()
            .unwrap();
        let carried = Carried::of(&headers, &elsewhere);
        assert!(recall.of("a", &carried.sent, ip, now, 3).is_some());
    }
}
