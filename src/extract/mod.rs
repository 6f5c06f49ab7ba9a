//! MySQL reads for backfill and sync. Correctness argument first:
//!
//! * **One snapshot.** A backfill reads every table inside
//!   `START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY` at REPEATABLE
//!   READ. With several readers, each opens its snapshot while one extra
//!   session holds `LOCK TABLES … READ` on the eight tables, so no write can
//!   commit between the snapshots: all readers see the same database. The
//!   lock is held for milliseconds (like `mysqldump --single-transaction`).
//! * **UTC.** Every session runs with `time_zone = '+00:00'` (see
//!   `connect::mysql_opts`), so DATETIME values are read as the UTC they are.
//! * **Streamed.** Rows come through `exec_stream` and are handed on in
//!   batches; no table is collected whole. Facts are read by order_id range
//!   (orders, their items and their payments are three range scans; items
//!   and payments by their primary-key span where it is dense, see
//!   [`access`]), and the join happens in memory in `transform`, which is
//!   several times faster than a MySQL-side join here.
//! * **Identifiers from the model.** Every SELECT lists the model's columns
//!   of the table, in model order, and the row parsers read them by that
//!   position (a unit test ties the two together).

pub mod rows;
pub mod value;

use futures::StreamExt;
use mysql_async::prelude::Queryable;
use mysql_async::{BinaryProtocol, Conn, ResultSetStream, Row};

use crate::config::DbEndpoint;
use crate::connect::{self, ConnectError};
use crate::schema::model::{ident_list, quote_ident, Dialect, Table};
use crate::schema::{oltp, OLTP};
pub use rows::{
    Category, Customer, Employee, FactChunk, Order, OrderItem, Payment, Product, Region, SourceRow,
};
pub use value::{Ts, ValueError};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("reading {what} from MySQL failed")]
    Query {
        what: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("cannot open a consistent snapshot of MySQL: {reason}")]
    Snapshot { reason: String },
    #[error("reading {table} from MySQL: row {pk}: {source}")]
    Value {
        table: &'static str,
        pk: String,
        #[source]
        source: ValueError,
    },
}

fn query_failed(what: impl Into<String>) -> impl FnOnce(mysql_async::Error) -> ExtractError {
    let what = what.into();
    move |source| ExtractError::Query { what, source }
}

/// `SELECT <model columns> FROM <table>` plus a WHERE/ORDER tail.
pub fn select_sql(table: &Table, tail: &str) -> String {
    let columns: Vec<&str> = table.column_names().collect();
    format!(
        "SELECT {} FROM {}{}{}",
        ident_list(Dialect::MySql, &columns),
        quote_ident(Dialect::MySql, table.name),
        if tail.is_empty() { "" } else { " " },
        tail
    )
}

/// The primary-key column of a source table (all are single-column).
pub fn pk_column(table: &Table) -> &'static str {
    table.primary_key[0]
}

/// Sessions reading one consistent snapshot of the source.
pub struct Snapshot {
    pub readers: Vec<Conn>,
}

impl Snapshot {
    /// Opens `readers` sessions on one snapshot. With more than one reader
    /// the user needs the LOCK TABLES privilege; without it this falls back
    /// to a single reader (and says so), since a consistent result matters
    /// more than parallel reads.
    pub async fn open(
        endpoint: &DbEndpoint,
        timeout: std::time::Duration,
        readers: usize,
    ) -> Result<Snapshot, ExtractError> {
        let readers = readers.max(1);
        if readers == 1 {
            let mut conn = connect::mysql_conn(endpoint, timeout).await?;
            begin_snapshot(&mut conn).await?;
            return Ok(Snapshot {
                readers: vec![conn],
            });
        }
        let mut locker = connect::mysql_conn(endpoint, timeout).await?;
        let tables: Vec<String> = OLTP
            .tables
            .iter()
            .map(|t| format!("{} READ", quote_ident(Dialect::MySql, t.name)))
            .collect();
        if let Err(e) = locker
            .query_drop(format!("LOCK TABLES {}", tables.join(", ")))
            .await
        {
            if let mysql_async::Error::Server(ref s) = e {
                // 1044/1142: access denied (no LOCK TABLES privilege).
                if s.code == 1044 || s.code == 1142 {
                    tracing::warn!(
                        "no LOCK TABLES privilege on the source: reading with one connection (grant LOCK TABLES for parallel reads)"
                    );
                    drop(locker);
                    return Box::pin(Self::open(endpoint, timeout, 1)).await;
                }
            }
            return Err(query_failed("a table lock for the snapshot")(e));
        }
        let mut conns = Vec::with_capacity(readers);
        for _ in 0..readers {
            let mut conn = connect::mysql_conn(endpoint, timeout).await?;
            begin_snapshot(&mut conn).await?;
            conns.push(conn);
        }
        locker
            .query_drop("UNLOCK TABLES")
            .await
            .map_err(query_failed("unlocking the snapshot tables"))?;
        drop(locker);
        Ok(Snapshot { readers: conns })
    }
}

async fn begin_snapshot(conn: &mut Conn) -> Result<(), ExtractError> {
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(query_failed("the isolation level"))?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await
        .map_err(query_failed("a consistent snapshot"))
}

/// The highest `(updated_at, pk)` of a table, read through its
/// `(updated_at, pk)` index; `None` for an empty table.
pub async fn high_mark(conn: &mut Conn, table: &Table) -> Result<Option<(i64, i64)>, ExtractError> {
    let pk = quote_ident(Dialect::MySql, pk_column(table));
    let sql = format!(
        "SELECT `updated_at`, {pk} FROM {} ORDER BY `updated_at` DESC, {pk} DESC LIMIT 1",
        quote_ident(Dialect::MySql, table.name)
    );
    let row: Option<(mysql_async::Value, i64)> = conn
        .query_first(sql)
        .await
        .map_err(query_failed(format!("the high mark of {}", table.name)))?;
    match row {
        None => Ok(None),
        Some((ts, id)) => match value::timestamp(ts, "updated_at") {
            Ok(Ts::At(us)) => Ok(Some((us, id))),
            Ok(other) => Err(ExtractError::Value {
                table: table.name,
                pk: id.to_string(),
                source: ValueError {
                    column: "updated_at",
                    value: format!("{other:?}"),
                },
            }),
            Err(source) => Err(ExtractError::Value {
                table: table.name,
                pk: id.to_string(),
                source,
            }),
        },
    }
}

/// The server's estimate of a table's rows (for progress bars only).
pub async fn estimated_rows(conn: &mut Conn, table: &Table) -> Result<u64, ExtractError> {
    let n: Option<Option<u64>> = conn
        .exec_first(
            "SELECT TABLE_ROWS FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            (table.name,),
        )
        .await
        .map_err(query_failed(format!("the size of {}", table.name)))?;
    Ok(n.flatten().unwrap_or(0))
}

/// The order_id span the fact tables cover: min and max over orders,
/// order_items and payments (orphans may lie outside the orders' span).
pub async fn order_id_span(conn: &mut Conn) -> Result<Option<(i64, i64)>, ExtractError> {
    let mut lo: Option<i64> = None;
    let mut hi: Option<i64> = None;
    for table in [&oltp::ORDERS, &oltp::ORDER_ITEMS, &oltp::PAYMENTS] {
        let sql = format!(
            "SELECT MIN(`order_id`), MAX(`order_id`) FROM {}",
            quote_ident(Dialect::MySql, table.name)
        );
        let row: Option<(Option<i64>, Option<i64>)> = conn
            .query_first(sql)
            .await
            .map_err(query_failed(format!("the order_id span of {}", table.name)))?;
        if let Some((Some(a), Some(b))) = row {
            lo = Some(lo.map_or(a, |x| x.min(a)));
            hi = Some(hi.map_or(b, |x| x.max(b)));
        }
    }
    Ok(lo.zip(hi))
}

/// Streams a whole (dimension) table in batches of parsed rows.
pub struct Batches<'c, T> {
    stream: ResultSetStream<'c, 'c, 'static, Row, BinaryProtocol>,
    table: &'static str,
    size: usize,
    _row: std::marker::PhantomData<T>,
}

impl<'c, T: SourceRow> Batches<'c, T> {
    pub async fn open(conn: &'c mut Conn, size: usize) -> Result<Self, ExtractError> {
        let table = T::TABLE;
        let stream = conn
            .exec_stream::<Row, _, _>(select_sql(table, ""), ())
            .await
            .map_err(query_failed(table.name))?;
        Ok(Batches {
            stream,
            table: table.name,
            size: size.max(1),
            _row: std::marker::PhantomData,
        })
    }

    /// The next batch, or `None` at the end of the table.
    pub async fn next(&mut self) -> Result<Option<Vec<T>>, ExtractError> {
        let mut batch = Vec::with_capacity(self.size.min(4096));
        while batch.len() < self.size {
            match self.stream.next().await {
                None => break,
                Some(row) => {
                    let row = row.map_err(query_failed(self.table))?;
                    batch.push(parse_row(row, self.table)?);
                }
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}

fn parse_row<T: SourceRow>(row: Row, table: &'static str) -> Result<T, ExtractError> {
    let values = row.unwrap();
    // The key is rendered only for the error: formatting it for every row
    // cost a few percent of a backfill's own CPU.
    let first = values.first().cloned();
    T::parse(values).map_err(|source| ExtractError::Value {
        table,
        pk: first.map(|v| v.as_sql(true)).unwrap_or_default(),
        source,
    })
}

async fn read_range<T: SourceRow>(
    conn: &mut Conn,
    lo: i64,
    hi: i64,
    out: &mut Vec<T>,
) -> Result<(), ExtractError> {
    let table = T::TABLE;
    let (access, rows) = access(conn, table, lo, hi).await?;
    // The span's count is the rows to come: no growing and copying.
    out.reserve(usize::try_from(rows).unwrap_or(0));
    let (sql, params): (String, Vec<mysql_async::Value>) = match access {
        Access::Empty => return Ok(()),
        Access::OrderId => (
            select_sql(table, "WHERE `order_id` BETWEEN ? AND ?"),
            vec![lo.into(), hi.into()],
        ),
        Access::PkSpan(first, last) => (
            select_sql(
                table,
                &format!(
                    "FORCE INDEX (PRIMARY) WHERE {} BETWEEN ? AND ? AND `order_id` BETWEEN ? AND ?",
                    quote_ident(Dialect::MySql, pk_column(table))
                ),
            ),
            vec![first.into(), last.into(), lo.into(), hi.into()],
        ),
    };
    let mut stream = conn
        .exec_stream::<Row, _, _>(sql, params)
        .await
        .map_err(query_failed(table.name))?;
    while let Some(row) = stream.next().await {
        let row = row.map_err(query_failed(table.name))?;
        out.push(parse_row(row, table.name)?);
    }
    Ok(())
}

/// How a chunk's rows of one table are read.
#[derive(Debug, PartialEq, Eq)]
enum Access {
    /// No row.
    Empty,
    /// `WHERE order_id BETWEEN lo AND hi` (for orders: their primary key).
    OrderId,
    /// A clustered scan of the primary keys `first..=last`, keeping the
    /// rows of orders `lo..=hi`.
    PkSpan(i64, i64),
}

/// Picks how to read `table`'s rows of orders `lo..=hi`. Reading order
/// lines or payments through their `order_id` index costs a primary-key
/// lookup per row: MariaDB here spends about 1.7 times as long as on a
/// clustered range scan of the same rows. Their primary-key span comes
/// from the `order_id` index alone (InnoDB secondary indexes hold the
/// primary key). Rows of other orders inside the span are filtered out, so
/// the rows read are the same whatever the ids look like; a span much
/// wider than its rows (lines added to old orders long after) keeps to the
/// `order_id` index.
/// Also returns the count of wanted rows (0 when not counted).
async fn access(
    conn: &mut Conn,
    table: &Table,
    lo: i64,
    hi: i64,
) -> Result<(Access, i64), ExtractError> {
    let pk = pk_column(table);
    if pk == "order_id" {
        return Ok((Access::OrderId, 0));
    }
    let sql = format!(
        "SELECT MIN({0}), MAX({0}), COUNT(*) FROM {1} WHERE `order_id` BETWEEN ? AND ?",
        quote_ident(Dialect::MySql, pk),
        quote_ident(Dialect::MySql, table.name)
    );
    let row: Option<(Option<i64>, Option<i64>, i64)> = conn
        .exec_first(sql, (lo, hi))
        .await
        .map_err(query_failed(format!("the {pk} span of {}", table.name)))?;
    Ok(match row {
        Some((Some(first), Some(last), rows)) => (access_for_span(first, last, rows), rows),
        _ => (Access::Empty, 0),
    })
}

/// A span is scanned whole when it holds at most four ids per wanted row.
fn access_for_span(first: i64, last: i64, rows: i64) -> Access {
    if i128::from(last) - i128::from(first) < 4 * i128::from(rows.max(1)) {
        Access::PkSpan(first, last)
    } else {
        Access::OrderId
    }
}

/// Reads orders, order items and payments whose order_id is in `lo..=hi`.
pub async fn read_fact_chunk(conn: &mut Conn, lo: i64, hi: i64) -> Result<FactChunk, ExtractError> {
    let mut chunk = FactChunk {
        lo,
        hi,
        ..FactChunk::default()
    };
    read_range(conn, lo, hi, &mut chunk.orders).await?;
    read_range(conn, lo, hi, &mut chunk.items).await?;
    read_range(conn, lo, hi, &mut chunk.payments).await?;
    Ok(chunk)
}

/// The ids of the orders whose `order_date` lies in `first..=last` (UTC
/// microseconds, both inclusive), through the `order_date` index.
pub async fn orders_dated(
    conn: &mut Conn,
    first: i64,
    last: i64,
) -> Result<Vec<i64>, ExtractError> {
    let table = &oltp::ORDERS;
    let sql = format!(
        "SELECT {} FROM {} WHERE `order_date` BETWEEN ? AND ?",
        quote_ident(Dialect::MySql, pk_column(table)),
        quote_ident(Dialect::MySql, table.name)
    );
    let what = || format!("the {} dated in the window", table.name);
    let mut stream = conn
        .exec_stream::<Row, _, _>(sql, (ts_param(first), ts_param(last)))
        .await
        .map_err(query_failed(what()))?;
    let mut ids = Vec::new();
    while let Some(row) = stream.next().await {
        let row = row.map_err(query_failed(what()))?;
        let id = row.as_ref(0).unwrap_or(&mysql_async::Value::NULL);
        ids.push(
            value::int(id, "order_id").map_err(|source| ExtractError::Value {
                table: table.name,
                pk: format!("{id:?}"),
                source,
            })?,
        );
    }
    Ok(ids)
}

/// A microsecond instant as a MySQL DATETIME(6) parameter (UTC sessions).
pub fn ts_param(us: i64) -> mysql_async::Value {
    use chrono::{Datelike, Timelike};
    match chrono::DateTime::from_timestamp_micros(us) {
        Some(t) => mysql_async::Value::Date(
            t.year().clamp(0, 9999) as u16,
            t.month() as u8,
            t.day() as u8,
            t.hour() as u8,
            t.minute() as u8,
            t.second() as u8,
            t.timestamp_subsec_micros(),
        ),
        None => mysql_async::Value::Date(1000, 1, 1, 0, 0, 0, 0),
    }
}

/// The keyset page query of a table: rows after `(updated_at, pk)` in
/// `(updated_at, pk)` order. The leading `updated_at >= ?` gives the
/// optimizer a range on the `(updated_at, pk)` index (a row-value
/// comparison alone is not a range for MariaDB); the OR settles ties.
/// Parameters: updated_at, updated_at, pk, limit.
pub fn keyset_sql(table: &Table) -> String {
    let pk = quote_ident(Dialect::MySql, pk_column(table));
    select_sql(
        table,
        &format!(
            "{} ORDER BY `updated_at`, {pk} LIMIT ?",
            keyset_filter(table)
        ),
    )
}

/// [`keyset_sql`] reading only the cursor and `column` (a column of the
/// model): `updated_at, pk, column`. Parameters as for `keyset_sql`.
pub fn keyset_refs_sql(table: &Table, column: &str) -> String {
    debug_assert!(table.column(column).is_some(), "{column} of {}", table.name);
    let pk = quote_ident(Dialect::MySql, pk_column(table));
    format!(
        "SELECT `updated_at`, {pk}, {} FROM {} {} ORDER BY `updated_at`, {pk} LIMIT ?",
        quote_ident(Dialect::MySql, column),
        quote_ident(Dialect::MySql, table.name),
        keyset_filter(table)
    )
}

/// `column` of every row of `table` changed after `after`, keyset page by
/// page, and how many rows that was. Sync needs only the orders of the
/// changed rows: for `orders` itself (column = pk) the `(updated_at, pk)`
/// index covers the read, and no row is parsed whole.
pub async fn changed_refs(
    conn: &mut Conn,
    table: &Table,
    column: &'static str,
    after: (i64, i64),
    size: usize,
) -> Result<(Vec<i64>, u64), ExtractError> {
    let size = size.max(1);
    let sql = keyset_refs_sql(table, column);
    let (mut ts, mut pk) = after;
    let mut refs = Vec::new();
    let mut read = 0u64;
    loop {
        let params = vec![
            ts_param(ts),
            ts_param(ts),
            mysql_async::Value::Int(pk),
            mysql_async::Value::UInt(size as u64),
        ];
        let rows: Vec<Row> = conn
            .exec(sql.as_str(), params)
            .await
            .map_err(query_failed(format!("changed rows of {}", table.name)))?;
        let n = rows.len();
        for row in rows {
            let mut values = row.unwrap().into_iter();
            let mut next = || values.next().unwrap_or(mysql_async::Value::NULL);
            let (at, id, reference) = (next(), next(), next());
            let bad = |source| ExtractError::Value {
                table: table.name,
                pk: id.as_sql(true),
                source,
            };
            ts = rows::updated_at(at).map_err(bad)?;
            pk = value::int(&id, pk_column(table)).map_err(bad)?;
            refs.push(value::int(&reference, column).map_err(bad)?);
        }
        read += n as u64;
        if n < size {
            return Ok((refs, read));
        }
    }
}

/// `COUNT(*)` of the rows after a cursor, through the same index and
/// predicate as [`keyset_sql`]. Parameters: updated_at, updated_at, pk.
pub fn keyset_count_sql(table: &Table) -> String {
    format!(
        "SELECT COUNT(*) FROM {} {}",
        quote_ident(Dialect::MySql, table.name),
        keyset_filter(table)
    )
}

fn keyset_filter(table: &Table) -> String {
    format!(
        "FORCE INDEX ({}) WHERE `updated_at` >= ? AND (`updated_at` > ? OR {} > ?)",
        quote_ident(Dialect::MySql, &keyset_index(table)),
        quote_ident(Dialect::MySql, pk_column(table))
    )
}

/// The `(updated_at, pk)` index of a source table. Named in the keyset
/// query so a small table or stale statistics never turn the read into a
/// full scan with a sort.
pub fn keyset_index(table: &Table) -> String {
    let index = table
        .indexes
        .iter()
        .find(|i| i.columns == ["updated_at", pk_column(table)])
        .expect("every source table has its (updated_at, pk) index");
    table.index_name(index)
}

/// Reads a table's rows changed after a cursor, one keyset page at a
/// time. Pages never split or repeat rows sharing an `updated_at`: the
/// cursor is the last row's full `(updated_at, pk)`.
pub struct Keyset<T> {
    after: (i64, i64),
    size: usize,
    done: bool,
    _row: std::marker::PhantomData<T>,
}

impl<T: SourceRow> Keyset<T> {
    /// Rows with `(updated_at, pk) > after`.
    pub fn after(after: (i64, i64), size: usize) -> Self {
        Keyset {
            after,
            size: size.max(1),
            done: false,
            _row: std::marker::PhantomData,
        }
    }

    /// The next page, or `None` when no row is left.
    pub async fn next(&mut self, conn: &mut Conn) -> Result<Option<Vec<T>>, ExtractError> {
        if self.done {
            return Ok(None);
        }
        let table = T::TABLE;
        let (ts, pk) = self.after;
        let params = vec![
            ts_param(ts),
            ts_param(ts),
            mysql_async::Value::Int(pk),
            mysql_async::Value::UInt(self.size as u64),
        ];
        let rows: Vec<Row> = conn
            .exec(keyset_sql(table), params)
            .await
            .map_err(query_failed(format!("changed rows of {}", table.name)))?;
        self.done = rows.len() < self.size;
        let page = rows
            .into_iter()
            .map(|r| parse_row::<T>(r, table.name))
            .collect::<Result<Vec<T>, _>>()?;
        match page.last() {
            Some(last) => {
                self.after = last.cursor();
                Ok(Some(page))
            }
            None => Ok(None),
        }
    }
}

/// Ids per `IN (…)` list: a fixed count, so one prepared statement serves.
pub const IN_LIST: usize = 500;

/// `SELECT <model columns> FROM <table> WHERE <column> IN (?, … IN_LIST)`.
pub fn in_list_sql(table: &Table, column: &str) -> String {
    debug_assert!(table.column(column).is_some(), "{column} of {}", table.name);
    let marks = vec!["?"; IN_LIST].join(", ");
    select_sql(
        table,
        &format!("WHERE {} IN ({marks})", quote_ident(Dialect::MySql, column)),
    )
}

/// The rows of `T` whose `column` (a column of the model) is one of `ids`.
pub async fn read_where<T: SourceRow>(
    conn: &mut Conn,
    column: &'static str,
    ids: &[i64],
) -> Result<Vec<T>, ExtractError> {
    let table = T::TABLE;
    let sql = in_list_sql(table, column);
    let mut out = Vec::new();
    for part in ids.chunks(IN_LIST) {
        // Pad with the last id: a repeated value in IN matches nothing new.
        let last = *part.last().expect("chunks are not empty");
        let params: Vec<mysql_async::Value> = (0..IN_LIST)
            .map(|i| mysql_async::Value::Int(part.get(i).copied().unwrap_or(last)))
            .collect();
        let mut stream = conn
            .exec_stream::<Row, _, _>(sql.as_str(), params)
            .await
            .map_err(query_failed(format!("{} by {column}", table.name)))?;
        while let Some(row) = stream.next().await {
            let row = row.map_err(query_failed(table.name))?;
            out.push(parse_row(row, table.name)?);
        }
    }
    Ok(out)
}

/// Orders, items and payments of the given orders (sorted ids).
pub async fn read_orders(conn: &mut Conn, order_ids: &[i64]) -> Result<FactChunk, ExtractError> {
    Ok(FactChunk {
        lo: order_ids.first().copied().unwrap_or(0),
        hi: order_ids.last().copied().unwrap_or(0),
        orders: read_where(conn, "order_id", order_ids).await?,
        items: read_where(conn, "order_id", order_ids).await?,
        payments: read_where(conn, "order_id", order_ids).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_spans_are_scanned_whole_and_sparse_ones_read_by_order() {
        // 100 lines with consecutive ids: their span.
        assert_eq!(access_for_span(1001, 1100, 100), Access::PkSpan(1001, 1100));
        // Up to four ids per row still is.
        assert_eq!(access_for_span(1, 400, 100), Access::PkSpan(1, 400));
        assert_eq!(access_for_span(1, 401, 100), Access::OrderId);
        // One line added to an old order much later.
        assert_eq!(access_for_span(5, 9_000_000, 3), Access::OrderId);
        // Extremes do not overflow.
        assert_eq!(access_for_span(i64::MIN, i64::MAX, 2), Access::OrderId);
        assert_eq!(access_for_span(7, 7, 1), Access::PkSpan(7, 7));
    }
}
