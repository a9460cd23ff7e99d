//! The gate memory's tables: maps bounded in entries, forgetting the least
//! recently used first.

use std::collections::HashMap;
use std::hash::Hash;

/// A map of at most `cap` entries, the least recently used forgotten first:
/// two generations, as `guard/keys.rs` keeps them, in one map — each entry
/// notes the generation it was last used in; once half the cap has been
/// used in the current generation, what was not used since the previous one
/// is dropped and a new generation begins. A look-up hashes its key once.
#[derive(Debug)]
pub(super) struct Bounded<K, V> {
    map: HashMap<K, (V, u64)>,
    generation: u64,
    /// Entries used in the current generation.
    used: usize,
    cap: usize,
}

impl<K: Hash + Eq, V> Bounded<K, V> {
    pub(super) fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            generation: 0,
            used: 0,
            cap: cap.max(2),
        }
    }

    /// Drops what the previous generation did not use, when the current
    /// one is full.
    pub(super) fn age(&mut self) {
        if self.used < self.cap / 2 {
            return;
        }
        let generation = self.generation;
        self.map.retain(|_, (_, used)| *used == generation);
        self.generation += 1;
        self.used = 0;
    }

    /// The entry of `key` (borrowed: no copy of it is made to look).
    pub(super) fn get<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.age();
        let (value, used) = self.map.get_mut(key)?;
        if *used != self.generation {
            *used = self.generation;
            self.used += 1;
        }
        Some(value)
    }

    pub(super) fn insert(&mut self, key: K, value: V) {
        self.age();
        let was = self.map.insert(key, (value, self.generation));
        if was.is_none_or(|(_, used)| used != self.generation) {
            self.used += 1;
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        self.map.retain(|k, (v, _)| keep(k, v));
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}
