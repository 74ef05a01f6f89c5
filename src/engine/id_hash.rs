//! Hashing for keys the server hands out itself: job ids, client ids, tube
//! indexes. No client chooses them, so there is nothing for a keyed hash to
//! resist, and std's SipHash was about 6% of the server's own instructions
//! per command (callgrind, reserve + delete). A multiply-and-fold spreads
//! sequential keys over every bit, which hashbrown needs: it takes the
//! bucket from the low bits and a tag from the top seven.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Mixes an id into a well-spread 64-bit hash.
pub fn mix(id: u64) -> u64 {
    let x = u128::from(id) * 0x9e37_79b9_7f4a_7c15;
    (x as u64) ^ ((x >> 64) as u64)
}

/// A `Hasher` for integer keys (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached by integer keys; correct for anything else.
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix(self.0 ^ n);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` keyed by server-assigned ids.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn sequential_ids_spread_over_buckets_and_tags() {
        let build = BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (1..=4096u64).map(|id| build.hash_one(id)).collect();
        let buckets: HashSet<u64> = hashes.iter().map(|h| h & 4095).collect();
        let tags: HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(buckets.len() > 2500, "{} of 4096 buckets", buckets.len());
        assert_eq!(tags.len(), 128, "every tag value in use");
        // u32 keys (tube indexes) too.
        let small: HashSet<u64> = (0..1000u32).map(|t| build.hash_one(t) & 1023).collect();
        assert!(small.len() > 600, "{} of 1024", small.len());
    }

    #[test]
    fn a_map_finds_what_it_holds() {
        let mut map: IdMap<u64, u64> = IdMap::default();
        for id in 0..10_000 {
            map.insert(id * 7, id);
        }
        assert!((0..10_000).all(|id| map[&(id * 7)] == id));
        assert!(!map.contains_key(&1));
    }
}
