//! Streams generated TSV into MySQL: one `LOAD DATA LOCAL INFILE` per table,
//! each on its own connection, all running at once and each fed by a bounded
//! channel. The generator blocks when a loader falls behind, so memory stays
//! flat whatever the size; every table's loaded row count is checked against
//! what was generated, so no row is lost silently.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use mysql_async::prelude::Queryable;
use tokio::sync::mpsc;

use super::generate::{table, Sink, SinkClosed};
use super::SeedError;
use crate::config::DbEndpoint;
use crate::connect;
use crate::progress::Progress;
use crate::schema::model::{ident_list, quote_ident, Dialect};
use crate::schema::{Table, OLTP};

/// Chunks buffered per table between generator and loader.
const CHANNEL_CHUNKS: usize = 4;

/// `LOAD DATA` for one table, columns in model order.
pub fn load_data_sql(table: &Table) -> String {
    let columns: Vec<&str> = table.column_names().collect();
    format!(
        "LOAD DATA LOCAL INFILE 'salesdwh-seed-{}' INTO TABLE {} CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        table.name,
        quote_ident(Dialect::MySql, table.name),
        ident_list(Dialect::MySql, &columns)
    )
}

/// Session settings for bulk loading generated, consistent data. The
/// generator guarantees keys and references, so the server need not check
/// them row by row.
pub const BULK_SESSION: &str = "SET SESSION foreign_key_checks = 0, unique_checks = 0";

/// How rows reach MySQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMethod {
    /// `LOAD DATA LOCAL INFILE` when the server allows it, else INSERTs.
    Auto,
    LocalInfile,
    /// Multi-row parameterized INSERTs (servers with `local_infile` off).
    Insert,
}

/// Parameters per multi-row INSERT (MySQL allows 65,535 placeholders).
const INSERT_PARAMS: usize = 30_000;

/// The sink side: sends each chunk to its table's loader.
pub struct ChannelSink {
    /// `None` once the table is complete (its load then finishes).
    senders: Vec<Option<mpsc::Sender<Bytes>>>,
    progress: Arc<Progress>,
}

impl Sink for ChannelSink {
    fn chunk(&mut self, t: usize, data: Bytes, rows: u64) -> Result<(), SinkClosed> {
        self.senders[t]
            .as_ref()
            .ok_or(SinkClosed)?
            .blocking_send(data)
            .map_err(|_| SinkClosed)?;
        if t == table::ORDER_ITEMS {
            self.progress.inc(rows);
        }
        Ok(())
    }

    fn close(&mut self, t: usize) {
        self.senders[t] = None;
    }
}

/// Starts one loader per table; returns the sink to generate into and the
/// loaders, which resolve to the rows each table received.
pub fn start(
    endpoint: &DbEndpoint,
    timeout: Duration,
    method: LoadMethod,
    progress: Arc<Progress>,
) -> (
    ChannelSink,
    Vec<tokio::task::JoinHandle<Result<u64, SeedError>>>,
) {
    let mut senders = Vec::new();
    let mut loaders = Vec::new();
    for table in OLTP.tables.iter() {
        let (tx, rx) = mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        senders.push(Some(tx));
        let endpoint = endpoint.clone();
        loaders.push(tokio::spawn(load_table(
            endpoint, timeout, method, table, rx,
        )));
    }
    (ChannelSink { senders, progress }, loaders)
}

async fn load_table(
    endpoint: DbEndpoint,
    timeout: Duration,
    method: LoadMethod,
    table: &'static Table,
    rx: mpsc::Receiver<Bytes>,
) -> Result<u64, SeedError> {
    let mut conn = connect::mysql_conn(&endpoint, timeout).await?;
    let failed = |source| SeedError::Load {
        table: table.name,
        source: Box::new(source),
    };
    conn.query_drop(BULK_SESSION).await.map_err(failed)?;
    let method = match method {
        LoadMethod::Auto => {
            let allowed: Option<i64> = conn
                .query_first("SELECT @@GLOBAL.local_infile")
                .await
                .map_err(failed)?;
            if allowed == Some(1) {
                LoadMethod::LocalInfile
            } else {
                LoadMethod::Insert
            }
        }
        m => m,
    };
    if method == LoadMethod::Insert {
        let rows = insert_chunks(&mut conn, table, rx).await.map_err(failed)?;
        drop(conn.disconnect().await);
        return Ok(rows);
    }
    // The handler's future must be Sync: it holds only the receiver and
    // builds the stream when the server asks for the file.
    conn.set_infile_handler(async move {
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok::<_, io::Error>(chunk), rx))
        });
        Ok(stream.boxed())
    });
    conn.query_drop(load_data_sql(table))
        .await
        .map_err(failed)?;
    let rows = conn.affected_rows();
    drop(conn.disconnect().await);
    Ok(rows)
}

/// The fallback: each TSV chunk becomes parameterized multi-row INSERTs
/// (values bound as text; MySQL converts them as LOAD DATA would).
async fn insert_chunks(
    conn: &mut mysql_async::Conn,
    table: &Table,
    mut rx: mpsc::Receiver<Bytes>,
) -> Result<u64, mysql_async::Error> {
    let columns: Vec<&str> = table.column_names().collect();
    let per_statement = (INSERT_PARAMS / columns.len()).max(1);
    let row_marks = format!("({})", vec!["?"; columns.len()].join(", "));
    let head = format!(
        "INSERT INTO {} ({}) VALUES ",
        quote_ident(Dialect::MySql, table.name),
        ident_list(Dialect::MySql, &columns)
    );
    let mut loaded = 0;
    while let Some(chunk) = rx.recv().await {
        let rows: Vec<Vec<mysql_async::Value>> = chunk
            .split(|b| *b == b'\n')
            .filter(|line| !line.is_empty())
            .map(|line| line.split(|b| *b == b'\t').map(tsv_value).collect())
            .collect();
        for batch in rows.chunks(per_statement) {
            let sql = format!("{head}{}", vec![row_marks.as_str(); batch.len()].join(", "));
            let params: Vec<mysql_async::Value> = batch.iter().flatten().cloned().collect();
            conn.exec_drop(sql, params).await?;
            loaded += conn.affected_rows();
        }
    }
    Ok(loaded)
}

/// One TSV field as the value LOAD DATA would read.
fn tsv_value(field: &[u8]) -> mysql_async::Value {
    if field == b"\\N" {
        return mysql_async::Value::NULL;
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            match bytes.next() {
                Some(b't') => out.push(b'\t'),
                Some(b'n') => out.push(b'\n'),
                Some(b'r') => out.push(b'\r'),
                Some(b'0') => out.push(0),
                Some(&other) => out.push(other),
                None => out.push(b'\\'),
            }
        } else {
            out.push(b);
        }
    }
    mysql_async::Value::Bytes(out)
}

/// The sink that writes one TSV file per table instead (`--write-tsv`), for
/// measuring MySQL's own LOAD DATA on the very same rows.
pub struct FileSink {
    files: Vec<std::io::BufWriter<std::fs::File>>,
    pub error: Option<io::Error>,
}

impl FileSink {
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let files = OLTP
            .tables
            .iter()
            .map(|t| {
                std::fs::File::create(dir.join(format!("{}.tsv", t.name)))
                    .map(std::io::BufWriter::new)
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(FileSink { files, error: None })
    }

    pub fn flush(&mut self) -> io::Result<()> {
        use std::io::Write;
        self.files.iter_mut().try_for_each(|f| f.flush())
    }
}

impl Sink for FileSink {
    fn chunk(&mut self, t: usize, data: Bytes, _rows: u64) -> Result<(), SinkClosed> {
        use std::io::Write;
        self.files[t].write_all(&data).map_err(|e| {
            self.error = Some(e);
            SinkClosed
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_fields_decode_like_load_data() {
        assert_eq!(tsv_value(b"\\N"), mysql_async::Value::NULL);
        assert_eq!(
            tsv_value(b"a\\tb\\\\c\\nd"),
            mysql_async::Value::Bytes(b"a\tb\\c\nd".to_vec())
        );
        assert_eq!(
            tsv_value("Дар'я".as_bytes()),
            mysql_async::Value::Bytes("Дар'я".as_bytes().to_vec())
        );
    }
}
