//! `salesdwh sync`: the incremental load (SPEC §4), for the nightly job.
//!
//! One MySQL snapshot, one PostgreSQL transaction:
//!
//! 1. Take the run lock (the same session runs the transaction), open an
//!    etl_runs row, read the watermarks, open a consistent MySQL snapshot
//!    and read each table's high mark `(updated_at, pk)` in it.
//! 2. Per table, keyset-read the rows after `watermark - lookback` in
//!    `(updated_at, pk)` order, one page at a time (ties never split: the
//!    cursor is the full pair, at microsecond precision).
//! 3. Dimensions: stage the changed rows, note which are new (they may
//!    resolve references loaded as -1: their dependants are re-read), merge
//!    (SCD1, only rows that differ). Changed products restate cost, margin
//!    and category of their fact rows in PostgreSQL.
//! 4. Facts: the orders to re-derive are the changed orders, the orders of
//!    changed items and payments, of open rejects (retried every run), of
//!    new customers, employees and regions, and of restatements that would
//!    overflow. Each such order's items and payments are read whole and
//!    transformed exactly as backfill does; the result is staged and merged
//!    (rows that differ), the order's vanished or now-rejected rows deleted,
//!    rejects that load now (or left the source) released.
//! 5. Watermarks := the snapshot's high marks; if any data row changed, the
//!    marts take the difference of the orders captured before their fact
//!    rows changed (`marts`); commit. Then the run is closed.
//!
//! A crash anywhere before the commit leaves the warehouse as it was; the
//! rerun does the same work again. Re-reading a row changes nothing unless
//! its warehouse rows differ, so the lookback overlap is harmless and a
//! sync without source changes writes nothing but its etl_runs row.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_postgres::Transaction;

use super::PipelineError;
use crate::config::Settings;
use crate::connect;
use crate::extract::{
    self, Batches, Category, Customer, Employee, FactChunk, Keyset, Order, OrderItem, Payment,
    Product, Region, Snapshot, SourceRow,
};
use crate::load::copy::CopyBuf;
use crate::load::facts::{self as load_facts, Applied, Target};
use crate::load::{dims as load_dims, LoadError};
use crate::progress::Board;
use crate::schema::dwh::{DIM_CATEGORY, DIM_CUSTOMER, DIM_EMPLOYEE, DIM_PRODUCT, DIM_REGION};
use crate::schema::model::Table;
use crate::schema::{oltp, OLTP};
use crate::state::{self, Watermark};
use crate::transform::facts::{self as tfacts, FactContext};
use crate::transform::{dims as tdims, RunStats, TableStats};

use super::{date_key, day_micros, DAY_MICROS};

#[derive(Debug, Clone)]
pub struct SyncOptions {
    /// Rows per keyset page; a fact chunk holds about a quarter as many orders.
    pub batch_rows: u64,
    /// MySQL sessions reading re-derived orders side by side.
    pub workers: usize,
    pub lookback_secs: u64,
    pub refresh_marts: bool,
    /// Also re-derive every order dated in this window (UTC days,
    /// inclusive), changed or not.
    pub window: Option<crate::cli::Window>,
    /// Also re-derive these orders (`verify --repair`).
    pub orders: Vec<i64>,
    pub quiet: bool,
}

#[derive(Debug, Default)]
pub struct SyncReport {
    pub run_id: i64,
    pub stats: RunStats,
    /// Dimension rows inserted or changed (category names of products included).
    pub dims_changed: u64,
    /// Orders whose fact rows were re-derived.
    pub orders: u64,
    /// Of those, the ones dated in `--from/--to` (source or warehouse).
    pub window_orders: Option<u64>,
    /// fact_sales rows restated for a product's new cost or category.
    pub restated: u64,
    pub applied: Applied,
    pub marts: crate::marts::Upkeep,
    pub phases: Vec<(&'static str, Duration)>,
    pub elapsed: Duration,
}

impl SyncReport {
    /// Whether any warehouse data row changed.
    pub fn changed_data(&self) -> bool {
        self.dims_changed + self.restated + self.applied.total() > 0
    }
}

/// Runs one sync. The caller prints the report.
pub async fn run(settings: &Settings, opts: &SyncOptions) -> Result<SyncReport, PipelineError> {
    let started = Instant::now();
    let mut client = connect::pg_client(&settings.postgres, settings.connect_timeout).await?;
    state::lock(&client).await?;
    crate::marts::check_revision(&client)
        .await
        .map_err(PipelineError::NotSetUp)?;
    state::close_abandoned_runs(&client).await?;
    if state::backfill_state(&client).await?.is_some() {
        return Err(PipelineError::BackfillUnfinished);
    }
    let run_id = state::start_run(&client, "sync").await?;
    let mut stats = RunStats::default();
    // Ctrl-C or SIGTERM drops the run where it is: its one transaction
    // rolls back.
    let result = super::or_stopped(body(settings, opts, &mut client, run_id, &mut stats)).await;
    match result {
        Ok(mut report) => {
            state::end_run(&client, run_id, &stats, None).await?;
            report.run_id = run_id;
            report.stats = stats;
            report.elapsed = started.elapsed();
            Ok(report)
        }
        Err(e) => {
            if let PipelineError::Stopped(_) = e {
                state::cancel_own_statement(&client).await;
            }
            // Best effort: the connection may be what failed; the next run
            // closes abandoned runs either way.
            let _ = state::end_run(
                &client,
                run_id,
                &stats,
                Some(&crate::error::cause_chain(&e)),
            )
            .await;
            Err(e)
        }
    }
}

async fn body(
    settings: &Settings,
    opts: &SyncOptions,
    client: &mut tokio_postgres::Client,
    run_id: i64,
    stats: &mut RunStats,
) -> Result<SyncReport, PipelineError> {
    let mut report = SyncReport::default();
    let mut phase_start = Instant::now();
    let marks = state::watermarks(&*client).await?;
    // Several sessions on one snapshot: re-derived orders are read by
    // `workers` of them side by side (random reads by order_id dominate).
    let mut snapshot =
        Snapshot::open(&settings.mysql, settings.connect_timeout, opts.workers).await?;
    let now = Utc::now().timestamp_micros();
    let conn = &mut snapshot.readers[0];
    let mut highs = Vec::new();
    for table in OLTP.tables {
        if let Some((updated_at, id)) = extract::high_mark(conn, table).await? {
            highs.push((table.name.to_string(), Watermark { updated_at, id }));
        }
    }
    let lookback = i64::try_from(opts.lookback_secs)
        .unwrap_or(i64::MAX / 1_000_000)
        .saturating_mul(1_000_000);
    let start = |table: &Table| -> (i64, i64) {
        match marks.get(table.name) {
            Some(w) if lookback == 0 => (w.updated_at, w.id),
            Some(w) => (w.updated_at.saturating_sub(lookback), i64::MIN),
            None => (i64::MIN, i64::MIN),
        }
    };
    let batch = opts.batch_rows.clamp(1, 100_000) as usize;
    let tx = client
        .transaction()
        .await
        .map_err(LoadError::pg("starting the sync transaction"))?;
    // The staging tables have no statistics, and a sync touches a sliver of
    // tables that sit in the OS cache: priced at the default 4, the
    // planner trades a few thousand index probes for a scan of the whole
    // fact table. The sorts of the marts upkeep fit in 64 MB.
    tx.batch_execute("SET LOCAL random_page_cost = 1.1; SET LOCAL work_mem = '64MB'")
        .await
        .map_err(LoadError::pg("setting up the sync transaction"))?;

    // ---- dimensions
    let regions = sync_dim::<Region>(
        conn,
        &tx,
        &DIM_REGION,
        start(&oltp::REGIONS),
        Vec::new(),
        batch,
        stats.table(oltp::REGIONS.name),
        |rows, buf, _| tdims::regions(rows, buf),
    )
    .await?;
    let categories = sync_categories(
        conn,
        &tx,
        start(&oltp::CATEGORIES),
        batch,
        stats.table(oltp::CATEGORIES.name),
    )
    .await?;
    let keys = load_dims::read_keys_of(&tx, false).await?;
    let extra = read_if::<Product>(conn, "category_id", &categories.new_ids).await?;
    let products = sync_dim::<Product>(
        conn,
        &tx,
        &DIM_PRODUCT,
        start(&oltp::PRODUCTS),
        extra,
        batch,
        stats.table(oltp::PRODUCTS.name),
        |rows, buf, _| tdims::products(rows, &keys, buf),
    )
    .await?;
    let extra = read_if::<Customer>(conn, "region_id", &regions.new_ids).await?;
    let customers = sync_dim::<Customer>(
        conn,
        &tx,
        &DIM_CUSTOMER,
        start(&oltp::CUSTOMERS),
        extra,
        batch,
        stats.table(oltp::CUSTOMERS.name),
        |rows, buf, st| tdims::customers(rows, &keys, buf, st),
    )
    .await?;
    let extra = read_if::<Employee>(conn, "region_id", &regions.new_ids).await?;
    let employees = sync_dim::<Employee>(
        conn,
        &tx,
        &DIM_EMPLOYEE,
        start(&oltp::EMPLOYEES),
        extra,
        batch,
        stats.table(oltp::EMPLOYEES.name),
        |rows, buf, st| tdims::employees(rows, &keys, buf, st),
    )
    .await?;
    report.dims_changed =
        regions.merged + categories.merged + products.merged + customers.merged + employees.merged;
    if opts.refresh_marts {
        // Before their rows change: the marts take the difference.
        crate::marts::capture_products(&tx, &products.changed_ids)
            .await
            .map_err(PipelineError::Marts)?;
    }
    let (restated, overflow) = load_facts::restate_products(&tx, &products.changed_ids).await?;
    report.restated = restated;
    tracing::info!(
        "sync: dimensions merged ({} rows changed, {restated} fact rows restated)",
        report.dims_changed
    );
    report.phases.push(("dimensions", phase_start.elapsed()));
    phase_start = Instant::now();

    // ---- which orders to re-derive
    let mut orders: BTreeSet<i64> = overflow.into_iter().collect();
    let facts = [&oltp::ORDERS, &oltp::ORDER_ITEMS, &oltp::PAYMENTS];
    let scans: Vec<(&'static Table, (i64, i64))> = facts.iter().map(|t| (*t, start(t))).collect();
    let t = Instant::now();
    let found = changed_orders(&mut snapshot.readers, &scans, batch).await?;
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        "read the changed rows of the fact tables"
    );
    for ((table, _), (refs, rows)) in scans.iter().zip(found) {
        stats.table(table.name).changed += rows;
        orders.extend(refs);
    }
    let conn = &mut snapshot.readers[0];
    // Open rejects are retried: their orders are re-derived; a reject whose
    // row left the source is released.
    let open_items = load_facts::open_rejects(&tx, oltp::ORDER_ITEMS.name).await?;
    let found: Vec<OrderItem> = read_if(conn, "order_item_id", &open_items).await?;
    orders.extend(found.iter().map(|i| i.order_id));
    let open_payments = load_facts::open_rejects(&tx, oltp::PAYMENTS.name).await?;
    let found: Vec<Payment> = read_if(conn, "payment_id", &open_payments).await?;
    orders.extend(found.iter().map(|p| p.order_id));
    // Orders that referenced a customer, employee or region before it
    // existed were loaded with -1: a fresh backfill would resolve them now.
    for (column, ids) in [
        ("customer_id", &customers.new_ids),
        ("employee_id", &employees.new_ids),
        ("region_id", &regions.new_ids),
    ] {
        let found: Vec<Order> = read_if(conn, column, ids).await?;
        orders.extend(found.iter().map(|o| o.order_id));
    }
    if let Some((from, to)) = opts.window {
        // What the source dates in the window, and what the warehouse does:
        // an order deleted at the source, or moved out of the window, is
        // only found on the warehouse's side. Its rows then go.
        let mut dated: BTreeSet<i64> = extract::orders_dated(
            conn,
            day_micros(from),
            day_micros(to).saturating_add(DAY_MICROS - 1),
        )
        .await?
        .into_iter()
        .collect();
        dated.extend(load_facts::orders_dated(&tx, date_key(from), date_key(to)).await?);
        report.window_orders = Some(dated.len() as u64);
        orders.extend(dated);
    }
    orders.extend(opts.orders.iter().copied());
    let orders: Vec<i64> = orders.into_iter().collect();
    report.orders = orders.len() as u64;
    tracing::info!("sync: {} orders to re-derive", orders.len());

    // ---- facts
    load_facts::create_staging(&tx).await?;
    let mut rejected_items: HashSet<i64> = HashSet::new();
    let mut rejected_payments: HashSet<i64> = HashSet::new();
    if !orders.is_empty() {
        let t = Instant::now();
        // Customer and product keys are read per chunk, for the rows it
        // references: the cost follows the change, not the dimensions.
        let small_keys = load_dims::read_small_keys(&tx).await?;
        tracing::debug!(ms = t.elapsed().as_millis() as u64, "read the key maps");
        let covered = load_facts::dim_date_range(&tx).await?;
        let board = Board::new(opts.quiet);
        let bar = board.bar("orders", orders.len() as u64);
        // Enough chunks to keep every reader busy, none above batch/4 orders.
        let readers = std::mem::take(&mut snapshot.readers);
        let per_chunk = (batch / 4)
            .min(orders.len().div_ceil(readers.len().max(1)))
            .max(extract::IN_LIST);
        let parts: VecDeque<Vec<i64>> = orders.chunks(per_chunk).map(<[i64]>::to_vec).collect();
        let queue = Arc::new(Mutex::new(parts));
        let (sender, mut chunks) = mpsc::channel::<(Vec<i64>, FactChunk, u64)>(readers.len());
        let mut tasks: JoinSet<Result<(), PipelineError>> = JoinSet::new();
        for mut reader in readers {
            let queue = queue.clone();
            let sender = sender.clone();
            tasks.spawn(async move {
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                    let Some(part) = next else { break };
                    let t = Instant::now();
                    let chunk = extract::read_orders(&mut reader, &part).await?;
                    let read_ms = t.elapsed().as_millis() as u64;
                    if sender.send((part, chunk, read_ms)).await.is_err() {
                        break; // the stager stopped: its error is reported
                    }
                }
                let _ = reader.disconnect().await;
                Ok(())
            });
        }
        drop(sender);
        // While MySQL reads: the orders to re-derive, and their fact rows now.
        let t = Instant::now();
        load_facts::stage_orders(&tx, &orders).await?;
        load_facts::read_prior(&tx).await?;
        tracing::debug!(
            ms = t.elapsed().as_millis() as u64,
            "read the current fact rows of the orders"
        );
        let staged: Result<(), PipelineError> = async {
            while let Some((part, chunk, read_ms)) = chunks.recv().await {
                let t = Instant::now();
                let customers: BTreeSet<i64> = chunk.orders.iter().map(|o| o.customer_id).collect();
                let products: BTreeSet<i64> = chunk.items.iter().map(|i| i.product_id).collect();
                let keys = load_dims::keys_for(
                    &tx,
                    &small_keys,
                    &customers.into_iter().collect::<Vec<_>>(),
                    &products.into_iter().collect::<Vec<_>>(),
                )
                .await?;
                let ctx = FactContext::new(Arc::new(keys), now + DAY_MICROS, None);
                let out = tokio::task::spawn_blocking(move || tfacts::transform(&chunk, &ctx))
                    .await
                    .map_err(|e| PipelineError::Task(e.to_string()))??;
                let transform_ms = t.elapsed().as_millis() as u64;
                let t = Instant::now();
                rejected_items.extend(out.item_rejects.iter().map(|r| r.source_pk));
                rejected_payments.extend(out.payment_rejects.iter().map(|r| r.source_pk));
                stats.add(&out.stats);
                load_facts::write_chunk(&tx, out, run_id, covered, Target::Staging).await?;
                bar.inc(part.len() as u64);
                tracing::debug!(
                    orders = part.len(),
                    read_ms,
                    transform_ms,
                    stage_ms = t.elapsed().as_millis() as u64,
                    "staged a chunk of re-derived orders"
                );
            }
            Ok(())
        }
        .await;
        drop(chunks);
        let mut read = Ok(());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => read = read.and(Err(e)),
                Err(e) => read = read.and(Err(PipelineError::Task(e.to_string()))),
            }
        }
        staged?;
        read?;
        bar.finish();
    } else {
        load_facts::read_prior(&tx).await?;
    }
    let released = [
        (
            oltp::ORDER_ITEMS.name,
            open_items
                .into_iter()
                .filter(|pk| !rejected_items.contains(pk))
                .collect::<Vec<i64>>(),
        ),
        (
            oltp::PAYMENTS.name,
            open_payments
                .into_iter()
                .filter(|pk| !rejected_payments.contains(pk))
                .collect(),
        ),
    ];
    let t = Instant::now();
    let changed = load_facts::compare_staged(&tx).await?;
    if opts.refresh_marts {
        // Only the orders whose rows change: the lookback window re-derives
        // many that do not, and each captured order costs the marts work.
        crate::marts::capture(&tx, &changed)
            .await
            .map_err(PipelineError::Marts)?;
    }
    report.applied = load_facts::apply_staged(&tx, run_id, &released).await?;
    tracing::debug!(
        ms = t.elapsed().as_millis() as u64,
        "applied the staged facts"
    );
    tracing::info!(
        "sync: facts applied ({} rows upserted, {} deleted, {} rejects released)",
        report.applied.upserted,
        report.applied.deleted,
        report.applied.released
    );
    report.phases.push(("facts", phase_start.elapsed()));
    phase_start = Instant::now();

    // ---- watermarks, marts, commit
    state::set_watermarks(&tx, &highs).await?;
    if report.changed_data() {
        report.marts = if opts.refresh_marts {
            crate::marts::apply_changes(&tx, categories.merged > 0).await
        } else {
            crate::marts::mark_stale(&tx).await
        }
        .map_err(PipelineError::Marts)?;
    }
    // The lock's session is this transaction's: if it is gone, so is the
    // transaction, and the commit fails.
    super::last_commit_under_way();
    tx.commit()
        .await
        .map_err(LoadError::pg("committing the sync"))?;
    tracing::info!("sync: committed");
    drop(snapshot);
    report.phases.push(("marts", phase_start.elapsed()));
    Ok(report)
}

/// What syncing one dimension did.
#[derive(Debug, Default)]
struct DimDelta {
    /// Natural keys of the rows inserted or changed.
    changed_ids: Vec<i64>,
    /// Those the warehouse did not hold before.
    new_ids: Vec<i64>,
    /// Rows inserted or changed.
    merged: u64,
}

/// `read_where`, skipped when there are no ids.
pub(super) async fn read_if<T: SourceRow>(
    conn: &mut mysql_async::Conn,
    column: &'static str,
    ids: &[i64],
) -> Result<Vec<T>, PipelineError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(extract::read_where(conn, column, ids).await?)
}

/// Stages a dimension's changed rows (plus `extra` rows, read for another
/// reason) and merges them.
#[allow(clippy::too_many_arguments)]
async fn sync_dim<T: SourceRow>(
    conn: &mut mysql_async::Conn,
    tx: &Transaction<'_>,
    table: &Table,
    after: (i64, i64),
    extra: Vec<T>,
    batch: usize,
    stats: &mut TableStats,
    mut encode: impl FnMut(&[T], &mut CopyBuf, &mut TableStats),
) -> Result<DimDelta, PipelineError> {
    load_dims::create_staging(tx, table).await?;
    let mut delta = DimDelta::default();
    let extra_ids: HashSet<i64> = extra.iter().map(|r| r.cursor().1).collect();
    let mut stage = |rows: Vec<T>, stats: &mut TableStats| {
        stats.read += rows.len() as u64;
        let mut buf = CopyBuf::new();
        encode(&rows, &mut buf, stats);
        buf.finish()
    };
    let mut any = !extra.is_empty();
    if any {
        let data = stage(extra, stats);
        stats.loaded += load_dims::stage(tx, table, data).await?;
    }
    let mut keyset = Keyset::<T>::after(after, batch);
    while let Some(page) = keyset.next(conn).await? {
        stats.changed += page.len() as u64;
        // A row read for both reasons is staged once (a merge may not
        // touch a row twice).
        let rows: Vec<T> = page
            .into_iter()
            .filter(|r| !extra_ids.contains(&r.cursor().1))
            .collect();
        if rows.is_empty() {
            continue;
        }
        any = true;
        let data = stage(rows, stats);
        stats.loaded += load_dims::stage(tx, table, data).await?;
    }
    if any {
        delta.new_ids = load_dims::new_keys(tx, table).await?;
        delta.changed_ids = load_dims::merge_changed(tx, table).await?;
        delta.merged = delta.changed_ids.len() as u64;
    }
    Ok(delta)
}

/// Categories: when any changed, all are staged (a child's parent_name
/// follows its parent; the tree is small), and product rows take renamed
/// categories' names.
async fn sync_categories(
    conn: &mut mysql_async::Conn,
    tx: &Transaction<'_>,
    after: (i64, i64),
    batch: usize,
    stats: &mut TableStats,
) -> Result<DimDelta, PipelineError> {
    let mut delta = DimDelta::default();
    let mut keyset = Keyset::<Category>::after(after, batch);
    let mut changed = 0;
    while let Some(page) = keyset.next(conn).await? {
        changed += page.len();
    }
    stats.changed += changed as u64;
    if changed == 0 {
        return Ok(delta);
    }
    let mut all: Vec<Category> = Vec::new();
    {
        let mut batches = Batches::<Category>::open(conn, batch).await?;
        while let Some(rows) = batches.next().await? {
            all.extend(rows);
        }
    }
    stats.read += all.len() as u64;
    let mut buf = CopyBuf::new();
    tdims::categories(&all, &all, &mut buf);
    load_dims::create_staging(tx, &DIM_CATEGORY).await?;
    stats.loaded += load_dims::stage(tx, &DIM_CATEGORY, buf.finish()).await?;
    delta.new_ids = load_dims::new_keys(tx, &DIM_CATEGORY).await?;
    delta.changed_ids = load_dims::merge_changed(tx, &DIM_CATEGORY).await?;
    delta.merged = delta.changed_ids.len() as u64;
    delta.merged += load_dims::restate_category_names(tx).await?;
    Ok(delta)
}

/// The orders of each fact table's rows changed after its cursor, and how
/// many rows that was, read side by side: one table per reader session
/// (all on one snapshot), round robin when there are fewer readers.
async fn changed_orders(
    readers: &mut [mysql_async::Conn],
    scans: &[(&'static Table, (i64, i64))],
    batch: usize,
) -> Result<Vec<(Vec<i64>, u64)>, PipelineError> {
    let lanes = readers.len().min(scans.len()).max(1);
    let jobs = readers
        .iter_mut()
        .take(lanes)
        .enumerate()
        .map(|(lane, conn)| async move {
            let mut out = Vec::new();
            for (i, (table, after)) in scans.iter().enumerate().skip(lane).step_by(lanes) {
                out.push((
                    i,
                    extract::changed_refs(conn, table, "order_id", *after, batch).await?,
                ));
            }
            Ok::<_, extract::ExtractError>(out)
        });
    let mut found: Vec<(Vec<i64>, u64)> = vec![(Vec::new(), 0); scans.len()];
    for (i, result) in futures::future::try_join_all(jobs)
        .await?
        .into_iter()
        .flatten()
    {
        found[i] = result;
    }
    Ok(found)
}
