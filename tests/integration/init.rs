//! `salesdwh init`: creates missing databases, is idempotent down to the
//! catalog, fills dim_date and the -1 members, and gives bi_reader SELECT
//! and nothing else.

use mysql_async::prelude::Queryable;

use crate::support::{assert_forbidden, run_expect, stdout, TestDbs};

async fn mysql_catalog(dbs: &TestDbs) -> Vec<String> {
    let db = dbs.mysql.database.clone().unwrap();
    let mut my = dbs.my().await;
    let mut out = Vec::new();
    let queries = [
        "SELECT CONCAT_WS('|', table_name, engine, table_collation, table_comment) FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
        "SELECT CONCAT_WS('|', table_name, ordinal_position, column_name, column_type, is_nullable, IFNULL(column_default, '-'), extra, column_comment) FROM information_schema.columns WHERE table_schema = ? ORDER BY table_name, ordinal_position",
        "SELECT CONCAT_WS('|', table_name, index_name, seq_in_index, column_name, non_unique) FROM information_schema.statistics WHERE table_schema = ? ORDER BY table_name, index_name, seq_in_index",
        "SELECT CONCAT_WS('|', constraint_name, table_name, referenced_table_name, update_rule, delete_rule) FROM information_schema.referential_constraints WHERE constraint_schema = ? ORDER BY constraint_name",
    ];
    for q in queries {
        let rows: Vec<String> = my.exec(q, (db.as_str(),)).await.unwrap();
        out.extend(rows);
    }
    my.disconnect().await.unwrap();
    out
}

async fn pg_catalog(dbs: &TestDbs) -> Vec<String> {
    let pg = dbs.pg().await;
    let queries = [
        "SELECT concat_ws('|', table_schema, table_name, ordinal_position, column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, is_nullable, column_default, is_identity, col_description(format('%I.%I', table_schema, table_name)::regclass, ordinal_position::int)) FROM information_schema.columns WHERE table_schema IN ('dwh', 'mart') ORDER BY 1",
        "SELECT concat_ws('|', conrelid::regclass::text, conname, pg_get_constraintdef(oid)) FROM pg_constraint WHERE connamespace IN ('dwh'::regnamespace, 'mart'::regnamespace) ORDER BY 1",
        "SELECT concat_ws('|', schemaname, indexname, indexdef) FROM pg_indexes WHERE schemaname IN ('dwh', 'mart') ORDER BY 1",
        "SELECT concat_ws('|', n.nspname, c.relname, c.relkind, c.relacl::text, obj_description(c.oid, 'pg_class')) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname IN ('dwh', 'mart') ORDER BY 1",
        "SELECT concat_ws('|', nspname, nspacl::text) FROM pg_namespace WHERE nspname IN ('dwh', 'mart') ORDER BY 1",
        "SELECT concat_ws('|', defaclnamespace::regnamespace::text, defaclobjtype, defaclacl::text) FROM pg_default_acl ORDER BY 1",
        "SELECT concat_ws('|', p.oid::regprocedure::text, md5(p.prosrc)) FROM pg_proc p WHERE p.pronamespace = 'dwh'::regnamespace ORDER BY 1",
        "SELECT concat_ws('|', count(*), min(date_key), max(date_key), md5(string_agg(concat_ws(',', date_key, full_date, year, quarter, month, month_name, day_of_month, day_of_week, day_name, iso_week, is_weekend), ';' ORDER BY date_key))) FROM dwh.dim_date",
    ];
    let mut out = Vec::new();
    for q in queries {
        for row in pg.query(q, &[]).await.unwrap() {
            out.push(row.get::<_, String>(0));
        }
    }
    for table in [
        "dim_region",
        "dim_category",
        "dim_product",
        "dim_customer",
        "dim_employee",
    ] {
        let row = pg
            .query_one(
                &format!("SELECT t::text FROM dwh.{table} t ORDER BY 1"),
                &[],
            )
            .await
            .unwrap();
        out.push(format!("{table}|{}", row.get::<_, String>(0)));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn init_twice_creates_the_databases_and_leaves_identical_catalogs() {
    let dbs = TestDbs::names();
    let args = [
        "init",
        "--dim-date-from",
        "2024-01-01",
        "--dim-date-to",
        "2024-12-31",
    ];
    let first = run_expect(dbs.salesdwh().args(args), 0);
    assert!(
        stdout(&first).contains("366 days added"),
        "{}",
        stdout(&first)
    );
    let (my1, pg1) = (mysql_catalog(&dbs).await, pg_catalog(&dbs).await);

    let second = run_expect(dbs.salesdwh().args(args), 0);
    assert!(
        stdout(&second).contains("0 days added"),
        "{}",
        stdout(&second)
    );
    let (my2, pg2) = (mysql_catalog(&dbs).await, pg_catalog(&dbs).await);
    assert_eq!(my1, my2);
    assert_eq!(pg1, pg2);

    // The catalogs hold what the model says, not merely the same nothing.
    assert_eq!(
        my1.iter().filter(|l| l.contains("|InnoDB|")).count(),
        8,
        "{my1:#?}"
    );
    assert!(
        my1.iter()
            .any(|l| l.starts_with("orders|9|updated_at|datetime(6)|NO|")
                && l.contains("on update current_timestamp")),
        "{my1:#?}"
    );
    assert!(
        pg1.iter()
            .any(|l| l.starts_with("dwh|fact_sales|17|margin|numeric|14|2|NO")),
        "{pg1:#?}"
    );
    assert!(
        pg1.iter().any(|l| l.starts_with("367|-1|20241231|")),
        "{pg1:#?}"
    );
    assert!(
        pg1.iter()
            .any(|l| l.starts_with("dim_employee|(-1,-1,Unassigned,")),
        "{pg1:#?}"
    );

    let pg = dbs.pg().await;
    let row = pg
        .query_one(
            "SELECT day_of_week, day_name, iso_week, quarter, month_name, is_weekend FROM dwh.dim_date WHERE date_key = 20241230",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i16>(0), 1);
    assert_eq!(row.get::<_, String>(1), "Monday");
    assert_eq!(
        row.get::<_, i16>(2),
        1,
        "2024-12-30 is in ISO week 1 of 2025"
    );
    assert_eq!(row.get::<_, i16>(3), 4);
    assert_eq!(row.get::<_, String>(4), "December");
    assert!(!row.get::<_, bool>(5));
    let weekend: bool = pg
        .query_one(
            "SELECT is_weekend FROM dwh.dim_date WHERE full_date = '2024-06-02'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(weekend, "2024-06-02 is a Sunday");

    // New sessions on the warehouse sort in memory (03_views_marts.sql).
    let work_mem: String = pg.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(work_mem, "64MB");
}

#[tokio::test(flavor = "multi_thread")]
async fn bi_reader_can_select_and_do_nothing_else() {
    let dbs = TestDbs::initialised("2024-01-01", "2024-01-31");
    let pg = dbs.pg().await;
    // A mart created later by the owner is readable too (default privileges).
    pg.batch_execute("CREATE VIEW mart.probe AS SELECT count(*) AS days FROM dwh.dim_date")
        .await
        .unwrap();
    pg.batch_execute("SET ROLE bi_reader").await.unwrap();
    let days: i64 = pg
        .query_one("SELECT count(*) FROM dwh.dim_date", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(days, 32);
    let days: i64 = pg
        .query_one("SELECT days FROM mart.probe", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(days, 32);
    pg.query("SELECT * FROM dwh.fact_sales", &[]).await.unwrap();
    assert_forbidden(
        &pg,
        &[
            "INSERT INTO dwh.dim_region (region_id, name, country) VALUES (1, 'x', 'y')",
            "UPDATE dwh.dim_region SET name = 'x'",
            "DELETE FROM dwh.dim_date",
            "TRUNCATE dwh.fact_sales",
            "CREATE TABLE dwh.intruder (i int)",
            "CREATE TABLE mart.intruder (i int)",
            "CREATE TABLE public.intruder (i int)",
            "CREATE SCHEMA intruder",
            "SELECT dwh.ensure_dim_date('2030-01-01', '2030-01-02')",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn init_refuses_existing_tables_that_differ_from_the_model() {
    let dbs = TestDbs::create().await;
    let mut my = dbs.my().await;
    // An older orders table without completed_at, and a nullable status.
    my.query_drop(
        "CREATE TABLE orders (order_id BIGINT PRIMARY KEY, customer_id BIGINT NOT NULL, employee_id INT NULL,
           region_id INT NOT NULL, order_date DATETIME(6) NOT NULL, status VARCHAR(16) NULL,
           total_amount DECIMAL(14,2) NOT NULL, updated_at DATETIME(6) NOT NULL)",
    )
    .await
    .unwrap();
    my.disconnect().await.unwrap();
    let out = run_expect(dbs.salesdwh().arg("init"), 1);
    let err = crate::support::stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("orders.completed_at is missing"), "{err}");
    assert!(
        err.contains("orders.status is NULL but the model says NOT NULL"),
        "{err}"
    );
    assert!(err.contains("migrate them by hand"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn init_names_warehouse_drift_before_running_any_ddl() {
    let dbs = TestDbs::initialised("2024-01-01", "2024-01-02");
    // A warehouse from an older model: fact_sales without completed_at.
    let pg = dbs.pg().await;
    pg.batch_execute(
        "DROP SCHEMA mart CASCADE; ALTER TABLE dwh.fact_sales DROP COLUMN completed_at",
    )
    .await
    .unwrap();
    let out = run_expect(dbs.salesdwh().arg("init"), 1);
    let err = crate::support::stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("differ from the schema model: fact_sales.completed_at is missing"),
        "{err}"
    );
    // Nothing was changed: the mart schema is still gone.
    let marts: i64 = pg
        .query_one(
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'mart'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(marts, 0);
}
