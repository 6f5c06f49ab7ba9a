//! One fact chunk in one transaction: dim_date coverage, fact_sales and
//! fact_payments COPY, the chunk's rejects, and the chunk's completion mark
//! (backfill) — committed together or not at all.

use tokio_postgres::Transaction;

use super::{copy_in, qualified, LoadError};
use crate::schema::dwh::{BACKFILL_CHUNKS, ETL_REJECTS, FACT_PAYMENTS, FACT_SALES};
use crate::schema::model::{ident_list, Dialect};
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

/// Upserts rejects: a row seen again keeps its first run and gets the new
/// reason, payload and last run, and is open again.
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
        "INSERT INTO {} (source_table, source_pk, reason, payload, first_seen_run, last_seen_run, resolved_run) \
         SELECT $1, pk, reason, payload, $5, $5, NULL \
         FROM unnest($2::bigint[], $3::text[], $4::jsonb[]) AS r(pk, reason, payload) \
         ON CONFLICT (source_table, source_pk) DO UPDATE SET reason = EXCLUDED.reason, \
         payload = EXCLUDED.payload, last_seen_run = EXCLUDED.last_seen_run, resolved_run = NULL",
        qualified(&ETL_REJECTS)
    );
    tx.execute(&sql, &[&source_table, &pks, &reasons, &payloads, &run_id])
        .await
        .map_err(LoadError::pg(format!("recording rejected {source_table}")))?;
    Ok(())
}

/// COPYs a transformed chunk's facts and records its rejects.
/// `covered` is the day range dim_date is known to hold already.
pub async fn write_chunk(
    tx: &Transaction<'_>,
    out: FactOutput,
    run_id: i64,
    covered: Option<(i32, i32)>,
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
    if out.sales_rows > 0 {
        copy_in(tx, &qualified(&FACT_SALES), &SALES_COLUMNS, out.sales).await?;
    }
    if out.payment_rows > 0 {
        copy_in(
            tx,
            &qualified(&FACT_PAYMENTS),
            &PAYMENT_COLUMNS,
            out.payments,
        )
        .await?;
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
