//! Pure transformation, no I/O: source rows in, warehouse rows out, already
//! encoded for binary COPY, plus the rejected rows with their reasons.
//!
//! * `dims`: SCD1 dimension rows (text as it is, `full_name = first || ' ' || last`).
//! * `facts`: an order_id range of orders, items and payments → fact_sales
//!   and fact_payments rows, joined and measured in polars on integer cents,
//!   so every amount is exact (SPEC §2: discount rounded half away from
//!   zero) and the data-quality rules of SPEC §5 decide each row.
//!
//! The natural → surrogate key maps ([`Keys`]) are read from the warehouse
//! after the dimension upserts and shared read-only by every chunk.

pub mod dims;
pub mod facts;
pub mod key_map;
pub mod marts;

use std::collections::{BTreeMap, HashMap};

use serde_json::json;

use crate::quality::{RejectReason, Unresolved};

#[derive(Debug, thiserror::Error)]
pub enum TransformError {
    #[error("transforming the chunk of orders {lo}..={hi} failed")]
    Polars {
        lo: i64,
        hi: i64,
        #[source]
        source: polars::error::PolarsError,
    },
}

/// A product as facts need it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProductKey {
    pub key: i64,
    pub category_key: i32,
    /// cents
    pub unit_cost: i64,
}

/// Natural → surrogate keys of the dimensions.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    pub region: HashMap<i64, i32>,
    /// category_id → (category_key, name)
    pub category: HashMap<i64, (i32, String)>,
    pub product: HashMap<i64, ProductKey>,
    /// customer_id → customer_key: the one dimension that grows with the
    /// source, held compactly.
    pub customer: key_map::KeyMap,
    pub employee: HashMap<i64, i32>,
}

/// A quarantined source row.
#[derive(Debug, Clone, PartialEq)]
pub struct Reject {
    pub reason: RejectReason,
    pub source_pk: i64,
    /// The source row as JSON.
    pub payload: serde_json::Value,
}

/// Counters of one table in one run (or chunk): what was read, loaded,
/// rejected by reason and loaded with unresolved references.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TableStats {
    /// Rows a sync's keyset found changed since the watermark (lookback
    /// included); 0 for a backfill.
    pub changed: u64,
    pub read: u64,
    pub loaded: u64,
    pub rejected: BTreeMap<&'static str, u64>,
    pub unresolved: BTreeMap<&'static str, u64>,
}

impl TableStats {
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    pub fn reject(&mut self, reason: RejectReason) {
        *self.rejected.entry(reason.code()).or_default() += 1;
    }

    pub fn unresolved(&mut self, what: Unresolved) {
        *self.unresolved.entry(what.code()).or_default() += 1;
    }

    pub fn add(&mut self, other: &TableStats) {
        self.changed += other.changed;
        self.read += other.read;
        self.loaded += other.loaded;
        for (k, v) in &other.rejected {
            *self.rejected.entry(k).or_default() += v;
        }
        for (k, v) in &other.unresolved {
            *self.unresolved.entry(k).or_default() += v;
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "changed": self.changed,
            "read": self.read,
            "loaded": self.loaded,
            "rejected": self.rejected,
            "unresolved": self.unresolved,
        })
    }

    /// Reads what [`to_json`](Self::to_json) wrote; unknown codes are dropped.
    pub fn from_json(v: &serde_json::Value) -> TableStats {
        let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
        let mut stats = TableStats {
            changed: n("changed"),
            read: n("read"),
            loaded: n("loaded"),
            ..TableStats::default()
        };
        if let Some(map) = v.get("rejected").and_then(|m| m.as_object()) {
            for reason in RejectReason::ALL {
                if let Some(c) = map.get(reason.code()).and_then(|x| x.as_u64()) {
                    stats.rejected.insert(reason.code(), c);
                }
            }
        }
        if let Some(map) = v.get("unresolved").and_then(|m| m.as_object()) {
            for what in [
                Unresolved::Customer,
                Unresolved::Employee,
                Unresolved::Region,
            ] {
                if let Some(c) = map.get(what.code()).and_then(|x| x.as_u64()) {
                    stats.unresolved.insert(what.code(), c);
                }
            }
        }
        stats
    }
}

/// Stats per source table, in a stable order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunStats {
    pub tables: BTreeMap<&'static str, TableStats>,
}

impl RunStats {
    pub fn table(&mut self, name: &'static str) -> &mut TableStats {
        self.tables.entry(name).or_default()
    }

    pub fn add(&mut self, other: &RunStats) {
        for (name, stats) in &other.tables {
            self.table(name).add(stats);
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.tables
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_json()))
                .collect(),
        )
    }

    pub fn from_json(v: &serde_json::Value) -> RunStats {
        let mut out = RunStats::default();
        if let Some(map) = v.as_object() {
            for table in crate::schema::OLTP.tables {
                if let Some(t) = map.get(table.name) {
                    out.tables.insert(table.name, TableStats::from_json(t));
                }
            }
        }
        out
    }

    pub fn totals(&self) -> (u64, u64, u64) {
        self.tables.values().fold((0, 0, 0), |(r, l, j), t| {
            (r + t.read, l + t.loaded, j + t.rejected_total())
        })
    }
}

/// Days since 1970-01-01 → YYYYMMDD.
pub fn date_key(unix_days: i32) -> i32 {
    let (y, m, d) = crate::seed::tsv::civil_from_days(i64::from(unix_days));
    (y as i32) * 10_000 + (m as i32) * 100 + d as i32
}

/// Microseconds since the epoch → days since the epoch (UTC).
pub fn unix_days(micros: i64) -> i32 {
    micros.div_euclid(86_400_000_000) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn date_keys() {
        assert_eq!(date_key(0), 19700101);
        assert_eq!(date_key(unix_days(1_772_323_200_000_000)), 20260301);
        assert_eq!(unix_days(-1), -1);
    }

    #[test]
    fn stats_round_trip_json() {
        let mut s = RunStats::default();
        let t = s.table("order_items");
        t.read = 10;
        t.loaded = 7;
        t.reject(RejectReason::ItemBadQuantity);
        t.reject(RejectReason::ItemBadQuantity);
        t.unresolved(Unresolved::Region);
        s.table("payments").read = 3;
        s.table("orders").changed = 4;
        assert_eq!(RunStats::from_json(&s.to_json()), s);
        assert_eq!(s.totals(), (13, 7, 2));
    }
}
