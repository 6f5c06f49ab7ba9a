//! `salesdwh backfill`: the one-shot historical load.
//!
//! 1. Take the run lock, open an etl_runs row, open one consistent snapshot
//!    of MySQL on `workers` sessions.
//! 2. First attempt: record the plan (order_id chunks, window) and the
//!    snapshot's high marks per table, and drop the fact PK/FK/indexes (the
//!    facts are empty) — in one transaction.
//! 3. Dimensions: stream each table into a staging table, merge on the
//!    natural key, read the key maps back.
//! 4. Facts: extract workers read order_id chunks → bounded channel →
//!    loaders transform each chunk (blocking pool, polars) and write it in
//!    one transaction with its rejects and its completion mark; once it
//!    commits, its small sums for the marts are added up in memory, and its
//!    day × region × category cells and its orders are spilled to local
//!    files (`crate::spill`).
//! 5. Rebuild the fact PK, indexes and FKs and, beside them, finish the
//!    marts from the sums and the spill; set the watermarks to the first
//!    attempt's snapshot point, forget the backfill and mark the marts
//!    built, in one transaction; close the run.
//!
//! **Resumable.** A crash or a lost connection leaves the committed chunks
//! marked; the rerun reloads the dimensions (an idempotent upsert), skips
//! the marked chunks and does the rest (and rebuilds the marts from the
//! facts: the dead attempt's in-memory sums are gone). The watermarks are the *first*
//! attempt's snapshot, so a later `sync` re-reads everything that changed
//! since any chunk was read: resumed or not, sync converges.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use serde_json::json;
use tokio::sync::mpsc;

use super::PipelineError;
use crate::config::Settings;
use crate::connect::{self, PgPool};
use crate::extract::{self, Batches, Category, FactChunk, Snapshot, SourceRow};
use crate::load::copy::CopyBuf;
use crate::load::{self, dims as load_dims, facts as load_facts, indexes, qualified, LoadError};
use crate::progress::{Board, Progress};
use crate::schema::dwh::{
    BACKFILL_CHUNKS, BACKFILL_STATE, DIM_CATEGORY, DIM_CUSTOMER, DIM_DATE, DIM_EMPLOYEE,
    DIM_PRODUCT, DIM_REGION, ETL_REJECTS, FACT_PAYMENTS, FACT_SALES, LOAD_WATERMARKS,
};
use crate::schema::model::Table;
use crate::schema::{oltp, OLTP};
use crate::spill::OrderSpill;
use crate::state::{self, BackfillState};
use crate::transform::facts::{self as tfacts, FactContext};
use crate::transform::marts::AdditiveSums;
use crate::transform::{dims as tdims, Keys, RunStats, TableStats};

#[derive(Debug, Clone)]
pub struct BackfillOptions {
    pub workers: usize,
    pub batch_rows: u64,
    /// Inclusive order_date window.
    pub window: Option<(NaiveDate, NaiveDate)>,
    pub truncate: bool,
    pub refresh_marts: bool,
    pub quiet: bool,
}

#[derive(Debug)]
pub struct BackfillReport {
    pub run_id: i64,
    pub stats: RunStats,
    pub chunks: usize,
    pub resumed_chunks: usize,
    pub phases: Vec<(&'static str, Duration)>,
    pub elapsed: Duration,
    pub marts: crate::marts::Upkeep,
}

use super::{day_micros, DAY_MICROS};

/// The order_id chunks of a plan: equal widths over the orders' span, the
/// first and last open-ended so orphans outside the span are read too.
pub fn plan_chunks(first: i64, last: i64, width: i64) -> Vec<(i64, i64)> {
    let width = width.max(1);
    let n = ((i128::from(last) - i128::from(first)) / i128::from(width) + 1).max(1) as i64;
    (0..n)
        .map(|k| {
            let lo = if k == 0 { i64::MIN } else { first + k * width };
            let hi = if k == n - 1 {
                i64::MAX
            } else {
                first + (k + 1) * width - 1
            };
            (lo, hi)
        })
        .collect()
}

fn window_json(window: Option<(NaiveDate, NaiveDate)>) -> serde_json::Value {
    match window {
        None => json!(null),
        Some((a, b)) => json!([a.to_string(), b.to_string()]),
    }
}

/// Runs a backfill. The caller prints the report.
pub async fn run(
    settings: &Settings,
    opts: &BackfillOptions,
) -> Result<BackfillReport, PipelineError> {
    let started = Instant::now();
    let timeout = settings.connect_timeout;
    let lock_client = connect::pg_client(&settings.postgres, timeout).await?;
    state::lock(&lock_client).await?;
    crate::marts::check_revision(&lock_client)
        .await
        .map_err(PipelineError::NotSetUp)?;
    // Loaders plus the lock; after the load, the index builders plus the
    // two marts jobs.
    let pool_size = (opts.workers.max(2) as u32 + 2).max(settings.pg_pool_size);
    let pool = connect::pg_pool(&settings.postgres, timeout, pool_size).await?;
    state::close_abandoned_runs(&lock_client).await?;
    if opts.truncate {
        truncate(&lock_client).await?;
    }
    let existing = state::backfill_state(&lock_client).await?;
    if existing.is_none() && !indexes::facts_empty(&lock_client).await? {
        let counts = lock_client
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})",
                    qualified(&FACT_SALES),
                    qualified(&FACT_PAYMENTS)
                ),
                &[],
            )
            .await
            .map_err(LoadError::pg("counting the facts"))?;
        return Err(PipelineError::NotEmpty {
            sales: counts.get(0),
            payments: counts.get(1),
            windowed: opts.window.is_some(),
        });
    }
    if let Some(st) = &existing {
        if st.plan.get("window") != Some(&window_json(opts.window)) {
            return Err(PipelineError::ResumeMismatch {
                recorded: format!(
                    "window {}",
                    st.plan
                        .get("window")
                        .map_or("none".into(), |w| w.to_string())
                ),
            });
        }
    }
    let run_id = state::start_run(&lock_client, "backfill").await?;
    let stats = Arc::new(Mutex::new(RunStats::default()));
    // Ctrl-C or SIGTERM drops the run where it is: open chunk transactions
    // roll back, committed chunks stay for the rerun to skip.
    let result = super::or_stopped(body(
        settings,
        opts,
        &pool,
        &lock_client,
        run_id,
        existing,
        &stats,
        started,
    ))
    .await;
    let stats = stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match result {
        Ok(mut report) => {
            state::end_run(&lock_client, run_id, &stats, None).await?;
            report.stats = stats;
            report.elapsed = started.elapsed();
            Ok(report)
        }
        Err(e) => {
            if let PipelineError::Stopped(_) = e {
                state::cancel_own_sessions(&lock_client).await;
            }
            // Best effort: the connection may be what failed; the next run
            // closes abandoned runs either way.
            let _ = state::end_run(
                &lock_client,
                run_id,
                &stats,
                Some(&crate::error::cause_chain(&e)),
            )
            .await;
            // Emptied, then stopped: `--truncate` again would start over.
            Err(if opts.truncate && e.resumable() {
                PipelineError::TruncatedThenStopped(Box::new(e))
            } else {
                e
            })
        }
    }
}

async fn truncate(client: &tokio_postgres::Client) -> Result<(), LoadError> {
    let tables: Vec<String> = [
        &FACT_SALES,
        &FACT_PAYMENTS,
        &ETL_REJECTS,
        &LOAD_WATERMARKS,
        &BACKFILL_CHUNKS,
        &BACKFILL_STATE,
    ]
    .iter()
    .map(|t| qualified(t))
    .collect();
    client
        .batch_execute(&format!("TRUNCATE {}", tables.join(", ")))
        .await
        .map_err(LoadError::pg("truncating the facts for --truncate"))
}

#[allow(clippy::too_many_arguments)]
async fn body(
    settings: &Settings,
    opts: &BackfillOptions,
    pool: &PgPool,
    client: &tokio_postgres::Client,
    run_id: i64,
    existing: Option<BackfillState>,
    stats: &Arc<Mutex<RunStats>>,
    started: Instant,
) -> Result<BackfillReport, PipelineError> {
    let mut phases = Vec::new();
    let mut phase_start = Instant::now();
    let mut readers = Snapshot::open(&settings.mysql, settings.connect_timeout, opts.workers)
        .await?
        .readers;
    let now = Utc::now().timestamp_micros();
    let board = Board::new(opts.quiet);
    // The first session reads the plan and the dimensions; the others
    // start on the fact chunks meanwhile (see `FactReaders`).
    let mut first_reader = readers.remove(0);
    let conn0 = &mut first_reader;

    let mut estimates = HashMap::new();
    for table in OLTP.tables {
        estimates.insert(table.name, extract::estimated_rows(conn0, table).await?);
    }
    let state = match existing {
        Some(st) => {
            tracing::info!("resuming the backfill started by run {}", st.first_run);
            st
        }
        None => {
            let mut marks = serde_json::Map::new();
            for table in OLTP.tables {
                if let Some((us, id)) = extract::high_mark(conn0, table).await? {
                    marks.insert(table.name.into(), json!({ "updated_at": us, "id": id }));
                }
            }
            let span = extract::order_id_span(conn0).await?;
            let (first, last) = span.unwrap_or((0, 0));
            let items = estimates
                .get(oltp::ORDER_ITEMS.name)
                .copied()
                .unwrap_or(0)
                .max(1);
            let ids = (i128::from(last) - i128::from(first) + 1).max(1);
            let width = (ids * i128::from(opts.batch_rows) / i128::from(items))
                .clamp(1, i128::from(i64::MAX)) as i64;
            let st = BackfillState {
                first_run: run_id,
                plan: json!({
                    "first_order_id": first,
                    "last_order_id": last,
                    "chunk_width": width,
                    "window": window_json(opts.window),
                    // Whether the chunks write their share of the mart
                    // aggregates (a resume must do as the first attempt).
                    "mart_parts": opts.refresh_marts,
                }),
                watermarks: serde_json::Value::Object(marks),
                indexes_dropped: true,
            };
            let mut conn = pool.get().await.map_err(LoadError::Pool)?;
            let tx = conn
                .transaction()
                .await
                .map_err(LoadError::pg("starting the backfill"))?;
            indexes::drop_fact_indexes(&tx).await?;
            if opts.refresh_marts {
                crate::marts::start_parts(&tx)
                    .await
                    .map_err(PipelineError::Marts)?;
            }
            state::save_backfill_state(&tx, &st).await?;
            tx.commit()
                .await
                .map_err(LoadError::pg("starting the backfill"))?;
            st
        }
    };

    // ---- dimensions
    let dim_total: u64 = [
        &oltp::REGIONS,
        &oltp::CATEGORIES,
        &oltp::PRODUCTS,
        &oltp::CUSTOMERS,
        &oltp::EMPLOYEES,
    ]
    .iter()
    .map(|t| estimates.get(t.name).copied().unwrap_or(0))
    .sum();
    let dim_bar = board.bar("dimensions", dim_total);
    // ---- the fact plan (its chunks are read from here on)
    let plan = &state.plan;
    let get = |k: &str| plan.get(k).and_then(|v| v.as_i64()).unwrap_or(0);
    let chunks = plan_chunks(
        get("first_order_id"),
        get("last_order_id"),
        get("chunk_width"),
    );
    let done = state::done_chunks(client).await?;
    let done_lo: std::collections::HashSet<i64> = done.iter().map(|(lo, _)| *lo).collect();
    let estimate = |t: &Table| estimates.get(t.name).copied().unwrap_or(0);
    let bars = Arc::new(FactBars {
        items: board.bar("order_items", estimate(&oltp::ORDER_ITEMS)),
        payments: board.bar("payments", estimate(&oltp::PAYMENTS)),
    });
    {
        let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
        for (_, chunk_stats) in &done {
            s.add(chunk_stats);
            bars.chunk_done(chunk_stats);
        }
    }
    let todo: VecDeque<(i64, i64)> = chunks
        .iter()
        .copied()
        .filter(|(lo, _)| !done_lo.contains(lo))
        .collect();
    tracing::debug!(
        chunks = chunks.len(),
        to_load = todo.len(),
        ms = phase_start.elapsed().as_millis() as u64,
        "fact plan ready"
    );
    let mut fact_readers = FactReaders::start(readers, todo, opts.workers);

    let batch = opts.batch_rows.clamp(1_000, 100_000) as usize;
    let mut dim_stats = RunStats::default();
    let keys = load_dimensions(conn0, pool, batch, &dim_bar, &mut dim_stats).await;
    fact_readers.spawn(first_reader);
    stats
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .add(&dim_stats);
    let keys = keys?;
    dim_bar.finish();
    phases.push(("dimensions", phase_start.elapsed()));
    log_memory("dimensions");
    phase_start = Instant::now();

    // ---- facts
    let window = opts
        .window
        .map(|(a, b)| (day_micros(a), day_micros(b) + DAY_MICROS));
    let mart_parts = plan.get("mart_parts").and_then(|v| v.as_bool()) == Some(true);
    // The marts from the chunks' shares, unless an earlier attempt loaded
    // chunks: their sums died with it, so a resumed backfill
    // rebuilds the marts from fact_sales instead (slower; rare).
    let build_marts = opts.refresh_marts && mart_parts && done.is_empty();
    let sums = Arc::new(Mutex::new(AdditiveSums::default()));
    crate::spill::sweep_stale();
    let spill = Arc::new(Mutex::new(if build_marts {
        Some(OrderSpill::new().map_err(|source| {
            PipelineError::Marts(crate::marts::MartsError::Spill {
                what: "create",
                dir: std::env::temp_dir().display().to_string(),
                source,
            })
        })?)
    } else {
        None
    }));
    let mut ctx = FactContext::new(Arc::new(keys), now + DAY_MICROS, window);
    ctx.mart_share = build_marts;
    let ctx = Arc::new(ctx);
    let covered = load_facts::dim_date_range(client).await?;
    load_facts_parallel(
        client,
        fact_readers,
        ctx,
        pool,
        run_id,
        covered,
        opts.workers,
        stats,
        bars.clone(),
        &sums,
        &spill,
    )
    .await?;
    bars.finish();
    phases.push(("facts", phase_start.elapsed()));
    log_memory("facts");
    load::copy::release_spares();
    phase_start = Instant::now();

    // ---- indexes and marts, side by side (index builds leave a core idle
    // at times; the marts work runs mostly on one), then done
    state::check_lock(client)?;
    let fact_indexes = async {
        tracing::info!("building the fact primary keys, indexes and foreign keys");
        // With the ANALYZE of the loaded tables beside the builds: without
        // fresh statistics the planner guesses on millions of new rows
        // (the marts refresh below took minutes instead of seconds).
        let analyze = [
            &FACT_SALES,
            &FACT_PAYMENTS,
            &DIM_PRODUCT,
            &DIM_CUSTOMER,
            &DIM_EMPLOYEE,
            &DIM_REGION,
            &DIM_CATEGORY,
            &DIM_DATE,
        ];
        indexes::rebuild_fact_indexes(pool, opts.workers.max(2), &analyze).await?;
        Ok::<(), PipelineError>(())
    };
    let spilled = match spill.lock().unwrap_or_else(|e| e.into_inner()).take() {
        Some(spill) => {
            let dir = spill.dir().display().to_string();
            Some(spill.finish().map_err(|source| {
                PipelineError::Marts(crate::marts::MartsError::Spill {
                    what: "write",
                    dir,
                    source,
                })
            })?)
        }
        None => None,
    };
    let additive = async {
        if let Some(spilled) = &spilled {
            tracing::info!("writing the marts' sums");
            let mut conn = pool.get().await.map_err(LoadError::Pool)?;
            let sums = std::mem::take(&mut *sums.lock().unwrap_or_else(|e| e.into_inner()));
            crate::marts::write_additive(&mut conn, &sums, spilled)
                .await
                .map_err(PipelineError::Marts)?;
        }
        Ok::<(), PipelineError>(())
    };
    let customers = async {
        if let Some(spilled) = &spilled {
            tracing::info!("computing the customer marts");
            let mut conn = pool.get().await.map_err(LoadError::Pool)?;
            crate::marts::build_customers(&mut conn, spilled)
                .await
                .map_err(PipelineError::Marts)?;
        }
        Ok::<(), PipelineError>(())
    };
    tokio::try_join!(fact_indexes, additive, customers)?;
    log_memory("indexes and marts");
    phases.push((
        if build_marts {
            "indexes+marts"
        } else {
            "indexes"
        },
        phase_start.elapsed(),
    ));
    phase_start = Instant::now();
    let marts;
    {
        state::check_lock(client)?;
        let mut conn = pool.get().await.map_err(LoadError::Pool)?;
        let tx = conn
            .transaction()
            .await
            .map_err(LoadError::pg("finishing the backfill"))?;
        let marks: Vec<(String, state::Watermark)> = state
            .watermarks
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(table, _)| {
                        // A windowed backfill did not read every fact row:
                        // it leaves the fact tables' cursors alone.
                        opts.window.is_none()
                            || ![
                                oltp::ORDERS.name,
                                oltp::ORDER_ITEMS.name,
                                oltp::PAYMENTS.name,
                            ]
                            .contains(&table.as_str())
                    })
                    .map(|(table, v)| {
                        (
                            table.clone(),
                            state::Watermark {
                                updated_at: v
                                    .get("updated_at")
                                    .and_then(|x| x.as_i64())
                                    .unwrap_or(0),
                                id: v.get("id").and_then(|x| x.as_i64()).unwrap_or(0),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        state::set_watermarks(&tx, &marks).await?;
        state::clear_backfill(&tx).await?;
        // Inside the same transaction: if the refresh fails, the backfill
        // stays unfinished and a rerun finishes it (all chunks are marked).
        marts = match (opts.refresh_marts, mart_parts) {
            (true, _) if build_marts => crate::marts::finish_parts(&tx).await,
            (true, _) => {
                tracing::info!("rebuilding the marts");
                crate::marts::rebuild(&tx).await
            }
            (false, true) => crate::marts::start_parts(&tx)
                .await
                .map(|()| crate::marts::Upkeep::Stale),
            (false, false) => crate::marts::mark_stale(&tx).await,
        }
        .map_err(PipelineError::Marts)?;
        super::last_commit_under_way();
        tx.commit()
            .await
            .map_err(LoadError::pg("finishing the backfill"))?;
    }
    phases.push((
        if build_marts { "finish" } else { "marts" },
        phase_start.elapsed(),
    ));
    Ok(BackfillReport {
        run_id,
        stats: RunStats::default(),
        chunks: chunks.len(),
        resumed_chunks: done.len(),
        phases,
        elapsed: started.elapsed(),
        marts,
    })
}

/// Streams one dimension table from MySQL into the warehouse: straight in
/// on its first load, else through staging and a merge
/// ([`load_dims::start_first_load`]).
#[allow(clippy::too_many_arguments)]
async fn copy_dim<T: SourceRow>(
    conn: &mut mysql_async::Conn,
    tx: &tokio_postgres::Transaction<'_>,
    table: &Table,
    batch: usize,
    stats: &mut TableStats,
    bar: &Progress,
    mut encode: impl FnMut(&[T], &mut CopyBuf, &mut TableStats),
) -> Result<(), PipelineError> {
    let first_load = load_dims::start_first_load(tx, table).await?;
    let target = if first_load {
        load::qualified(table)
    } else {
        load_dims::create_staging(tx, table).await?;
        load_dims::staging_name(table)
    };
    let columns = table.load_columns();
    let what = || LoadError::pg(format!("loading {}", table.name));
    let sink = load::copy_sink(tx, &target, &columns).await?;
    futures::pin_mut!(sink);
    let mut batches = Batches::<T>::open(conn, batch).await?;
    let mut buf = CopyBuf::new();
    while let Some(rows) = batches.next().await? {
        encode(&rows, &mut buf, stats);
        stats.read += rows.len() as u64;
        bar.inc(rows.len() as u64);
        load::send(sink.as_mut(), buf.take())
            .await
            .map_err(what())?;
    }
    drop(batches);
    load::send(sink.as_mut(), buf.finish())
        .await
        .map_err(what())?;
    stats.loaded += sink.as_mut().finish().await.map_err(what())?;
    if first_load {
        load_dims::finish_first_load(tx, table).await?;
    } else {
        load_dims::merge(tx, table).await?;
    }
    Ok(())
}

async fn load_dimensions(
    conn: &mut mysql_async::Conn,
    pool: &PgPool,
    batch: usize,
    bar: &Progress,
    stats: &mut RunStats,
) -> Result<Keys, PipelineError> {
    let mut client = pool.get().await.map_err(LoadError::Pool)?;
    let begin = || LoadError::pg("loading the dimensions");

    // Regions and categories first: the other dimensions reference them.
    let tx = client.transaction().await.map_err(begin())?;
    copy_dim(
        conn,
        &tx,
        &DIM_REGION,
        batch,
        stats.table(oltp::REGIONS.name),
        bar,
        |rows, buf, _| tdims::regions(rows, buf),
    )
    .await?;
    let mut categories: Vec<Category> = Vec::new();
    {
        // The category tree is small and its parents' names are needed.
        let mut batches = Batches::<Category>::open(conn, batch).await?;
        while let Some(rows) = batches.next().await? {
            categories.extend(rows);
        }
    }
    let mut buf = CopyBuf::new();
    tdims::categories(&categories, &categories, &mut buf);
    let st = stats.table(oltp::CATEGORIES.name);
    st.read = categories.len() as u64;
    bar.inc(categories.len() as u64);
    load_dims::create_staging(&tx, &DIM_CATEGORY).await?;
    st.loaded = load_dims::stage(&tx, &DIM_CATEGORY, buf.finish()).await?;
    load_dims::merge(&tx, &DIM_CATEGORY).await?;
    tx.commit().await.map_err(begin())?;
    // What products, customers and employees reference: regions and
    // categories (not the customers a reload finds, held twice otherwise).
    let keys = load_dims::read_keys_of(&*client, false).await?;

    let tx = client.transaction().await.map_err(begin())?;
    copy_dim(
        conn,
        &tx,
        &DIM_PRODUCT,
        batch,
        stats.table(oltp::PRODUCTS.name),
        bar,
        |rows, buf, _| tdims::products(rows, &keys, buf),
    )
    .await?;
    copy_dim(
        conn,
        &tx,
        &DIM_CUSTOMER,
        batch,
        stats.table(oltp::CUSTOMERS.name),
        bar,
        |rows, buf, st| tdims::customers(rows, &keys, buf, st),
    )
    .await?;
    copy_dim(
        conn,
        &tx,
        &DIM_EMPLOYEE,
        batch,
        stats.table(oltp::EMPLOYEES.name),
        bar,
        |rows, buf, st| tdims::employees(rows, &keys, buf, st),
    )
    .await?;
    tx.commit().await.map_err(begin())?;
    Ok(load_dims::read_keys(&*client).await?)
}

/// The fact chunks' readers: started before the dimensions load (on the
/// sessions the dimensions do not use), so the loaders find chunks in
/// hand when the key maps are ready, and MySQL works while the
/// dimensions' single stream leaves a core idle. The bounded channel
/// holds at most `workers` chunks besides those in the readers' hands.
struct FactReaders {
    tasks: tokio::task::JoinSet<Result<(), PipelineError>>,
    queue: Arc<Mutex<VecDeque<(i64, i64)>>>,
    tx: mpsc::Sender<FactChunk>,
    rx: mpsc::Receiver<FactChunk>,
}

impl FactReaders {
    fn start(readers: Vec<mysql_async::Conn>, todo: VecDeque<(i64, i64)>, workers: usize) -> Self {
        let (tx, rx) = mpsc::channel::<FactChunk>(workers.max(1));
        let mut this = FactReaders {
            tasks: tokio::task::JoinSet::new(),
            queue: Arc::new(Mutex::new(todo)),
            tx,
            rx,
        };
        for conn in readers {
            this.spawn(conn);
        }
        this
    }

    /// One more reader, on `conn`, taking chunks until none is left.
    fn spawn(&mut self, mut conn: mysql_async::Conn) {
        let queue = self.queue.clone();
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some((lo, hi)) = next else { break };
                let t = Instant::now();
                let chunk = extract::read_fact_chunk(&mut conn, lo, hi).await?;
                tracing::debug!(
                    lo,
                    ms = t.elapsed().as_millis() as u64,
                    rows = chunk.source_rows(),
                    "extracted chunk"
                );
                if tx.send(chunk).await.is_err() {
                    break; // loaders stopped: their error is reported
                }
            }
            let _ = conn.disconnect().await;
            Ok(())
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn load_facts_parallel(
    lock: &tokio_postgres::Client,
    readers: FactReaders,
    ctx: Arc<FactContext>,
    pool: &PgPool,
    run_id: i64,
    covered: Option<(i32, i32)>,
    workers: usize,
    stats: &Arc<Mutex<RunStats>>,
    bars: Arc<FactBars>,
    sums: &Arc<Mutex<AdditiveSums>>,
    spill: &Arc<Mutex<Option<OrderSpill>>>,
) -> Result<(), PipelineError> {
    // The readers' channel is bounded (`FactReaders`): they wait while
    // the loaders are busy.
    let FactReaders {
        mut tasks, tx, rx, ..
    } = readers;
    drop(tx);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..workers.max(1) {
        let rx = rx.clone();
        let ctx = ctx.clone();
        let pool = pool.clone();
        let stats = stats.clone();
        let bars = bars.clone();
        let sums = sums.clone();
        let spill = spill.clone();
        tasks.spawn(async move {
            loop {
                let chunk = rx.lock().await.recv().await;
                let Some(chunk) = chunk else { return Ok(()) };
                let (lo, hi) = (chunk.lo, chunk.hi);
                let ctx = ctx.clone();
                let t = Instant::now();
                let mut out = tokio::task::spawn_blocking(move || tfacts::transform(&chunk, &ctx))
                    .await
                    .map_err(|e| PipelineError::Task(e.to_string()))??;
                let chunk_sums = out.marts.as_mut().map(|m| std::mem::take(&mut m.sums));
                let chunk_sales = out.marts.as_mut().map(|m| std::mem::take(&mut m.sales));
                let transform_ms = t.elapsed().as_millis() as u64;
                let t = Instant::now();
                let chunk_stats = out.stats.clone();
                let mut conn = pool.get().await.map_err(LoadError::Pool)?;
                let tx = conn
                    .transaction()
                    .await
                    .map_err(LoadError::pg(format!("loading orders {lo}..={hi}")))?;
                load_facts::write_chunk(&tx, out, run_id, covered, load_facts::Target::Facts)
                    .await?;
                load_facts::mark_chunk(&tx, lo, hi, run_id, &chunk_stats).await?;
                tx.commit()
                    .await
                    .map_err(LoadError::pg(format!("committing orders {lo}..={hi}")))?;
                // Only committed chunks count: their cells and orders go to
                // the spill, the other (small) sums are added up here.
                if let (Some(mut chunk_sums), Some(sales), Some(spill)) = (
                    chunk_sums,
                    chunk_sales,
                    spill.lock().unwrap_or_else(|e| e.into_inner()).as_mut(),
                ) {
                    spill
                        .add_cells(&chunk_sums.take_cells())
                        .and_then(|()| spill.add(&sales))
                        .map_err(|source| {
                            PipelineError::Marts(crate::marts::MartsError::Spill {
                                what: "write",
                                dir: spill.dir().display().to_string(),
                                source,
                            })
                        })?;
                    sums.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .add(&chunk_sums);
                }
                tracing::debug!(
                    lo,
                    transform_ms,
                    load_ms = t.elapsed().as_millis() as u64,
                    "loaded chunk"
                );
                bars.chunk_done(&chunk_stats);
                stats
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add(&chunk_stats);
            }
        });
    }
    // The run lock's session is checked while the tasks work.
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut result = Ok(());
    loop {
        tokio::select! {
            done = tasks.join_next() => {
                match done {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(e))) => { result = Err(e); tasks.abort_all(); }
                    Some(Err(e)) if e.is_cancelled() => {}
                    Some(Err(e)) => { result = Err(PipelineError::Task(e.to_string())); tasks.abort_all(); }
                }
            }
            _ = ticker.tick() => {
                if result.is_ok() {
                    if let Err(e) = state::check_lock(lock) {
                        result = Err(e.into());
                        tasks.abort_all();
                    }
                }
            }
        }
    }
    result
}

/// The fact bars, advanced by every loaded chunk (this run's or, on a
/// resume, an earlier attempt's).
struct FactBars {
    items: Progress,
    payments: Progress,
}

impl FactBars {
    fn chunk_done(&self, chunk: &RunStats) {
        let read = |t: &str| chunk.tables.get(t).map_or(0, |s| s.read);
        self.items.inc(read(oltp::ORDER_ITEMS.name));
        self.payments.inc(read(oltp::PAYMENTS.name));
    }

    fn finish(&self) {
        self.items.finish();
        self.payments.finish();
    }
}

/// Debug: the process's resident memory now and at its peak (Linux).
fn log_memory(after: &str) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    tracing::debug!(
        rss = field("VmRSS:"),
        peak = field("VmHWM:"),
        "memory after {after}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_every_order_id_once() {
        let chunks = plan_chunks(10, 95, 20);
        assert_eq!(chunks.len(), 5);
        assert_eq!(chunks[0], (i64::MIN, 29));
        assert_eq!(chunks[1], (30, 49));
        assert_eq!(chunks[4], (90, i64::MAX));
        for w in chunks.windows(2) {
            assert_eq!(w[0].1 + 1, w[1].0);
        }
        assert_eq!(plan_chunks(5, 5, 1000), vec![(i64::MIN, i64::MAX)]);
        assert_eq!(plan_chunks(0, 0, 1), vec![(i64::MIN, i64::MAX)]);
        let big = plan_chunks(1, i64::MAX - 1, i64::MAX / 4);
        assert!(big.len() <= 5);
    }
}
