//! Fact writes. Backfill: one chunk in one transaction (dim_date coverage,
//! fact_sales and fact_payments COPY, the chunk's rejects, its completion
//! mark), committed together or not at all. Sync: re-derived orders are
//! staged, then merged into the facts by source id (only rows that differ
//! are written), their vanished rows deleted and released rejects closed,
//! all in the sync's one transaction.

use tokio_postgres::Transaction;

use super::{copy_in, dims, qualified, LoadError};
use crate::schema::dwh::{BACKFILL_CHUNKS, DIM_PRODUCT, ETL_REJECTS, FACT_PAYMENTS, FACT_SALES};
use crate::schema::model::{ident_list, quote_ident, Dialect, Table};
use crate::schema::oltp;
use crate::transform::facts::{FactOutput, PAYMENT_COLUMNS, SALES_COLUMNS};
use crate::transform::{Reject, RunStats};

/// Makes dim_date cover the days `from..=to` (days since 1970).
pub async fn ensure_days(tx: &Transaction<'_>, from: i32, to: i32) -> Result<(), LoadError> {
    let day = |d: i32| {
        chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid")
            + chrono::Duration::days(i64::from(d))
    };
    tx.execute(
        "SELECT \"dwh\".\"ensure_dim_date\"($1, $2)",
        &[&day(from), &day(to)],
    )
    .await
    .map_err(LoadError::pg("extending dim_date"))?;
    Ok(())
}

/// Upserts rejects: a row seen again keeps its first run; if its reason or
/// payload changed, or it had been released, it gets the new values and
/// this run as its last, and is open again. An unchanged open reject is
/// not rewritten (a sync with no source change changes nothing).
pub async fn upsert_rejects(
    tx: &Transaction<'_>,
    source_table: &str,
    rejects: &[Reject],
    run_id: i64,
) -> Result<(), LoadError> {
    if rejects.is_empty() {
        return Ok(());
    }
    let pks: Vec<i64> = rejects.iter().map(|r| r.source_pk).collect();
    let reasons: Vec<&str> = rejects.iter().map(|r| r.reason.code()).collect();
    let payloads: Vec<&serde_json::Value> = rejects.iter().map(|r| &r.payload).collect();
    let sql = format!(
        "INSERT INTO {} AS r (source_table, source_pk, reason, payload, first_seen_run, last_seen_run, resolved_run) \
         SELECT $1, pk, reason, payload, $5, $5, NULL \
         FROM unnest($2::bigint[], $3::text[], $4::jsonb[]) AS r(pk, reason, payload) \
         ON CONFLICT (source_table, source_pk) DO UPDATE SET reason = EXCLUDED.reason, \
         payload = EXCLUDED.payload, last_seen_run = EXCLUDED.last_seen_run, resolved_run = NULL \
         WHERE (r.reason, r.payload, r.resolved_run) IS DISTINCT FROM (EXCLUDED.reason, EXCLUDED.payload, NULL)",
        qualified(&ETL_REJECTS)
    );
    tx.execute(&sql, &[&source_table, &pks, &reasons, &payloads, &run_id])
        .await
        .map_err(LoadError::pg(format!("recording rejected {source_table}")))?;
    Ok(())
}

/// Where a chunk's fact rows go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Straight into the (empty or index-less) fact tables: backfill.
    Facts,
    /// Into the transaction's staging tables (see [`create_staging`]): sync.
    Staging,
}

/// COPYs a transformed chunk's facts and records its rejects.
/// `covered` is the day range dim_date is known to hold already.
pub async fn write_chunk(
    tx: &Transaction<'_>,
    out: FactOutput,
    run_id: i64,
    covered: Option<(i32, i32)>,
    target: Target,
) -> Result<(), LoadError> {
    // The chunk's rows and its completion mark commit together, so a commit
    // lost in a server crash is redone by the rerun: no need to wait for
    // the WAL flush of every chunk.
    tx.batch_execute("SET LOCAL synchronous_commit TO off")
        .await
        .map_err(LoadError::pg("setting up the chunk transaction"))?;
    if let Some((from, to)) = out.days {
        if !covered.is_some_and(|(a, b)| a <= from && to <= b) {
            ensure_days(tx, from, to).await?;
        }
    }
    let name = |table: &Table| match target {
        Target::Facts => qualified(table),
        Target::Staging => dims::staging_name(table),
    };
    if out.sales_rows > 0 {
        let buffer = out.sales.clone();
        copy_in(tx, &name(&FACT_SALES), &SALES_COLUMNS, out.sales).await?;
        super::copy::recycle(buffer);
    }
    if out.payment_rows > 0 {
        copy_in(tx, &name(&FACT_PAYMENTS), &PAYMENT_COLUMNS, out.payments).await?;
    }
    upsert_rejects(tx, oltp::ORDER_ITEMS.name, &out.item_rejects, run_id).await?;
    upsert_rejects(tx, oltp::PAYMENTS.name, &out.payment_rejects, run_id).await?;
    Ok(())
}

/// Marks a backfill chunk done (same transaction as its rows).
pub async fn mark_chunk(
    tx: &Transaction<'_>,
    lo: i64,
    hi: i64,
    run_id: i64,
    stats: &RunStats,
) -> Result<(), LoadError> {
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ($1, $2, $3, $4)",
        qualified(&BACKFILL_CHUNKS),
        ident_list(
            Dialect::Postgres,
            &["chunk_lo", "chunk_hi", "run_id", "stats"]
        )
    );
    tx.execute(&sql, &[&lo, &hi, &run_id, &stats.to_json()])
        .await
        .map_err(LoadError::pg("marking the chunk loaded"))?;
    Ok(())
}

/// The temporary table of the orders a sync re-derives.
const SYNC_ORDERS: &str = "stg_sync_orders";

/// Staging for a sync's re-derived facts (dropped at commit).
pub async fn create_staging(tx: &Transaction<'_>) -> Result<(), LoadError> {
    dims::create_staging(tx, &FACT_SALES).await?;
    dims::create_staging(tx, &FACT_PAYMENTS).await?;
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} (order_id bigint PRIMARY KEY) ON COMMIT DROP",
        quote_ident(Dialect::Postgres, SYNC_ORDERS)
    ))
    .await
    .map_err(LoadError::pg("creating the sync staging tables"))
}

/// Records the orders whose fact rows the staging tables will hold in full.
pub async fn stage_orders(tx: &Transaction<'_>, order_ids: &[i64]) -> Result<(), LoadError> {
    tx.execute(
        &format!(
            "INSERT INTO {} SELECT unnest($1::bigint[]) ON CONFLICT DO NOTHING",
            quote_ident(Dialect::Postgres, SYNC_ORDERS)
        ),
        &[&order_ids],
    )
    .await
    .map_err(LoadError::pg("staging the re-derived orders"))?;
    Ok(())
}

/// The fact tables a sync stages, with their source id column.
const STAGED_FACTS: [(&Table, &str); 2] = [
    (&FACT_SALES, "order_item_id"),
    (&FACT_PAYMENTS, "payment_id"),
];

/// Temp table: the current rows of a fact table for the staged orders.
fn prior_name(table: &Table) -> String {
    quote_ident(Dialect::Postgres, &format!("stg_prior_{}", table.name))
}

/// Temp table: the staged rows of a fact table that differ from its rows.
fn changed_name(table: &Table) -> String {
    quote_ident(Dialect::Postgres, &format!("stg_changed_{}", table.name))
}

/// Reads the current fact rows of the staged orders ([`stage_orders`]) once,
/// by the order_id index, into temp tables: [`compare_staged`] and
/// [`apply_staged`] compare those small tables instead of probing the
/// fact tables again and again. Call it once (sync calls it while MySQL
/// is read).
pub async fn read_prior(tx: &Transaction<'_>) -> Result<(), LoadError> {
    let orders = quote_ident(Dialect::Postgres, SYNC_ORDERS);
    for (table, _) in STAGED_FACTS {
        let sql = format!(
            "CREATE TEMP TABLE {prior} ON COMMIT DROP AS \
             SELECT f.* FROM {fact} f JOIN {orders} o ON f.order_id = o.order_id",
            prior = prior_name(table),
            fact = qualified(table),
        );
        tx.batch_execute(&sql).await.map_err(LoadError::pg(format!(
            "reading the current rows of {}",
            table.name
        )))?;
    }
    Ok(())
}

/// Compares the staged facts with the fact rows [`read_prior`] read: the
/// staged rows that differ go to a temp table, so only they are written.
/// Returns the orders whose fact_sales rows [`apply_staged`] will change:
/// a row new, different or gone, and the old order of an item that moved
/// from an order not staged. Call it once, after staging and before
/// capturing for the marts and applying, after [`read_prior`].
pub async fn compare_staged(tx: &Transaction<'_>) -> Result<Vec<i64>, LoadError> {
    for (table, pk) in STAGED_FACTS {
        let pk = quote_ident(Dialect::Postgres, pk);
        let sql = format!(
            "CREATE TEMP TABLE {changed} ON COMMIT DROP AS SELECT s.* FROM {stg} s \
             WHERE NOT EXISTS (SELECT 1 FROM {prior} p WHERE p.{pk} = s.{pk} AND NOT {differs})",
            prior = prior_name(table),
            changed = changed_name(table),
            stg = dims::staging_name(table),
            differs = dims::row_differs(table, "p", "s"),
        );
        tx.batch_execute(&sql).await.map_err(LoadError::pg(format!(
            "comparing the staged rows of {}",
            table.name
        )))?;
    }
    let sql = format!(
        "SELECT order_id FROM {changed} \
         UNION SELECT p.order_id FROM {prior} p \
               WHERE EXISTS (SELECT 1 FROM {changed} c WHERE c.order_item_id = p.order_item_id) \
                  OR NOT EXISTS (SELECT 1 FROM {stg} s WHERE s.order_item_id = p.order_item_id) \
         UNION SELECT f.order_id FROM {changed} c JOIN {fact} f ON f.order_item_id = c.order_item_id \
               WHERE NOT EXISTS (SELECT 1 FROM {prior} p WHERE p.order_item_id = c.order_item_id)",
        changed = changed_name(&FACT_SALES),
        prior = prior_name(&FACT_SALES),
        stg = dims::staging_name(&FACT_SALES),
        fact = qualified(&FACT_SALES),
    );
    Ok(tx
        .query(&sql, &[])
        .await
        .map_err(LoadError::pg("finding the orders whose facts change"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// What applying a sync's staged facts changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// fact rows inserted or changed
    pub upserted: u64,
    /// fact rows removed: items/payments gone from their order, or rejected now
    pub deleted: u64,
    /// rejects closed: the row loads now, or is gone from the source
    pub released: u64,
}

impl Applied {
    pub fn total(&self) -> u64 {
        self.upserted + self.deleted + self.released
    }
}

/// Merges the staged facts (the rows [`compare_staged`] found different);
/// deletes the fact rows of re-derived orders the staging does not hold
/// (deleted or rejected at the source) and any fact row whose source row
/// is an open reject (a row is in exactly one of the two); closes the
/// `released` rejects.
pub async fn apply_staged(
    tx: &Transaction<'_>,
    run_id: i64,
    released: &[(&str, Vec<i64>)],
) -> Result<Applied, LoadError> {
    let mut applied = Applied::default();
    // Released first: a row that loads now must not be taken for an open
    // reject by the delete below.
    let sql = format!(
        "UPDATE {} SET resolved_run = $3 WHERE source_table = $1 AND resolved_run IS NULL \
         AND source_pk = ANY($2::bigint[])",
        qualified(&ETL_REJECTS)
    );
    for (source, pks) in released {
        if pks.is_empty() {
            continue;
        }
        applied.released += tx
            .execute(&sql, &[source, pks, &run_id])
            .await
            .map_err(LoadError::pg("releasing rejects"))?;
    }
    for (table, pk) in STAGED_FACTS {
        applied.upserted += tx
            .execute(&dims::upsert_sql(table, &changed_name(table)), &[])
            .await
            .map_err(LoadError::pg(format!("merging {}", table.name)))?;
        let source = if pk == "payment_id" {
            crate::schema::oltp::PAYMENTS.name
        } else {
            crate::schema::oltp::ORDER_ITEMS.name
        };
        let pk = quote_ident(Dialect::Postgres, pk);
        let sql = format!(
            "DELETE FROM {f} f USING {prior} p WHERE f.{pk} = p.{pk} \
             AND NOT EXISTS (SELECT 1 FROM {stg} s WHERE s.{pk} = p.{pk})",
            f = qualified(table),
            prior = prior_name(table),
            stg = dims::staging_name(table),
        );
        applied.deleted += tx.execute(&sql, &[]).await.map_err(LoadError::pg(format!(
            "removing vanished rows of {}",
            table.name
        )))?;
        let sql = format!(
            "DELETE FROM {f} f USING {r} r WHERE r.source_table = $1 AND r.resolved_run IS NULL \
             AND f.{pk} = r.source_pk",
            f = qualified(table),
            r = qualified(&ETL_REJECTS),
        );
        applied.deleted += tx
            .execute(&sql, &[&source])
            .await
            .map_err(LoadError::pg(format!(
                "removing rejected rows of {}",
                table.name
            )))?;
    }
    Ok(applied)
}

/// The cost in cents above which NUMERIC(14,2) overflows (as the transform).
const AMOUNT_LIMIT: &str = "1000000000000";

/// SCD1 restatement: the fact rows of changed products take the product's
/// current cost (and margin) and category. Rows whose new cost or margin
/// would not fit NUMERIC(14,2) are left alone and their orders returned,
/// to be re-derived (and rejected) like any changed order.
pub async fn restate_products(
    tx: &Transaction<'_>,
    product_ids: &[i64],
) -> Result<(u64, Vec<i64>), LoadError> {
    if product_ids.is_empty() {
        return Ok((0, Vec::new()));
    }
    let fits = format!(
        "abs(f.quantity * p.unit_cost) < {AMOUNT_LIMIT} AND abs(f.revenue - f.quantity * p.unit_cost) < {AMOUNT_LIMIT}"
    );
    let sql = format!(
        "UPDATE {f} f SET cost = f.quantity * p.unit_cost, margin = f.revenue - f.quantity * p.unit_cost, \
         category_key = p.category_key, loaded_at = now() FROM {p} p \
         WHERE p.product_id = ANY($1::bigint[]) AND f.product_key = p.product_key AND {fits} \
         AND (f.cost, f.category_key) IS DISTINCT FROM (f.quantity * p.unit_cost, p.category_key)",
        f = qualified(&FACT_SALES),
        p = qualified(&DIM_PRODUCT),
    );
    let restated = tx
        .execute(&sql, &[&product_ids])
        .await
        .map_err(LoadError::pg("restating the cost of changed products"))?;
    let sql = format!(
        "SELECT DISTINCT f.order_id FROM {f} f JOIN {p} p ON f.product_key = p.product_key \
         WHERE p.product_id = ANY($1::bigint[]) AND NOT ({fits})",
        f = qualified(&FACT_SALES),
        p = qualified(&DIM_PRODUCT),
    );
    let overflow = tx
        .query(&sql, &[&product_ids])
        .await
        .map_err(LoadError::pg("checking restated costs"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((restated, overflow))
}

/// The day range (days since 1970) dim_date holds.
pub async fn dim_date_range<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<Option<(i32, i32)>, LoadError> {
    let row = client
        .query_one(
            &format!(
                "SELECT min(full_date), max(full_date) FROM {}",
                qualified(&crate::schema::dwh::DIM_DATE)
            ),
            &[],
        )
        .await
        .map_err(LoadError::pg("reading the dim_date range"))?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("valid");
    let a: Option<chrono::NaiveDate> = row.get(0);
    let b: Option<chrono::NaiveDate> = row.get(1);
    Ok(a.zip(b)
        .map(|(a, b)| ((a - epoch).num_days() as i32, (b - epoch).num_days() as i32)))
}

/// The source ids of a table's open rejects (retried by every sync).
pub async fn open_rejects<C: tokio_postgres::GenericClient>(
    client: &C,
    source_table: &str,
) -> Result<Vec<i64>, LoadError> {
    let sql = format!(
        "SELECT source_pk FROM {} WHERE source_table = $1 AND resolved_run IS NULL ORDER BY source_pk",
        qualified(&ETL_REJECTS)
    );
    Ok(client
        .query(&sql, &[&source_table])
        .await
        .map_err(LoadError::pg("reading the open rejects"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// The orders with a fact row dated in `first..=last` (date keys): their
/// lines by order date, their payments by payment date.
pub async fn orders_dated<C: tokio_postgres::GenericClient>(
    client: &C,
    first: i32,
    last: i32,
) -> Result<Vec<i64>, LoadError> {
    let sql = format!(
        "SELECT order_id FROM {} WHERE date_key BETWEEN $1 AND $2 \
         UNION SELECT order_id FROM {} WHERE date_key BETWEEN $1 AND $2",
        qualified(&FACT_SALES),
        qualified(&FACT_PAYMENTS)
    );
    Ok(client
        .query(&sql, &[&first, &last])
        .await
        .map_err(LoadError::pg("reading the orders dated in the window"))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
