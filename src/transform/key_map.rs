//! A compact natural → surrogate key map for the large dimensions, which
//! the backfill holds for its whole run. A `HashMap<i64, i64>` of 500,000
//! customers (10M order items) takes about 17 MB in power-of-two buckets
//! and twice that while it grows; source ids are mostly one dense
//! auto-increment range, which this holds in 8 bytes per id (4 MB), and
//! any other ids as sorted pairs (16 bytes each).

/// Never a surrogate key (they are identity values, or -1 for unknown).
const ABSENT: i64 = i64::MIN;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMap {
    /// Keys of ids `first..first + keys.len()`, ABSENT where there is none.
    Dense { first: i64, keys: Vec<i64> },
    /// (id, key) sorted by id, one per id (empty: no key).
    Sorted(Vec<(i64, i64)>),
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap::Sorted(Vec::new())
    }
}

impl KeyMap {
    /// The map of these pairs, in any order; of two pairs with the same id
    /// the later one wins, as with `HashMap::insert`.
    pub fn from_pairs(mut pairs: Vec<(i64, i64)>) -> Self {
        if pairs.is_empty() {
            return KeyMap::default();
        }
        // Stable: equal ids keep their order, so the last is the later one.
        pairs.sort_by_key(|&(id, _)| id);
        pairs.dedup_by(|later, earlier| {
            if later.0 == earlier.0 {
                earlier.1 = later.1;
                true
            } else {
                false
            }
        });
        let (first, last) = (pairs[0].0, pairs[pairs.len() - 1].0);
        let span = i128::from(last) - i128::from(first) + 1;
        // Dense when the slots, at 8 bytes, take no more than the pairs.
        if span <= 2 * pairs.len() as i128 {
            let mut keys = vec![ABSENT; span as usize];
            for (id, key) in pairs {
                keys[(id - first) as usize] = key;
            }
            KeyMap::Dense { first, keys }
        } else {
            pairs.shrink_to_fit();
            KeyMap::Sorted(pairs)
        }
    }

    pub fn get(&self, id: i64) -> Option<i64> {
        match self {
            KeyMap::Dense { first, keys } => {
                let slot = usize::try_from(i128::from(id) - i128::from(*first)).ok()?;
                keys.get(slot).copied().filter(|&k| k != ABSENT)
            }
            KeyMap::Sorted(pairs) => pairs
                .binary_search_by_key(&id, |&(i, _)| i)
                .ok()
                .map(|at| pairs[at].1),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            KeyMap::Dense { keys, .. } => keys.iter().filter(|&&k| k != ABSENT).count(),
            KeyMap::Sorted(pairs) => pairs.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl FromIterator<(i64, i64)> for KeyMap {
    fn from_iter<I: IntoIterator<Item = (i64, i64)>>(iter: I) -> Self {
        KeyMap::from_pairs(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Every id of `probe` gives what a HashMap built from the same pairs
    /// gives.
    fn same_as_hashmap(pairs: &[(i64, i64)], probe: impl Iterator<Item = i64>) -> KeyMap {
        let map = KeyMap::from_pairs(pairs.to_vec());
        let hash: HashMap<i64, i64> = pairs.iter().copied().collect();
        for id in probe {
            assert_eq!(map.get(id), hash.get(&id).copied(), "id {id} of {map:?}");
        }
        assert_eq!(map.len(), hash.len());
        map
    }

    #[test]
    fn dense_ids_are_slots_with_gaps_absent() {
        let pairs: Vec<(i64, i64)> = (1..=1000)
            .filter(|id| id % 7 != 0)
            .map(|id| (id, 5000 - id))
            .rev()
            .collect();
        let map = same_as_hashmap(&pairs, -5..1010);
        assert!(matches!(map, KeyMap::Dense { first: 1, .. }), "{map:?}");
    }

    #[test]
    fn sparse_ids_are_sorted_pairs() {
        let pairs = vec![
            (9_000_000_000, 3),
            (-4, 1),
            (17, 2),
            (i64::MAX, 4),
            (i64::MIN, 5),
        ];
        let map = same_as_hashmap(
            &pairs,
            [
                i64::MIN,
                i64::MIN + 1,
                -4,
                0,
                17,
                18,
                9_000_000_000,
                i64::MAX,
            ]
            .into_iter(),
        );
        assert!(matches!(map, KeyMap::Sorted(_)), "{map:?}");
    }

    #[test]
    fn the_later_of_two_pairs_for_one_id_wins_and_empty_finds_nothing() {
        let map = same_as_hashmap(&[(5, 1), (6, 2), (5, 3), (6, 4), (5, 9)], 0..10);
        assert_eq!(map.get(5), Some(9));
        let empty = KeyMap::from_pairs(Vec::new());
        assert_eq!(empty.get(0), None);
        assert!(empty.is_empty());
    }
}
