//! `salesdwh verify [--repair]`: reconciles the warehouse's fact rows with
//! the source by key sets (SPEC §4: hard deletes are invisible to
//! `updated_at`, so a sync cannot see them).
//!
//! Under the run lock and in one MySQL snapshot, for order_items and
//! payments: every source id must be in exactly one of the fact table and
//! the open rejects. The ids are compared exactly, range by range of the
//! primary key (both sides read in key order, so memory holds one range).
//! A difference is *pending* when the next sync settles it anyway: the row
//! or its order changed since the watermark (minus the lookback), or it is
//! a reject whose row left the source (every sync retries the rejects).
//! What is left are real differences: rows deleted at the source whose
//! order did not change (**extra**), and rows neither loaded nor rejected
//! that no sync will read (**missing**, e.g. stamped before the watermark).
//!
//! `--repair` runs a sync that also re-derives the orders of those rows
//! (the sync deletes the rows of a re-derived order that left the source),
//! then compares again.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use super::sync::{read_if, SyncOptions, SyncReport};
use super::PipelineError;
use crate::config::Settings;
use crate::connect;
use crate::extract::{self, Order, OrderItem, Payment, Snapshot, SourceRow};
use crate::load::{qualified, LoadError};
use crate::schema::dwh::{ETL_REJECTS, FACT_PAYMENTS, FACT_SALES};
use crate::schema::model::{quote_ident, Dialect, Table};
use crate::schema::oltp;
use crate::state::{self, Watermark};

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub repair: bool,
    /// The sync `--repair` runs (its `orders` are filled in here).
    pub sync: SyncOptions,
}

/// One source row that differs, with the order it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Differing {
    pub id: i64,
    pub order_id: i64,
}

/// The comparison of one source table with its fact table and rejects.
#[derive(Debug, Default, Clone)]
pub struct TableCheck {
    pub source_table: &'static str,
    pub source_rows: u64,
    pub facts: u64,
    pub rejects: u64,
    /// In the facts but gone from the source, their order unchanged.
    pub extra: Vec<Differing>,
    /// In the source, neither loaded nor rejected, and no sync will read them.
    pub missing: Vec<Differing>,
    /// Both loaded and openly rejected (an accounting breach).
    pub doubled: Vec<Differing>,
    /// Differences the next sync settles (changed since the watermark).
    pub pending: u64,
}

impl TableCheck {
    pub fn differences(&self) -> usize {
        self.extra.len() + self.missing.len() + self.doubled.len()
    }
}

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub tables: Vec<TableCheck>,
    /// With `--repair` and differences: the sync that re-derived their
    /// orders, and the comparison after it.
    pub repair: Option<(SyncReport, Vec<TableCheck>)>,
    pub elapsed: Duration,
}

impl VerifyReport {
    /// Differences left at the end (after the repair, if one ran).
    pub fn differences(&self) -> usize {
        let last = self
            .repair
            .as_ref()
            .map_or(&self.tables, |(_, after)| after);
        last.iter().map(TableCheck::differences).sum()
    }
}

pub async fn run(settings: &Settings, opts: &VerifyOptions) -> Result<VerifyReport, PipelineError> {
    let started = Instant::now();
    let mut report = VerifyReport {
        tables: super::or_stopped(compare(settings)).await?,
        ..VerifyReport::default()
    };
    let orders: BTreeSet<i64> = report
        .tables
        .iter()
        .flat_map(|t| t.extra.iter().chain(&t.missing).chain(&t.doubled))
        .map(|d| d.order_id)
        .collect();
    if opts.repair && !orders.is_empty() {
        let mut sync = opts.sync.clone();
        sync.orders = orders.into_iter().collect();
        let synced = super::sync::run(settings, &sync).await?;
        let after = super::or_stopped(compare(settings)).await?;
        report.repair = Some((synced, after));
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One comparison, under the run lock (no sync or backfill changes the
/// warehouse meanwhile), of one MySQL snapshot.
async fn compare(settings: &Settings) -> Result<Vec<TableCheck>, PipelineError> {
    let pg = connect::pg_client(&settings.postgres, settings.connect_timeout).await?;
    state::lock(&pg).await?;
    if state::backfill_state(&pg).await?.is_some() {
        return Err(PipelineError::BackfillUnfinished);
    }
    let marks = state::watermarks(&pg).await?;
    // Ids read per list and round trip.
    let page = settings.batch_rows.clamp(1, 1_000_000) as i64;
    let mut snapshot = Snapshot::open(&settings.mysql, settings.connect_timeout, 1).await?;
    let conn = &mut snapshot.readers[0];
    let lookback = i64::try_from(settings.lookback_secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    // Whether a row stamped `updated_at` in `table` is one the next sync reads.
    let since = |table: &Table| -> Option<i64> {
        marks
            .get(table.name)
            .map(|w: &Watermark| w.updated_at.saturating_sub(lookback))
    };
    let changed = |table: &Table, updated_at: i64| since(table).is_none_or(|s| updated_at >= s);

    let mut out = Vec::new();
    for (source, fact, pk) in [
        (&oltp::ORDER_ITEMS, &FACT_SALES, "order_item_id"),
        (&oltp::PAYMENTS, &FACT_PAYMENTS, "payment_id"),
    ] {
        let mut check = TableCheck {
            source_table: source.name,
            ..TableCheck::default()
        };
        let ids = key_diff(conn, &pg, source, fact, pk, page, &mut check).await?;
        // Rows missing from the warehouse: their own and their orders' stamps.
        let rows = if source.name == oltp::PAYMENTS.name {
            stamps::<Payment>(conn, pk, &ids.missing).await?
        } else {
            stamps::<OrderItem>(conn, pk, &ids.missing).await?
        };
        let order_of: Vec<i64> = rows.iter().map(|r| r.1).collect();
        // Rows in the facts but not in the source: the orders they are on.
        let mut on_facts = ids.extra_facts.clone();
        on_facts.extend(&ids.doubled);
        let fact_orders = fact_orders(&pg, fact, pk, &on_facts).await?;
        let mut all_orders: Vec<i64> = order_of;
        all_orders.extend(fact_orders.values().copied());
        all_orders.sort_unstable();
        all_orders.dedup();
        let orders: HashMap<i64, i64> = read_if::<Order>(conn, "order_id", &all_orders)
            .await?
            .into_iter()
            .map(|o| (o.order_id, o.updated_at))
            .collect();
        let order_changed = |order: i64| {
            orders
                .get(&order)
                .is_some_and(|&at| changed(&oltp::ORDERS, at))
        };
        for (id, order_id, updated_at) in rows {
            if changed(source, updated_at) || order_changed(order_id) {
                check.pending += 1;
            } else {
                check.missing.push(Differing { id, order_id });
            }
        }
        for id in ids.extra_facts {
            let order_id = fact_orders.get(&id).copied().unwrap_or_default();
            if order_changed(order_id) {
                check.pending += 1;
            } else {
                check.extra.push(Differing { id, order_id });
            }
        }
        check.doubled = ids
            .doubled
            .iter()
            .map(|&id| Differing {
                id,
                order_id: fact_orders.get(&id).copied().unwrap_or_default(),
            })
            .collect();
        // A reject whose row left the source: every sync releases it.
        check.pending += ids.extra_rejects as u64;
        out.push(check);
    }
    drop(snapshot);
    Ok(out)
}

/// A fact source row: it belongs to an order.
trait OnOrder: SourceRow {
    fn order_id(&self) -> i64;
}

impl OnOrder for OrderItem {
    fn order_id(&self) -> i64 {
        self.order_id
    }
}

impl OnOrder for Payment {
    fn order_id(&self) -> i64 {
        self.order_id
    }
}

/// `(id, order_id, updated_at)` of the given source rows.
async fn stamps<T: OnOrder>(
    conn: &mut Conn,
    pk: &'static str,
    ids: &[i64],
) -> Result<Vec<(i64, i64, i64)>, PipelineError> {
    Ok(read_if::<T>(conn, pk, ids)
        .await?
        .iter()
        .map(|r| {
            let (updated_at, id) = r.cursor();
            (id, r.order_id(), updated_at)
        })
        .collect())
}

/// The ids that differ between a source table and the warehouse.
#[derive(Debug, Default)]
struct KeyDiff {
    missing: Vec<i64>,
    /// Both loaded and openly rejected.
    doubled: Vec<i64>,
    extra_facts: Vec<i64>,
    extra_rejects: usize,
}

/// Walks both sides in primary-key order, a page at a time, and compares
/// the id lists; counts go into `check`. Each page reads at most `page`
/// ids of every list and compares up to the lowest last id of the lists
/// that filled up, so gaps in the keys cost nothing and memory holds one
/// page whatever the key distribution.
async fn key_diff(
    conn: &mut Conn,
    pg: &tokio_postgres::Client,
    source: &Table,
    fact: &Table,
    pk: &str,
    page: i64,
    check: &mut TableCheck,
) -> Result<KeyDiff, PipelineError> {
    let my_pk = quote_ident(Dialect::MySql, pk);
    let pg_pk = quote_ident(Dialect::Postgres, pk);
    let what = |w: &str| format!("{w} of {}", source.name);
    let source_sql = format!(
        "SELECT {my_pk} FROM {} WHERE {my_pk} >= ? ORDER BY {my_pk} LIMIT ?",
        quote_ident(Dialect::MySql, source.name)
    );
    let facts_sql = format!(
        "SELECT {pg_pk} FROM {} WHERE {pg_pk} >= $1 ORDER BY 1 LIMIT $2",
        qualified(fact)
    );
    let rejects_sql = format!(
        "SELECT source_pk FROM {} WHERE source_table = $3 AND resolved_run IS NULL \
         AND source_pk >= $1 ORDER BY 1 LIMIT $2",
        qualified(&ETL_REJECTS)
    );
    let column =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i64> { rows.iter().map(|r| r.get(0)).collect() };
    let mut diff = KeyDiff::default();
    let mut from = i64::MIN;
    loop {
        let mut src = Vec::new();
        let mut stream = conn
            .exec_stream::<Row, _, _>(source_sql.as_str(), (from, page))
            .await
            .map_err(|e| query_failed(what("the ids"), e))?;
        while let Some(row) = stream.next().await {
            let row = row.map_err(|e| query_failed(what("the ids"), e))?;
            let v = row.as_ref(0).unwrap_or(&mysql_async::Value::NULL);
            src.push(extract::value::int(v, "id").map_err(|e| {
                PipelineError::Extract(extract::ExtractError::Value {
                    table: source.name,
                    pk: format!("{v:?}"),
                    source: e,
                })
            })?);
        }
        drop(stream);
        let mut facts = column(
            pg.query(&facts_sql, &[&from, &page])
                .await
                .map_err(LoadError::pg(what("the loaded ids")))?,
        );
        let mut rejects = column(
            pg.query(&rejects_sql, &[&from, &page, &source.name])
                .await
                .map_err(LoadError::pg(what("the rejected ids")))?,
        );
        // Compared up to where every list is complete.
        let end = [&src, &facts, &rejects]
            .into_iter()
            .filter(|ids| ids.len() as i64 == page)
            .filter_map(|ids| ids.last().copied())
            .min();
        if let Some(end) = end {
            for ids in [&mut src, &mut facts, &mut rejects] {
                ids.retain(|&id| id <= end);
            }
        }
        check.source_rows += src.len() as u64;
        check.facts += facts.len() as u64;
        check.rejects += rejects.len() as u64;
        let rejected: BTreeSet<i64> = rejects.iter().copied().collect();
        let loaded: BTreeSet<i64> = facts.iter().copied().collect();
        diff.doubled.extend(loaded.intersection(&rejected));
        let present: BTreeSet<i64> = src.iter().copied().collect();
        diff.missing.extend(
            src.iter()
                .filter(|id| !loaded.contains(id) && !rejected.contains(id)),
        );
        diff.extra_facts
            .extend(facts.iter().filter(|id| !present.contains(id)));
        diff.extra_rejects += rejects.iter().filter(|id| !present.contains(id)).count();
        match end.and_then(|e| e.checked_add(1)) {
            Some(next) => from = next,
            None => break,
        }
    }
    Ok(diff)
}

/// The order of each given fact row.
async fn fact_orders(
    pg: &tokio_postgres::Client,
    fact: &Table,
    pk: &str,
    ids: &[i64],
) -> Result<HashMap<i64, i64>, PipelineError> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT {0}, order_id FROM {1} WHERE {0} = ANY($1)",
        quote_ident(Dialect::Postgres, pk),
        qualified(fact)
    );
    Ok(pg
        .query(&sql, &[&ids])
        .await
        .map_err(LoadError::pg(format!(
            "reading the orders of {}",
            fact.name
        )))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

fn query_failed(what: String, source: mysql_async::Error) -> PipelineError {
    PipelineError::Extract(extract::ExtractError::Query { what, source })
}
