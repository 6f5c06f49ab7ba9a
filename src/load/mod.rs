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

use crate::schema::model::{ident_list, Dialect, Table};
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
    copy_pieces(client, table_sql, columns, std::iter::once(data)).await
}

/// [`copy_bytes`] of a stream made in pieces (the first starting with the
/// header, the last ending with the trailer), each encoded only when the
/// previous one is sent: no buffer of them all.
pub async fn copy_pieces<C: tokio_postgres::GenericClient>(
    client: &C,
    table_sql: &str,
    columns: &[&str],
    pieces: impl IntoIterator<Item = Bytes>,
) -> Result<u64, tokio_postgres::Error> {
    let sql = format!(
        "COPY {table_sql} ({}) FROM STDIN (FORMAT binary)",
        ident_list(Dialect::Postgres, columns)
    );
    let sink = client.client().copy_in(&sql).await?;
    futures::pin_mut!(sink);
    for piece in pieces {
        sink.send(piece).await?;
    }
    sink.finish().await
}

/// A warehouse table, schema-qualified.
pub fn qualified(table: &Table) -> String {
    DWH.qualified(table.name)
}

/// An open binary COPY into `table_sql`, for streaming several buffers
/// (the first must start with the COPY header, the last end with the
/// trailer: see [`copy::CopyBuf::take`] and [`copy::CopyBuf::finish`]).
pub async fn copy_sink(
    client: &tokio_postgres::Transaction<'_>,
    table_sql: &str,
    columns: &[&str],
) -> Result<tokio_postgres::CopyInSink<Bytes>, LoadError> {
    let sql = format!(
        "COPY {table_sql} ({}) FROM STDIN (FORMAT binary)",
        ident_list(Dialect::Postgres, columns)
    );
    client
        .copy_in(&sql)
        .await
        .map_err(LoadError::pg(format!("copying into {table_sql}")))
}
