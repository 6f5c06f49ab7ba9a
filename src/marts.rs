//! The analyst marts of schema `mart` (SPEC §7): their SQL and their refresh.
//!
//! `sql/postgres/03_views_marts.sql` defines them; `init` applies it after
//! the warehouse DDL and then [`populate`]s the materialized views it
//! created. Pipeline runs call [`refresh`] at the end of every successful
//! run.
//!
//! Invariant: after a successful run every materialized view in `mart`
//! equals its defining query over the committed warehouse. Refreshes go in
//! dependency order (a mart built on another mart sees the fresh one) and
//! use `REFRESH ... CONCURRENTLY` once a view is populated and has a plain
//! unique index, so analysts keep reading the previous contents, never an
//! empty or locked mart, while it runs. The plain views (`etl_*`) are always
//! current and need nothing.

use tokio_postgres::GenericClient;

use crate::schema::{quote_ident, Dialect};

/// The marts DDL: idempotent, applied by `init` after `01_dwh_schema.sql`.
pub const MARTS_SQL: &str = include_str!("../sql/postgres/03_views_marts.sql");

#[derive(Debug, thiserror::Error)]
pub enum MartsError {
    #[error("cannot list the materialized views of schema mart")]
    List(#[source] tokio_postgres::Error),
    #[error("cannot refresh mart.{view}")]
    Refresh {
        view: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// One materialized view of schema `mart`, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatView {
    pub name: String,
    /// Has data (`pg_matviews.ispopulated`); a view created `WITH NO DATA`
    /// cannot be read, nor refreshed concurrently, until it is.
    pub populated: bool,
    /// Has a unique index on plain columns without a predicate, which
    /// `REFRESH ... CONCURRENTLY` requires.
    pub concurrent_ok: bool,
}

/// The materialized views of `mart`, dependencies first. A view's
/// dependencies are the materialized views it reads, directly or through
/// plain views; a view reaches strictly more of them than any view it
/// depends on, so ordering by that count (then name) is a topological order.
const LIST_SQL: &str = "
WITH RECURSIVE mv AS (
    SELECT c.oid, c.relname::text AS name, m.ispopulated
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_matviews m ON m.schemaname = n.nspname AND m.matviewname = c.relname
    WHERE n.nspname = 'mart' AND c.relkind = 'm'
),
edge AS (
    SELECT DISTINCT r.ev_class AS rel, d.refobjid AS ref
    FROM pg_rewrite r
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                    AND d.refclassid = 'pg_class'::regclass
    WHERE d.refobjid <> r.ev_class
),
reach (root, rel) AS (
    SELECT mv.oid, e.ref FROM mv JOIN edge e ON e.rel = mv.oid
    UNION
    SELECT reach.root, e.ref FROM reach JOIN edge e ON e.rel = reach.rel
)
SELECT mv.name,
       mv.ispopulated,
       EXISTS (
           SELECT 1 FROM pg_index i
           WHERE i.indrelid = mv.oid AND i.indisunique AND i.indisvalid
             AND i.indpred IS NULL AND i.indexprs IS NULL
       ) AS concurrent_ok,
       (SELECT count(DISTINCT reach.rel) FROM reach JOIN mv dep ON dep.oid = reach.rel
        WHERE reach.root = mv.oid) AS depends_on
FROM mv
ORDER BY depends_on, mv.name";

/// Every materialized view of `mart`, in refresh (dependency) order.
pub async fn matviews<C: GenericClient + Sync>(client: &C) -> Result<Vec<MatView>, MartsError> {
    let rows = client
        .query(LIST_SQL, &[])
        .await
        .map_err(MartsError::List)?;
    Ok(rows
        .iter()
        .map(|row| MatView {
            name: row.get(0),
            populated: row.get(1),
            concurrent_ok: row.get(2),
        })
        .collect())
}

/// Refreshes every materialized view of `mart` in dependency order:
/// `CONCURRENTLY` when it is populated and has a unique index, a plain
/// `REFRESH` otherwise. Works on a client or inside a transaction (then the
/// new contents become visible when it commits). Returns the views
/// refreshed.
pub async fn refresh<C: GenericClient + Sync>(client: &C) -> Result<Vec<String>, MartsError> {
    refresh_where(client, |_| true, true).await
}

/// Recomputes every materialized view with a plain `REFRESH` (no diff
/// against the old contents, so several times faster after a bulk load;
/// readers wait for the commit instead of seeing the old contents).
/// `backfill` calls this inside its final transaction.
pub async fn rebuild<C: GenericClient + Sync>(client: &C) -> Result<Vec<String>, MartsError> {
    refresh_where(client, |_| true, false).await
}

/// Refreshes only the materialized views that have no data yet (just
/// created, or rebuilt because their definition changed), in dependency
/// order. `init` calls this: a fresh warehouse gets readable (empty) marts,
/// and a second init does not recompute marts that the last run refreshed.
pub async fn populate<C: GenericClient + Sync>(client: &C) -> Result<Vec<String>, MartsError> {
    refresh_where(client, |view| !view.populated, true).await
}

async fn refresh_where<C: GenericClient + Sync>(
    client: &C,
    wanted: impl Fn(&MatView) -> bool,
    concurrently: bool,
) -> Result<Vec<String>, MartsError> {
    let mut done = Vec::new();
    for view in matviews(client).await? {
        if !wanted(&view) {
            continue;
        }
        let started = std::time::Instant::now();
        client
            .batch_execute(&refresh_statement(&view, concurrently))
            .await
            .map_err(|source| MartsError::Refresh {
                view: view.name.clone(),
                source,
            })?;
        tracing::debug!(
            view = %view.name,
            concurrently = concurrently && view.populated && view.concurrent_ok,
            ms = started.elapsed().as_millis() as u64,
            "refreshed mart"
        );
        done.push(view.name);
    }
    Ok(done)
}

fn refresh_statement(view: &MatView, concurrently: bool) -> String {
    let name = quote_ident(Dialect::Postgres, &view.name);
    if concurrently && view.populated && view.concurrent_ok {
        format!("REFRESH MATERIALIZED VIEW CONCURRENTLY mart.{name}")
    } else {
        format!("REFRESH MATERIALIZED VIEW mart.{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, populated: bool, concurrent_ok: bool) -> MatView {
        MatView {
            name: name.into(),
            populated,
            concurrent_ok,
        }
    }

    #[test]
    fn refreshes_concurrently_only_when_populated_with_a_unique_index() {
        assert_eq!(
            refresh_statement(&view("sales_daily", true, true), true),
            "REFRESH MATERIALIZED VIEW CONCURRENTLY mart.\"sales_daily\""
        );
        assert_eq!(
            refresh_statement(&view("sales_daily", true, true), false),
            "REFRESH MATERIALIZED VIEW mart.\"sales_daily\""
        );
        assert_eq!(
            refresh_statement(&view("sales_daily", false, true), true),
            "REFRESH MATERIALIZED VIEW mart.\"sales_daily\""
        );
        assert_eq!(
            refresh_statement(&view("odd\"name", true, false), true),
            "REFRESH MATERIALIZED VIEW mart.\"odd\"\"name\""
        );
    }

    #[test]
    fn the_sql_defines_every_mart_of_the_spec() {
        for mart in [
            "sales_daily",
            "manager_performance",
            "product_ranking",
            "average_check",
            "customer_report",
            "customer_metrics",
            "customer_retention",
        ] {
            assert!(
                MARTS_SQL.contains(&format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS mart.{mart} AS"
                )),
                "{mart}"
            );
            // The revision init checks and the one the comment records agree,
            // or every init would rebuild the view.
            let call = format!("SELECT pg_temp.drop_stale_matview('{mart}', ");
            let at = MARTS_SQL.find(&call).expect(&call) + call.len();
            let rev: String = MARTS_SQL[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            let comment = format!("COMMENT ON MATERIALIZED VIEW mart.{mart} IS");
            let at = MARTS_SQL.find(&comment).expect(&comment);
            let end = at + MARTS_SQL[at..].find("';").expect("comment end");
            assert!(
                MARTS_SQL[at..end].ends_with(&format!("[rev {rev}]")),
                "{mart}: comment does not end with [rev {rev}]"
            );
        }
        for view in ["etl_recent_runs", "etl_performance"] {
            assert!(
                MARTS_SQL.contains(&format!("CREATE OR REPLACE VIEW mart.{view} AS")),
                "{view}"
            );
        }
    }
}
