//! A byte-bounded map that forgets the least recently used first: each
//! tier of the edge cache keeps its entries in one.

use std::collections::{BTreeMap, HashMap};

/// A byte-bounded map that forgets the least recently used first.
#[derive(Debug)]
pub struct Lru<V> {
    map: HashMap<String, (V, u64, u64)>,
    order: BTreeMap<u64, String>,
    bytes: u64,
    cap: u64,
    tick: u64,
}

impl<V> Lru<V> {
    /// A map of at most `cap` bytes.
    pub fn new(cap: u64) -> Lru<V> {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            bytes: 0,
            cap,
            tick: 0,
        }
    }

    /// The value of `key`, not marked as used.
    pub fn peek(&self, key: &str) -> Option<&V> {
        self.map.get(key).map(|(v, _, _)| v)
    }

    /// The value of `key`, marked as used.
    pub fn get(&mut self, key: &str) -> Option<&V> {
        self.tick += 1;
        let (_, used, _) = self.map.get_mut(key)?;
        self.order.remove(used);
        *used = self.tick;
        self.order.insert(self.tick, key.to_string());
        self.map.get(key).map(|(v, _, _)| v)
    }

    /// Stores `value` of `weight` bytes; returns what was evicted to make room.
    pub fn insert(&mut self, key: String, value: V, weight: u64) -> Vec<(String, V)> {
        let mut evicted = Vec::new();
        if let Some(old) = self.remove(&key) {
            drop(old);
        }
        if weight > self.cap {
            return evicted;
        }
        while self.bytes + weight > self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((v, _, w)) = self.map.remove(&oldest) {
                self.bytes -= w;
                evicted.push((oldest, v));
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, self.tick, weight));
        self.bytes += weight;
        evicted
    }

    /// Forgets `key`.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let (v, used, w) = self.map.remove(key)?;
        self.order.remove(&used);
        self.bytes -= w;
        Some(v)
    }

    /// Keys held.
    pub fn keys(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::Lru;

    #[test]
    fn lru_stays_within_bytes_and_forgets_the_least_recent() {
        let mut lru = Lru::new(300);
        lru.insert("a".into(), 1, 100);
        lru.insert("b".into(), 2, 100);
        lru.insert("c".into(), 3, 100);
        lru.get("a");
        let evicted = lru.insert("d".into(), 4, 100);
        assert_eq!(
            evicted.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["b"]
        );
        assert!(lru.bytes() <= 300);
        assert!(
            lru.insert("huge".into(), 5, 301).is_empty() && lru.get("huge").is_none(),
            "larger than the cap: not kept"
        );
    }
}
