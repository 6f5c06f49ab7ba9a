//! Run state in the warehouse: the run log (`etl_runs`), the one-run-at-a-
//! time advisory lock, the source watermarks and the unfinished backfill.
//!
//! The lock is a session-level advisory lock on a dedicated connection held
//! for the whole run: if the process dies, PostgreSQL drops the session and
//! the lock with it, so a crash never leaves the warehouse locked.

use chrono::{DateTime, Utc};
use tokio_postgres::{Client, GenericClient};

use crate::load::{qualified, LoadError};
use crate::schema::dwh::{BACKFILL_CHUNKS, BACKFILL_STATE, ETL_RUNS, LOAD_WATERMARKS};
use crate::transform::RunStats;

/// Advisory lock key: "salesdwh" in ASCII, so other tools can recognise it.
pub const LOCK_KEY: i64 = 0x73616c6573647768;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("another salesdwh run holds the warehouse lock (PostgreSQL pid {holder})")]
    Locked { holder: String },
    #[error("lost the PostgreSQL connection that holds the run lock")]
    LockLost,
}

/// How long [`lock`] keeps trying: a run killed just before (kill -9, a
/// crash) holds the lock until the server has noticed its session end,
/// which can take a moment on a busy machine.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// Takes the run lock on `client` (kept open for the run) or says who has it.
pub async fn lock(client: &Client) -> Result<(), StateError> {
    let started = std::time::Instant::now();
    loop {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LOCK_KEY])
            .await
            .map_err(LoadError::pg("taking the run lock"))?
            .get(0);
        if got {
            return Ok(());
        }
        if started.elapsed() >= LOCK_PATIENCE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let holder = client
        .query_opt(
            "SELECT pid::text FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND ((classid::bigint << 32) | objid::bigint) = $1 LIMIT 1",
            &[&LOCK_KEY],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get::<_, String>(0))
        .unwrap_or_else(|| "unknown".into());
    Err(StateError::Locked { holder })
}

/// After a stop (Ctrl-C, SIGTERM): cancels what this run's other sessions
/// (the pool, opened after `client`) are still executing. Dropping a
/// statement's future does not stop the server, and an index build left
/// running would race the next run's. Best effort.
pub async fn cancel_own_sessions(client: &Client) {
    let _ = client
        .execute(
            "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'salesdwh' \
             AND pid <> pg_backend_pid() \
             AND backend_start >= (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())",
            &[],
        )
        .await;
}

/// After a stop: cancels the statement `client` itself is executing (its
/// future was dropped), so what is queued behind it runs at once.
pub async fn cancel_own_statement(client: &Client) {
    let _ = client
        .cancel_token()
        .cancel_query(tokio_postgres::NoTls)
        .await;
}

/// Ends a run taken with [`lock`]: its etl_runs row ([`finish_run`]), then
/// the run lock. The lock goes even when the row cannot be written: the
/// session's end would release it too, but only once the server has
/// noticed the process exit, and a run started right after could find it
/// still held.
pub async fn end_run(
    client: &Client,
    run_id: i64,
    stats: &RunStats,
    error: Option<&str>,
) -> Result<(), LoadError> {
    let finished = finish_run(client, run_id, stats, error).await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    finished
}

/// Fails once the session holding the run lock is gone: past that point
/// another run could start, so this one must stop writing.
pub fn check_lock(client: &Client) -> Result<(), StateError> {
    if client.is_closed() {
        Err(StateError::LockLost)
    } else {
        Ok(())
    }
}

/// Opens an etl_runs row with status `running`; returns its run_id.
pub async fn start_run<C: GenericClient>(client: &C, command: &str) -> Result<i64, LoadError> {
    let sql = format!(
        "INSERT INTO {} (command, status, tool_version) VALUES ($1, 'running', $2) RETURNING run_id",
        qualified(&ETL_RUNS)
    );
    Ok(client
        .query_one(&sql, &[&command, &env!("CARGO_PKG_VERSION")])
        .await
        .map_err(LoadError::pg("opening the run log entry"))?
        .get(0))
}

/// Closes a run: status, counters, per-table stats and the error, if any.
async fn finish_run<C: GenericClient>(
    client: &C,
    run_id: i64,
    stats: &RunStats,
    error: Option<&str>,
) -> Result<(), LoadError> {
    let (read, loaded, rejected) = stats.totals();
    let sql = format!(
        "UPDATE {} SET finished_at = now(), status = $2, rows_read = $3, rows_loaded = $4, \
         rows_rejected = $5, table_stats = $6, error = $7 WHERE run_id = $1",
        qualified(&ETL_RUNS)
    );
    let status = if error.is_some() {
        "failed"
    } else {
        "succeeded"
    };
    client
        .execute(
            &sql,
            &[
                &run_id,
                &status,
                &(read as i64),
                &(loaded as i64),
                &(rejected as i64),
                &stats.to_json(),
                &error,
            ],
        )
        .await
        .map_err(LoadError::pg("closing the run log entry"))?;
    Ok(())
}

/// Runs left `running` by a process that died (no session holds the lock
/// any more, so they cannot be running): marked failed.
pub async fn close_abandoned_runs<C: GenericClient>(client: &C) -> Result<u64, LoadError> {
    let sql = format!(
        "UPDATE {} SET status = 'failed', finished_at = now(), \
         error = coalesce(error, 'abandoned: the process stopped before finishing') \
         WHERE status = 'running'",
        qualified(&ETL_RUNS)
    );
    client
        .execute(&sql, &[])
        .await
        .map_err(LoadError::pg("closing abandoned runs"))
}

/// A source table's keyset cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    /// µs since the epoch, full precision.
    pub updated_at: i64,
    pub id: i64,
}

fn ts(us: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(us).unwrap_or_default()
}

/// Sets the watermarks (inside the caller's transaction); a mark that did
/// not move is not rewritten.
pub async fn set_watermarks<C: GenericClient>(
    client: &C,
    marks: &[(String, Watermark)],
) -> Result<(), LoadError> {
    let sql = format!(
        "INSERT INTO {} AS w (source_table, last_updated_at, last_id, updated_at) VALUES ($1, $2, $3, now()) \
         ON CONFLICT (source_table) DO UPDATE SET last_updated_at = EXCLUDED.last_updated_at, \
         last_id = EXCLUDED.last_id, updated_at = now() \
         WHERE (w.last_updated_at, w.last_id) IS DISTINCT FROM (EXCLUDED.last_updated_at, EXCLUDED.last_id)",
        qualified(&LOAD_WATERMARKS)
    );
    for (table, mark) in marks {
        client
            .execute(&sql, &[table, &ts(mark.updated_at), &mark.id])
            .await
            .map_err(LoadError::pg("setting the watermarks"))?;
    }
    Ok(())
}

/// The stored watermarks by source table.
pub async fn watermarks<C: GenericClient>(
    client: &C,
) -> Result<std::collections::HashMap<String, Watermark>, LoadError> {
    let sql = format!(
        "SELECT source_table, last_updated_at, last_id FROM {}",
        qualified(&LOAD_WATERMARKS)
    );
    Ok(client
        .query(&sql, &[])
        .await
        .map_err(LoadError::pg("reading the watermarks"))?
        .iter()
        .map(|r| {
            let at: DateTime<Utc> = r.get(1);
            (
                r.get(0),
                Watermark {
                    updated_at: at.timestamp_micros(),
                    id: r.get(2),
                },
            )
        })
        .collect())
}

/// The unfinished backfill, if one is recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct BackfillState {
    pub first_run: i64,
    pub plan: serde_json::Value,
    pub watermarks: serde_json::Value,
    pub indexes_dropped: bool,
}

pub async fn backfill_state<C: GenericClient>(
    client: &C,
) -> Result<Option<BackfillState>, LoadError> {
    let sql = format!(
        "SELECT first_run, plan, watermarks, indexes_dropped FROM {}",
        qualified(&BACKFILL_STATE)
    );
    Ok(client
        .query_opt(&sql, &[])
        .await
        .map_err(LoadError::pg("reading the backfill state"))?
        .map(|r| BackfillState {
            first_run: r.get(0),
            plan: r.get(1),
            watermarks: r.get(2),
            indexes_dropped: r.get(3),
        }))
}

pub async fn save_backfill_state<C: GenericClient>(
    client: &C,
    state: &BackfillState,
) -> Result<(), LoadError> {
    let sql = format!(
        "INSERT INTO {} (backfill_id, first_run, plan, watermarks, indexes_dropped) VALUES (1, $1, $2, $3, $4) \
         ON CONFLICT (backfill_id) DO UPDATE SET first_run = EXCLUDED.first_run, plan = EXCLUDED.plan, \
         watermarks = EXCLUDED.watermarks, indexes_dropped = EXCLUDED.indexes_dropped",
        qualified(&BACKFILL_STATE)
    );
    client
        .execute(
            &sql,
            &[
                &state.first_run,
                &state.plan,
                &state.watermarks,
                &state.indexes_dropped,
            ],
        )
        .await
        .map_err(LoadError::pg("saving the backfill state"))?;
    Ok(())
}

/// Forgets the backfill (its chunks too): it is complete, or being restarted.
pub async fn clear_backfill<C: GenericClient>(client: &C) -> Result<(), LoadError> {
    client
        .batch_execute(&format!(
            "DELETE FROM {}; DELETE FROM {}",
            qualified(&BACKFILL_CHUNKS),
            qualified(&BACKFILL_STATE)
        ))
        .await
        .map_err(LoadError::pg("clearing the backfill state"))
}

/// Chunks already committed: (chunk_lo, stats).
pub async fn done_chunks<C: GenericClient>(client: &C) -> Result<Vec<(i64, RunStats)>, LoadError> {
    let sql = format!(
        "SELECT chunk_lo, stats FROM {}",
        qualified(&BACKFILL_CHUNKS)
    );
    Ok(client
        .query(&sql, &[])
        .await
        .map_err(LoadError::pg("reading the loaded chunks"))?
        .iter()
        .map(|r| {
            (
                r.get(0),
                RunStats::from_json(&r.get::<_, serde_json::Value>(1)),
            )
        })
        .collect())
}
