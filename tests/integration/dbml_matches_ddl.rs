//! The DBML docs declare the same tables, columns, keys, indexes and
//! references as the DDL: @dbml/cli's `dbml2sql` turns each DBML file into
//! SQL, both are applied to fresh databases, and the catalogs are compared.

use mysql_async::prelude::Queryable;

use crate::support::{dbml2sql, repo_root, TestDbs};

fn dbml_to_sql(file: &str, dialect: &str) -> String {
    // dbml2sql writes dbml-error.log into its working directory: not the
    // checkout's.
    let scratch = tempfile::tempdir().unwrap();
    let bin = std::fs::canonicalize(dbml2sql()).unwrap_or_else(|_| dbml2sql());
    let out = std::process::Command::new(bin)
        .arg(repo_root().join(file))
        .arg(dialect)
        .current_dir(scratch.path())
        .output()
        .expect("run dbml2sql");
    assert!(
        out.status.success(),
        "dbml2sql rejected {file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn mysql_shape(dbs: &TestDbs) -> Vec<String> {
    let db = dbs.mysql.database.clone().unwrap();
    let mut my = dbs.my().await;
    let queries = [
        // ON UPDATE lives in a DBML note (DBML has no syntax for it): compare
        // everything else of each column.
        "SELECT CONCAT_WS('|', 'column', table_name, column_name, column_type, is_nullable, extra LIKE '%auto_increment%') FROM information_schema.columns WHERE table_schema = ?",
        "SELECT CONCAT_WS('|', 'index', table_name, IF(index_name = 'PRIMARY', 'PRIMARY', ''), non_unique, GROUP_CONCAT(column_name ORDER BY seq_in_index)) FROM information_schema.statistics WHERE table_schema = ? GROUP BY table_name, index_name, non_unique",
        "SELECT CONCAT_WS('|', 'ref', table_name, constraint_name, column_name, referenced_table_name, referenced_column_name) FROM information_schema.key_column_usage WHERE table_schema = ? AND referenced_table_name IS NOT NULL",
    ];
    let mut out = Vec::new();
    for q in queries {
        let rows: Vec<String> = my.exec(q, (db.as_str(),)).await.unwrap();
        out.extend(rows);
    }
    my.disconnect().await.unwrap();
    out.sort();
    out
}

async fn pg_shape(dbs: &TestDbs) -> Vec<String> {
    let pg = dbs.pg().await;
    let queries = [
        "SELECT concat_ws('|', 'column', table_name, column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, is_nullable, is_identity) FROM information_schema.columns WHERE table_schema = 'dwh'",
        // Key and reference columns by name; CHECKs are not DBML.
        "SELECT concat_ws('|', 'constraint', c.conrelid::regclass::text, c.contype::text,
                (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(att, ord)
                   JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.att),
                CASE WHEN c.contype = 'f' THEN c.conname END,
                CASE WHEN c.contype = 'f' THEN c.confrelid::regclass::text END,
                (SELECT string_agg(a.attname, ',' ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(att, ord)
                   JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.att))
         FROM pg_constraint c WHERE c.connamespace = 'dwh'::regnamespace AND c.contype IN ('p', 'u', 'f')",
        "SELECT concat_ws('|', 'index', tablename, regexp_replace(indexdef, 'INDEX \\S+ ON', 'INDEX ON')) FROM pg_indexes WHERE schemaname = 'dwh'",
    ];
    let mut out = Vec::new();
    for q in queries {
        for row in pg.query(q, &[]).await.unwrap() {
            out.push(row.get::<_, String>(0));
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_dbml_declares_what_the_mysql_ddl_creates() {
    let (ours, theirs) = (TestDbs::create().await, TestDbs::create().await);
    let ddl = std::fs::read_to_string(repo_root().join("sql/mysql/01_schema.sql")).unwrap();
    let mut my = ours.my().await;
    my.query_drop(ddl).await.unwrap();
    my.disconnect().await.unwrap();
    let mut my = theirs.my().await;
    my.query_drop(dbml_to_sql("docs/oltp_mysql.dbml", "--mysql"))
        .await
        .unwrap();
    my.disconnect().await.unwrap();

    let (a, b) = (mysql_shape(&ours).await, mysql_shape(&theirs).await);
    assert!(
        a.iter().filter(|l| l.starts_with("ref|")).count() >= 9,
        "{a:#?}"
    );
    assert_eq!(a, b, "DDL (left) and DBML (right) differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_dbml_declares_what_the_postgres_ddl_creates() {
    let (ours, theirs) = (TestDbs::create().await, TestDbs::create().await);
    let ddl = std::fs::read_to_string(repo_root().join("sql/postgres/01_dwh_schema.sql")).unwrap();
    ours.pg().await.batch_execute(&ddl).await.unwrap();
    theirs
        .pg()
        .await
        .batch_execute(&dbml_to_sql("docs/dwh_postgres.dbml", "--postgres"))
        .await
        .unwrap();

    let (a, b) = (pg_shape(&ours).await, pg_shape(&theirs).await);
    assert!(
        a.iter().filter(|l| l.contains("|f|")).count() >= 11,
        "{a:#?}"
    );
    assert_eq!(a, b, "DDL (left) and DBML (right) differ");
}
