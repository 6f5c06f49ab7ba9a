//! Test support: server URLs from `TEST_MYSQL_URL` / `TEST_POSTGRES_URL`
//! (defaults match scripts/local-stack.sh), per-test databases dropped on
//! `Drop`, and a `salesdwh` command with a clean environment.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use salesdwh::config::{DbEndpoint, Engine};
use salesdwh::connect;

const TIMEOUT: Duration = Duration::from_secs(10);
/// The last order day of every seeded test OLTP.
pub const SEED_END: &str = "2026-09-30";

pub fn mysql_server() -> DbEndpoint {
    let url = std::env::var("TEST_MYSQL_URL")
        .unwrap_or_else(|_| "mysql://salesdwh:salesdwh@127.0.0.1:3306".into());
    DbEndpoint::parse(Engine::MySql, &url).expect("TEST_MYSQL_URL")
}

pub fn pg_server() -> DbEndpoint {
    let url = std::env::var("TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://salesdwh:salesdwh@127.0.0.1:5432/postgres".into());
    let endpoint = DbEndpoint::parse(Engine::Postgres, &url).expect("TEST_POSTGRES_URL");
    match endpoint.database {
        Some(_) => endpoint,
        None => endpoint.with_database("postgres"),
    }
}

/// A URL for an endpoint, password included (tests only).
pub fn url_of(endpoint: &DbEndpoint) -> String {
    let scheme = match endpoint.engine {
        Engine::MySql => "mysql",
        Engine::Postgres => "postgres",
    };
    let password = endpoint
        .password
        .as_ref()
        .map(|p| format!(":{}", p.expose()))
        .unwrap_or_default();
    format!(
        "{scheme}://{}{password}@{}:{}/{}",
        endpoint.user,
        endpoint.host,
        endpoint.port,
        endpoint.database.as_deref().unwrap_or("")
    )
}

pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "sdwh_{prefix}_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        nanos % 1_000_000
    )
}

/// A MySQL database and a PostgreSQL database that belong to one test.
pub struct TestDbs {
    pub mysql: DbEndpoint,
    pub pg: DbEndpoint,
    /// Working directory for the binary: empty, so no stray .env is read.
    pub workdir: tempfile::TempDir,
}

impl TestDbs {
    /// Names only: the databases do not exist yet (`init` creates them).
    pub fn names() -> Self {
        let name = unique_name("t");
        TestDbs {
            mysql: mysql_server().with_database(&name),
            pg: pg_server().with_database(&name),
            workdir: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// Both databases created, empty.
    pub async fn create() -> Self {
        let dbs = Self::names();
        let mut my = connect::mysql_conn(&mysql_server(), TIMEOUT)
            .await
            .expect("MySQL");
        my.query_drop(format!(
            "CREATE DATABASE `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            dbs.mysql.database.as_ref().unwrap()
        ))
        .await
        .unwrap();
        my.disconnect().await.unwrap();
        let pg = connect::pg_client(&pg_server(), TIMEOUT)
            .await
            .expect("PostgreSQL");
        pg.batch_execute(&format!(
            "CREATE DATABASE \"{}\"",
            dbs.pg.database.as_ref().unwrap()
        ))
        .await
        .unwrap();
        dbs
    }

    pub fn mysql_url(&self) -> String {
        url_of(&self.mysql)
    }

    pub fn pg_url(&self) -> String {
        url_of(&self.pg)
    }

    pub async fn my(&self) -> mysql_async::Conn {
        connect::mysql_conn(&self.mysql, TIMEOUT)
            .await
            .expect("MySQL test database")
    }

    pub async fn pg(&self) -> tokio_postgres::Client {
        connect::pg_client(&self.pg, TIMEOUT)
            .await
            .expect("PostgreSQL test database")
    }

    /// Fresh databases after `salesdwh init` with dim_date from..to.
    pub fn initialised(from: &str, to: &str) -> Self {
        let dbs = Self::names();
        dbs.init(from, to);
        dbs
    }

    /// `salesdwh init` with dim_date from..to.
    pub fn init(&self, from: &str, to: &str) {
        run_expect(
            self.salesdwh()
                .args(["init", "--dim-date-from", from, "--dim-date-to", to]),
            0,
        );
    }

    /// `salesdwh seed --order-items N --seed S --end-date 2026-09-30 …`;
    /// returns its stdout.
    pub fn seed(&self, items: &str, seed: &str, extra: &[&str]) -> String {
        let mut cmd = self.salesdwh();
        cmd.args([
            "seed",
            "--order-items",
            items,
            "--seed",
            seed,
            "--end-date",
            SEED_END,
        ])
        .args(extra);
        stdout(&run_expect(&mut cmd, 0))
    }

    /// `salesdwh backfill …`, expected to succeed.
    pub fn backfill(&self, extra: &[&str]) -> Output {
        let mut cmd = self.salesdwh();
        cmd.arg("backfill").args(extra);
        run_expect(&mut cmd, 0)
    }

    /// `salesdwh` with only PATH and this test's URLs in its environment.
    pub fn salesdwh(&self) -> Command {
        let mut cmd = bare_salesdwh(self.workdir.path().to_path_buf());
        cmd.env("MYSQL_URL", self.mysql_url())
            .env("POSTGRES_URL", self.pg_url());
        cmd
    }
}

/// `salesdwh` with an empty environment (but PATH) in `dir`.
pub fn bare_salesdwh(dir: PathBuf) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_salesdwh"));
    cmd.env_clear().current_dir(dir);
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

impl Drop for TestDbs {
    fn drop(&mut self) {
        let mysql_db = self.mysql.database.clone().unwrap();
        let pg_db = self.pg.database.clone().unwrap();
        // Drop may run inside a tokio runtime, which cannot block: use a
        // thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(mut my) = connect::mysql_conn(&mysql_server(), TIMEOUT).await {
                    let _ = my
                        .query_drop(format!("DROP DATABASE IF EXISTS `{mysql_db}`"))
                        .await;
                    let _ = my.disconnect().await;
                }
                if let Ok(pg) = connect::pg_client(&pg_server(), TIMEOUT).await {
                    let _ = pg
                        .batch_execute(&format!("DROP DATABASE IF EXISTS \"{pg_db}\" WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command and returns its output, with both streams in the panic
/// message when it does not exit with `code`.
pub fn run_expect(cmd: &mut Command, code: i32) -> Output {
    let output = cmd.output().expect("run salesdwh");
    assert_eq!(
        output.status.code(),
        Some(code),
        "exit code\n--- stdout\n{}\n--- stderr\n{}",
        stdout(&output),
        stderr(&output)
    );
    output
}

/// The repository root (where the generated files are committed).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `dbml2sql` of @dbml/cli, installed by scripts/test.sh.
pub fn dbml2sql() -> PathBuf {
    if let Ok(path) = std::env::var("DBML2SQL") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/salesdwh/node/node_modules/.bin/dbml2sql");
    assert!(
        cached.exists(),
        "dbml2sql not found: run scripts/test.sh (it installs @dbml/cli) or set DBML2SQL"
    );
    cached
}

/// Each statement must fail for lack of privilege (SQLSTATE 42501).
pub async fn assert_forbidden(pg: &tokio_postgres::Client, statements: &[&str]) {
    for statement in statements {
        let err = pg.batch_execute(statement).await.expect_err(statement);
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{statement}: {err:?}"
        );
    }
}

impl TestDbs {
    /// Another warehouse (PostgreSQL database) reading the same MySQL source.
    pub fn second_warehouse(&self) -> TestDbs {
        let other = Self::names();
        TestDbs {
            mysql: self.mysql.clone(),
            pg: other.pg.clone(),
            workdir: tempfile::tempdir().expect("tempdir"),
        }
    }
}

/// The aggregates, row by row in text form.
/// Sends `signal` (`INT`, `TERM`, `KILL`) to process `pid`.
pub fn send_signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal} {pid}");
}

/// The one `salesdwh: error:` line among `lines` (stderr also holds log
/// lines); fails unless there is exactly one.
pub fn the_error_line<'a>(lines: impl IntoIterator<Item = &'a str>) -> &'a str {
    let errors: Vec<&str> = lines
        .into_iter()
        .filter(|l| l.starts_with("salesdwh: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0]
}

/// The newest run in `etl_runs`: (status, error or "").
pub async fn last_run(pg: &tokio_postgres::Client) -> (String, String) {
    let row = pg
        .query_one(
            "SELECT status, coalesce(error, '') FROM dwh.etl_runs ORDER BY run_id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The first column of every row of `sql` (no parameters).
pub async fn pg_column<T>(pg: &impl tokio_postgres::GenericClient, sql: &str) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    pg.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn mart_aggregates(pg: &impl tokio_postgres::GenericClient) -> Vec<String> {
    pg.query("SELECT mart_base.contents()", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// The marts a run left equal what a rebuild computes from the same facts
/// (checked in a transaction that is rolled back).
pub async fn assert_marts_match_rebuild(pg: &mut tokio_postgres::Client, context: &str) {
    let kept = mart_aggregates(pg).await;
    assert!(!kept.is_empty(), "{context}: the marts are empty");
    let tx = pg.transaction().await.unwrap();
    salesdwh::marts::rebuild(&tx).await.unwrap();
    let rebuilt = mart_aggregates(&tx).await;
    tx.rollback().await.unwrap();
    if kept != rebuilt {
        let only_kept: Vec<_> = kept
            .iter()
            .filter(|r| !rebuilt.contains(r))
            .take(10)
            .collect();
        let only_rebuilt: Vec<_> = rebuilt
            .iter()
            .filter(|r| !kept.contains(r))
            .take(10)
            .collect();
        panic!("{context}: the marts differ from a rebuild: kept {only_kept:#?}, rebuilt {only_rebuilt:#?}");
    }
}

/// The warehouse by natural keys: per table (row count, md5 of all rows in
/// natural-key order), surrogate keys replaced by the natural keys they
/// stand for and `loaded_at`/run ids left out. Two warehouses loaded from
/// the same source must give the same list (SPEC §3.1).
pub async fn fingerprint(pg: &tokio_postgres::Client) -> Vec<(String, i64, String)> {
    let queries: [(&str, &str); 9] = [
        ("dim_region", "SELECT region_id AS k, name, country FROM dwh.dim_region"),
        ("dim_category", "SELECT category_id AS k, name, parent_name FROM dwh.dim_category"),
        (
            "dim_product",
            "SELECT p.product_id AS k, p.sku, p.name, c.category_id, p.category_name, p.unit_cost, p.list_price, p.is_active \
             FROM dwh.dim_product p JOIN dwh.dim_category c ON c.category_key = p.category_key",
        ),
        (
            "dim_customer",
            "SELECT c.customer_id AS k, c.full_name, c.email, c.phone, c.city, r.region_id, c.segment, c.registered_at \
             FROM dwh.dim_customer c JOIN dwh.dim_region r ON r.region_key = c.region_key",
        ),
        (
            "dim_employee",
            "SELECT e.employee_id AS k, e.full_name, e.email, e.title, r.region_id, e.hired_at \
             FROM dwh.dim_employee e JOIN dwh.dim_region r ON r.region_key = e.region_key",
        ),
        (
            "fact_sales",
            "SELECT f.order_item_id AS k, f.order_id, f.date_key, p.product_id, c.customer_id, e.employee_id, r.region_id, \
             cat.category_id, f.order_status, f.ordered_at, f.completed_at, f.quantity, f.unit_price, f.revenue, \
             f.discount_amount, f.cost, f.margin \
             FROM dwh.fact_sales f JOIN dwh.dim_product p ON p.product_key = f.product_key \
             JOIN dwh.dim_customer c ON c.customer_key = f.customer_key JOIN dwh.dim_employee e ON e.employee_key = f.employee_key \
             JOIN dwh.dim_region r ON r.region_key = f.region_key JOIN dwh.dim_category cat ON cat.category_key = f.category_key",
        ),
        (
            "fact_payments",
            "SELECT f.payment_id AS k, f.order_id, f.date_key, c.customer_id, f.method, f.amount \
             FROM dwh.fact_payments f JOIN dwh.dim_customer c USING (customer_key)",
        ),
        (
            "etl_rejects",
            // Open rejects only: a sync keeps released ones (closed), a
            // fresh backfill never had them.
            "SELECT source_table || ':' || source_pk AS k, reason, payload::text \
             FROM dwh.etl_rejects WHERE resolved_run IS NULL",
        ),
        (
            "load_watermarks",
            "SELECT source_table AS k, last_updated_at, last_id FROM dwh.load_watermarks",
        ),
    ];
    let mut out = Vec::new();
    for (name, sql) in queries {
        let row = pg
            .query_one(
                &format!("SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t.k)), '') FROM ({sql}) t"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("fingerprint of {name}: {e:?}"));
        out.push((name.to_string(), row.get(0), row.get(1)));
    }
    out
}

/// Polls `sql` (returning one bigint) until it reaches `at_least`, or the
/// child exits, or 60 s pass. Returns the last value seen.
pub async fn wait_for(
    pg: &tokio_postgres::Client,
    sql: &str,
    at_least: i64,
    child: &mut std::process::Child,
) -> i64 {
    let start = std::time::Instant::now();
    loop {
        let n: i64 = pg.query_one(sql, &[]).await.map(|r| r.get(0)).unwrap_or(0);
        if n >= at_least
            || child.try_wait().ok().flatten().is_some()
            || start.elapsed() > Duration::from_secs(60)
        {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Records an unfinished backfill, as a killed one leaves it.
pub async fn mark_backfill_unfinished(pg: &tokio_postgres::Client) {
    pg.batch_execute(
        "INSERT INTO dwh.backfill_state (backfill_id, first_run, plan, watermarks, indexes_dropped) \
         VALUES (1, 1, '{}', '{}', false)",
    )
    .await
    .unwrap();
}
