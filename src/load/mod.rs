//! PostgreSQL writes: binary COPY into staging and fact tables, SCD1
//! upserts, the fact indexes around a bulk load, and the key maps read back
//! after the dimension upserts.
//!
//! Every write of a fact chunk (its rows, its rejects, its completion mark)
//! happens in one transaction, committed last; a lost connection rolls the
//! whole chunk back, so a rerun never sees half a chunk.

pub mod copy;
pub mod dims;
pub mod facts;
pub mod indexes;

use bytes::Bytes;
use futures::SinkExt;

use crate::schema::model::{ident_list, quote_ident, Dialect, ForeignKey, Table};
use crate::schema::DWH;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("PostgreSQL failed while {what}")]
    Postgres {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no PostgreSQL connection from the pool")]
    Pool(#[source] bb8::RunError<tokio_postgres::Error>),
}

impl LoadError {
    pub fn pg(what: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> LoadError {
        let what = what.into();
        move |source| LoadError::Postgres { what, source }
    }
}

/// `COPY <table> (<columns>) FROM STDIN (FORMAT binary)` of pre-encoded
/// bytes (see [`copy::CopyBuf`]). Returns the rows PostgreSQL counted.
pub async fn copy_in(
    client: &tokio_postgres::Transaction<'_>,
    table_sql: &str,
    columns: &[&str],
    data: Bytes,
) -> Result<u64, LoadError> {
    copy_bytes(client, table_sql, columns, data)
        .await
        .map_err(LoadError::pg(format!("copying into {table_sql}")))
}

/// [`copy_in`] on any client (in its transaction, if it is one), with the
/// driver's error: for callers with an error type of their own.
pub async fn copy_bytes<C: tokio_postgres::GenericClient>(
    client: &C,
    table_sql: &str,
    columns: &[&str],
    data: Bytes,
) -> Result<u64, tokio_postgres::Error> {
    copy_pieces(
        client,
        table_sql,
        columns,
        Rows::Plain,
        std::iter::once(data),
    )
    .await
}

/// How COPY writes its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rows {
    Plain,
    /// `FREEZE`: the rows go in frozen and their pages all-visible, so the
    /// first reads after the load (an index build, an `ANALYZE`, an
    /// analyst's query) do not dirty and write every page again to set
    /// hint bits. Only into a table created or truncated in the client's
    /// current transaction: PostgreSQL refuses it otherwise.
    Frozen,
}

/// [`copy_bytes`] of a stream made in pieces (the first starting with the
/// header, the last ending with the trailer), each encoded only when the
/// previous one is sent: no buffer of them all.
pub async fn copy_pieces<C: tokio_postgres::GenericClient>(
    client: &C,
    table_sql: &str,
    columns: &[&str],
    rows: Rows,
    pieces: impl IntoIterator<Item = Bytes>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client
        .client()
        .copy_in(&copy_sql(table_sql, columns, rows))
        .await?;
    futures::pin_mut!(sink);
    for piece in pieces {
        send(sink.as_mut(), piece).await?;
    }
    sink.finish().await
}

/// Sends `data` into an open COPY (see [`copy_sink`]) as messages of at
/// most [`MESSAGE_BYTES`] each.
pub async fn send(
    mut sink: std::pin::Pin<&mut tokio_postgres::CopyInSink<Bytes>>,
    data: Bytes,
) -> Result<(), tokio_postgres::Error> {
    for message in messages(data) {
        sink.as_mut().send(message).await?;
    }
    Ok(())
}

/// `data` as COPY data messages of at most [`MESSAGE_BYTES`] each.
fn messages(mut data: Bytes) -> impl Iterator<Item = Bytes> {
    std::iter::from_fn(move || {
        (!data.is_empty()).then(|| data.split_to(data.len().min(MESSAGE_BYTES)))
    })
}

/// The largest COPY data message sent. The driver copies each message into
/// its connection's write buffer, which keeps the largest size it ever held
/// for as long as the pooled connection lives: whole-chunk messages left
/// several MB on every connection (a tenth of a backfill's peak memory).
/// Splitting a `Bytes` copies nothing.
const MESSAGE_BYTES: usize = 256 * 1024;

/// `COPY <table> (<columns>) FROM STDIN (FORMAT binary[, FREEZE])`.
fn copy_sql(table_sql: &str, columns: &[&str], rows: Rows) -> String {
    format!(
        "COPY {table_sql} ({}) FROM STDIN (FORMAT binary{})",
        ident_list(Dialect::Postgres, columns),
        if rows == Rows::Frozen { ", FREEZE" } else { "" }
    )
}

/// A warehouse table, schema-qualified.
pub fn qualified(table: &Table) -> String {
    DWH.qualified(table.name)
}

/// Runs `statements` as one batch (nothing when there is none); `what`
/// names the work in the error.
pub async fn execute_all<C: tokio_postgres::GenericClient>(
    client: &C,
    statements: &[String],
    what: impl Into<String>,
) -> Result<(), LoadError> {
    if statements.is_empty() {
        return Ok(());
    }
    client
        .batch_execute(&statements.join(";\n"))
        .await
        .map_err(LoadError::pg(what))
}

/// `ALTER TABLE … DROP CONSTRAINT IF EXISTS fk_…`, one per foreign key of
/// `table` (a bulk load's: the facts', a dimension's first load).
pub fn drop_foreign_keys_sql(table: &Table) -> Vec<String> {
    table
        .foreign_keys
        .iter()
        .map(|fk| {
            format!(
                "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                qualified(table),
                quote_ident(Dialect::Postgres, &table.fk_name(fk))
            )
        })
        .collect()
}

/// `ALTER TABLE … ADD CONSTRAINT fk_… FOREIGN KEY …`, validated or
/// `NOT VALID` (enforced on later writes only).
pub fn add_foreign_key_sql(table: &Table, fk: &ForeignKey, validated: bool) -> String {
    format!(
        "ALTER TABLE {} ADD {}{}",
        qualified(table),
        crate::schema::postgres::foreign_key_constraint(&DWH, table, fk),
        if validated { "" } else { " NOT VALID" }
    )
}

/// An open binary COPY into `table_sql`, for streaming several buffers
/// (the first must start with the COPY header, the last end with the
/// trailer: see [`copy::CopyBuf::take`] and [`copy::CopyBuf::finish`]).
pub async fn copy_sink(
    client: &tokio_postgres::Transaction<'_>,
    table_sql: &str,
    columns: &[&str],
) -> Result<tokio_postgres::CopyInSink<Bytes>, LoadError> {
    client
        .copy_in(&copy_sql(table_sql, columns, Rows::Plain))
        .await
        .map_err(LoadError::pg(format!("copying into {table_sql}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_bounded_and_add_up_to_the_data() {
        let data: Vec<u8> = (0..(2 * MESSAGE_BYTES + 17)).map(|i| i as u8).collect();
        let parts: Vec<Bytes> = messages(Bytes::from(data.clone())).collect();
        assert_eq!(
            parts.iter().map(Bytes::len).collect::<Vec<_>>(),
            [MESSAGE_BYTES, MESSAGE_BYTES, 17]
        );
        assert_eq!(parts.concat(), data);
        assert_eq!(messages(Bytes::from_static(b"PGCOPY")).count(), 1);
        assert_eq!(messages(Bytes::new()).count(), 0);
    }
}
