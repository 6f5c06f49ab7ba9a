//! The fact tables' primary keys, FK constraints and FK indexes around a
//! bulk load. Loading an empty fact table without them and building them
//! once afterwards is what a COPY-then-index floor does; keeping them would
//! cost an index insert per row per index and an RI check per row per FK.
//!
//! Names and definitions come from the model (the same renderer functions
//! `init` uses), and rebuilding skips whatever already exists, so a rebuild
//! interrupted half way is simply run again. The loaded tables' `ANALYZE`
//! runs among the builds (they share the cores; see [`rebuild_fact_indexes`]).

use tokio_postgres::GenericClient;

use super::{add_foreign_key_sql, drop_foreign_keys_sql, execute_all, qualified, LoadError};
use crate::connect::PgPool;
use crate::schema::dwh::{FACT_PAYMENTS, FACT_SALES};
use crate::schema::model::{ident_list, quote_ident, Dialect, Table};
use crate::schema::{postgres, DWH};

const D: Dialect = Dialect::Postgres;
pub const FACTS: [&Table; 2] = [&FACT_SALES, &FACT_PAYMENTS];

/// True when neither fact table has a row.
pub async fn facts_empty<C: GenericClient>(client: &C) -> Result<bool, LoadError> {
    let sql = format!(
        "SELECT NOT EXISTS (SELECT 1 FROM {}) AND NOT EXISTS (SELECT 1 FROM {})",
        qualified(&FACT_SALES),
        qualified(&FACT_PAYMENTS)
    );
    let row = client
        .query_one(&sql, &[])
        .await
        .map_err(LoadError::pg("checking whether the facts are empty"))?;
    Ok(row.get(0))
}

/// Drops the PK, FK constraints and indexes of both fact tables.
pub async fn drop_fact_indexes<C: GenericClient>(client: &C) -> Result<(), LoadError> {
    let mut sql = Vec::new();
    for table in FACTS {
        let name = qualified(table);
        sql.extend(drop_foreign_keys_sql(table));
        for index in table.indexes {
            sql.push(format!(
                "DROP INDEX IF EXISTS {}.{}",
                quote_ident(D, DWH.schema.unwrap_or("dwh")),
                quote_ident(D, &table.index_name(index))
            ));
        }
        sql.push(format!(
            "ALTER TABLE {name} DROP CONSTRAINT IF EXISTS {}",
            quote_ident(D, &table.pk_name())
        ));
    }
    execute_all(client, &sql, "dropping the fact indexes for the bulk load").await
}

/// One statement of the rebuild and on which table it works.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    table: String,
    analyze: bool,
    sql: String,
}

impl Job {
    /// Index builds of one table run side by side (SHARE locks); an
    /// ANALYZE (SHARE UPDATE EXCLUSIVE) runs alone on its table.
    fn conflicts(&self, other: &Job) -> bool {
        self.table == other.table && (self.analyze || other.analyze)
    }
}

/// The statements that restore what [`drop_fact_indexes`] dropped and is
/// still missing, in two waves. First every index, the primary keys'
/// unique indexes included, which PostgreSQL can build side by side (they
/// only take SHARE locks). Then the constraints, which are catalog changes:
/// the primary key adopts its index (`USING INDEX`), and the foreign keys
/// are added `NOT VALID`: enforced for every later insert and update, but
/// the bulk-loaded rows are not re-checked, because the loader resolved
/// every one of their keys from the dimension rows committed before them
/// (re-validating 1M rows would cost a second join per FK for nothing).
/// A table's primary key comes after its other indexes: its values arrive
/// in load order, so it sorts fastest and makes the shortest last job.
async fn missing<C: GenericClient>(client: &C) -> Result<(Vec<Job>, Vec<String>), LoadError> {
    let schema = DWH.schema.unwrap_or("dwh");
    let names = |sql: &'static str| async move {
        client
            .query(sql, &[&schema])
            .await
            .map_err(LoadError::pg("reading the fact constraints"))
            .map(|rows| {
                rows.iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<std::collections::HashSet<String>>()
            })
    };
    let constraints = names(
        "SELECT c.conname::text FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE n.nspname = $1",
    )
    .await?;
    let indexes = names("SELECT indexname::text FROM pg_indexes WHERE schemaname = $1").await?;
    let mut builds = Vec::new();
    let mut catalog = Vec::new();
    for table in FACTS {
        let name = qualified(table);
        let build = |sql: String| Job {
            table: name.clone(),
            analyze: false,
            sql,
        };
        for index in table.indexes {
            if !indexes.contains(&table.index_name(index)) {
                builds.push(build(postgres::create_index(&DWH, table, index)));
            }
        }
        let pk = table.pk_name();
        if !constraints.contains(&pk) {
            if !indexes.contains(&pk) {
                builds.push(build(format!(
                    "CREATE UNIQUE INDEX {} ON {name} ({})",
                    quote_ident(D, &pk),
                    ident_list(D, table.primary_key)
                )));
            }
            catalog.push(format!(
                "ALTER TABLE {name} ADD CONSTRAINT {0} PRIMARY KEY USING INDEX {0}",
                quote_ident(D, &pk)
            ));
        }
        for fk in table.foreign_keys {
            if !constraints.contains(&table.fk_name(fk)) {
                catalog.push(add_foreign_key_sql(table, fk, false));
            }
        }
    }
    Ok((builds, catalog))
}

/// `ANALYZE` of a table's key columns: the ones lookups and joins are
/// planned on (a third of the time of every column's; autovacuum analyzes
/// the rest soon after).
fn analyze_job(table: &Table) -> Job {
    let name = qualified(table);
    Job {
        sql: format!("ANALYZE {name} ({})", ident_list(D, &table.key_columns())),
        table: name,
        analyze: true,
    }
}

/// The order the jobs are taken in: the ANALYZEs first, side by side (one
/// per table, on a heap the builds then read warm), then the index builds,
/// which keep every session busy to the end. Before, one ANALYZE of all
/// the tables ran after the last build, on one core, with the other idle.
fn schedule(analyze: &[&Table], builds: Vec<Job>) -> Vec<Job> {
    let mut jobs: Vec<Job> = analyze.iter().map(|t| analyze_job(t)).collect();
    jobs.extend(builds);
    jobs
}

/// Takes the first job no running job conflicts with; `None` when there
/// is none to take now (every pending one waits for a running one).
fn take(pending: &mut Vec<Job>, running: &[Job]) -> Option<Job> {
    let at = pending
        .iter()
        .position(|j| !running.iter().any(|r| r.conflicts(j)))?;
    Some(pending.remove(at))
}

/// Rebuilds what is missing and analyzes the key columns of `analyze`
/// (fresh statistics: without them the planner guesses on millions of new
/// rows), over `parallel` sessions; then adds the constraints. Returns how
/// many statements ran.
pub async fn rebuild_fact_indexes(
    pool: &PgPool,
    parallel: usize,
    analyze: &[&Table],
) -> Result<usize, LoadError> {
    let (builds, catalog) = {
        let conn = pool.get().await.map_err(LoadError::Pool)?;
        missing(&*conn).await?
    };
    let jobs = schedule(analyze, builds);
    let ran = jobs.len() + catalog.len();
    // (pending, running); `wake` tells waiting sessions a job finished.
    let board = std::sync::Arc::new(std::sync::Mutex::new((jobs, Vec::<Job>::new())));
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..parallel.max(1) {
        let pool = pool.clone();
        let board = board.clone();
        let wake = wake.clone();
        tasks.spawn(async move {
            let conn = pool.get().await.map_err(LoadError::Pool)?;
            // Statements already run side by side on every core: parallel
            // workers per build would only compete.
            conn.batch_execute("SET max_parallel_maintenance_workers = 0")
                .await
                .map_err(LoadError::pg("preparing the index builds"))?;
            loop {
                let waiting = wake.notified();
                let job = {
                    let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
                    let (pending, running) = &mut *b;
                    if pending.is_empty() {
                        break;
                    }
                    let job = take(pending, running);
                    if let Some(job) = &job {
                        running.push(job.clone());
                    }
                    job
                };
                let Some(job) = job else {
                    waiting.await;
                    continue;
                };
                let result = conn.batch_execute(&job.sql).await;
                {
                    let mut b = board.lock().unwrap_or_else(|e| e.into_inner());
                    b.1.retain(|r| r != &job);
                }
                wake.notify_waiters();
                result.map_err(LoadError::pg(if job.analyze {
                    format!("analyzing {}", job.table)
                } else {
                    format!("rebuilding fact indexes ({})", job.sql)
                }))?;
            }
            conn.batch_execute("RESET max_parallel_maintenance_workers")
                .await
                .map_err(LoadError::pg("finishing the index builds"))?;
            Ok::<(), LoadError>(())
        });
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(r) => {
                if result.is_ok() && r.is_err() {
                    result = r;
                    // The others would only wait on a board that no longer
                    // moves past the failed job's table.
                    tasks.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    result?;
    if !catalog.is_empty() {
        let conn = pool.get().await.map_err(LoadError::Pool)?;
        conn.batch_execute(&catalog.join(";\n"))
            .await
            .map_err(LoadError::pg("adding the fact constraints"))?;
    }
    Ok(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(table: &str, analyze: bool, sql: &str) -> Job {
        Job {
            table: table.into(),
            analyze,
            sql: sql.into(),
        }
    }

    #[test]
    fn builds_share_a_table_and_analyze_runs_alone_on_its_own() {
        let mut pending = vec![
            job("s", false, "s1"),
            job("s", true, "as"),
            job("p", false, "p1"),
            job("s", false, "s2"),
        ];
        let mut running = vec![job("s", true, "as0")];
        // Nothing on s while s is analyzed: p1 is the first to take.
        assert_eq!(
            take(&mut pending, &running).map(|j| j.sql),
            Some("p1".into())
        );
        running = vec![job("s", false, "s0")];
        // Builds on s side by side; the ANALYZE of s waits for them.
        assert_eq!(
            take(&mut pending, &running).map(|j| j.sql),
            Some("s1".into())
        );
        assert_eq!(
            take(&mut pending, &running).map(|j| j.sql),
            Some("s2".into())
        );
        assert_eq!(take(&mut pending, &running), None);
        assert_eq!(pending.len(), 1);
        running.clear();
        assert_eq!(
            take(&mut pending, &running).map(|j| j.sql),
            Some("as".into())
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn analyzes_come_first_and_cover_the_key_columns() {
        use crate::schema::dwh::DIM_CUSTOMER;
        let builds = vec![job("\"dwh\".\"fact_sales\"", false, "CREATE INDEX x")];
        let jobs = schedule(&[&FACT_SALES, &DIM_CUSTOMER], builds);
        assert_eq!(jobs.len(), 3);
        assert!(jobs[0].analyze && jobs[1].analyze && !jobs[2].analyze);
        assert!(jobs[0]
            .sql
            .starts_with("ANALYZE \"dwh\".\"fact_sales\" (\"order_item_id\""));
        assert!(jobs[0].sql.contains("\"customer_key\""));
        assert!(!jobs[0].sql.contains("\"revenue\""));
        assert_eq!(jobs[0].table, jobs[2].table);
    }
}
