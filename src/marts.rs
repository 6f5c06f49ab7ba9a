//! The analyst marts of schema `mart` (SPEC §7) and the aggregates behind
//! them.
//!
//! `sql/postgres/03_views_marts.sql` defines both: each mart that
//! aggregates fact_sales is a plain view over a small table in schema
//! `mart_base`, and plpgsql functions there keep those tables equal to
//! their definition over fact_sales. This module only calls them, always
//! inside the caller's transaction, so readers see a run's facts and marts
//! change together:
//!
//! - `init` [`ensure_built`]s them (new, stale or of an older definition);
//! - `backfill` [`rebuild`]s them in its final transaction;
//! - `sync` [`capture`]s the orders (and [`capture_products`] the products)
//!   whose fact rows it is about to change, then [`apply_changes`] adds the
//!   difference: the cost follows the change, not the warehouse;
//! - a run that changes facts without maintaining the marts
//!   (`--no-refresh-marts`) [`mark_stale`]s them: the next maintaining run
//!   rebuilds them.
//!
//! Invariant (checked by the tests): after every successful run that
//! maintained them, the `mart_base` tables equal what `rebuild` computes
//! from the committed fact_sales.

use tokio_postgres::GenericClient;

/// The marts DDL: idempotent, applied by `init` after `01_dwh_schema.sql`.
pub const MARTS_SQL: &str = include_str!("../sql/postgres/03_views_marts.sql");

/// Every mart of SPEC §7, as views in schema `mart`.
pub const MARTS: [&str; 9] = [
    "sales_daily",
    "manager_performance",
    "product_ranking",
    "average_check",
    "customer_report",
    "customer_metrics",
    "customer_retention",
    "etl_recent_runs",
    "etl_performance",
];

#[derive(Debug, thiserror::Error)]
#[error("cannot {what} the marts")]
pub struct MartsError {
    what: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

/// What a run did to the marts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Upkeep {
    /// No fact changed: nothing to do.
    #[default]
    Untouched,
    /// Recomputed from fact_sales.
    Rebuilt,
    /// The changed orders' difference applied.
    Updated,
    /// Facts changed, marts not maintained (`--no-refresh-marts`).
    Stale,
}

impl Upkeep {
    /// One phrase for a run summary.
    pub fn describe(self) -> &'static str {
        match self {
            Upkeep::Untouched => "no data row changed, marts left as they are",
            Upkeep::Rebuilt => "marts rebuilt",
            Upkeep::Updated => "marts updated with the changed orders",
            Upkeep::Stale => {
                "marts NOT refreshed (--no-refresh-marts): the next run that refreshes them rebuilds them"
            }
        }
    }
}

async fn call<C: GenericClient + Sync>(
    client: &C,
    what: &'static str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<tokio_postgres::Row, MartsError> {
    let started = std::time::Instant::now();
    let row = client
        .query_one(sql, params)
        .await
        .map_err(|source| MartsError { what, source })?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "{what} the marts"
    );
    Ok(row)
}

/// Builds the aggregates if they are new, stale or of an older definition
/// (`init`). Returns whether it built them.
pub async fn ensure_built<C: GenericClient + Sync>(client: &C) -> Result<bool, MartsError> {
    Ok(
        call(client, "build", "SELECT mart_base.ensure_built()", &[])
            .await?
            .get(0),
    )
}

/// Recomputes every aggregate from fact_sales.
pub async fn rebuild<C: GenericClient + Sync>(client: &C) -> Result<Upkeep, MartsError> {
    call(client, "rebuild", "SELECT mart_base.rebuild()", &[]).await?;
    Ok(Upkeep::Rebuilt)
}

/// Notes that facts changed without the marts following.
pub async fn mark_stale<C: GenericClient + Sync>(client: &C) -> Result<Upkeep, MartsError> {
    call(client, "mark stale", "SELECT mart_base.mark_stale()", &[]).await?;
    Ok(Upkeep::Stale)
}

/// Keeps the current fact rows of `order_ids` as their old contribution;
/// call it, in the run's transaction, before any of them changes.
pub async fn capture<C: GenericClient + Sync>(
    client: &C,
    order_ids: &[i64],
) -> Result<(), MartsError> {
    if order_ids.is_empty() {
        return Ok(());
    }
    call(
        client,
        "capture orders for",
        "SELECT mart_base.capture($1::bigint[])",
        &[&order_ids],
    )
    .await?;
    Ok(())
}

/// [`capture`] of every order with a fact row of these products (natural
/// keys): call it before restating their cost or category.
pub async fn capture_products<C: GenericClient + Sync>(
    client: &C,
    product_ids: &[i64],
) -> Result<(), MartsError> {
    if product_ids.is_empty() {
        return Ok(());
    }
    call(
        client,
        "capture products for",
        "SELECT mart_base.capture_products($1::bigint[])",
        &[&product_ids],
    )
    .await?;
    Ok(())
}

/// Applies the captured orders' changes to the aggregates (a full rebuild
/// when they were stale). `names_changed`: a category was renamed, so every
/// customer's top and favorite category is recomputed (their ties go by
/// name).
pub async fn apply_changes<C: GenericClient + Sync>(
    client: &C,
    names_changed: bool,
) -> Result<Upkeep, MartsError> {
    let rebuilt: bool = call(
        client,
        "update",
        "SELECT mart_base.apply_changes($1)",
        &[&names_changed],
    )
    .await?
    .get(0);
    Ok(if rebuilt {
        Upkeep::Rebuilt
    } else {
        Upkeep::Updated
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sql_defines_every_mart_of_the_spec_as_a_view() {
        for mart in MARTS {
            assert!(
                MARTS_SQL.contains(&format!("CREATE OR REPLACE VIEW mart.{mart} AS")),
                "{mart}"
            );
            assert!(
                MARTS_SQL.contains(&format!("COMMENT ON VIEW mart.{mart} IS")),
                "{mart}"
            );
        }
        // The revision the drop check compares with is the one a new
        // mart_base records.
        assert!(MARTS_SQL.contains("IF v_revision IS DISTINCT FROM 2 THEN"));
        assert!(
            MARTS_SQL.contains("INSERT INTO mart_base.state (revision, stale) VALUES (2, true)")
        );
    }
}
