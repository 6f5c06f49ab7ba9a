//! SCD1 dimension upserts: rows are COPYed into a temporary staging table
//! (columns from the model), then merged on the natural key. A row is only
//! rewritten when a value differs, so an unchanged source changes nothing.

use std::collections::HashMap;

use bytes::Bytes;
use tokio_postgres::Transaction;

use super::{copy_in, qualified, LoadError};
use crate::schema::dwh::{DIM_CATEGORY, DIM_CUSTOMER, DIM_EMPLOYEE, DIM_PRODUCT, DIM_REGION};
use crate::schema::model::{ident_list, quote_ident, Dialect, Table};
use crate::transform::key_map::KeyMap;
use crate::transform::{Keys, ProductKey};

const D: Dialect = Dialect::Postgres;

pub fn staging_name(table: &Table) -> String {
    quote_ident(D, &format!("stg_{}", table.name))
}

/// Creates the staging table of a dimension for this transaction.
pub async fn create_staging(tx: &Transaction<'_>, table: &Table) -> Result<(), LoadError> {
    let columns: Vec<String> = table
        .load_columns()
        .iter()
        .map(|name| {
            let c = table.column(name).expect("load column of the table");
            format!("{} {}", quote_ident(D, c.name), c.ty.postgres())
        })
        .collect();
    tx.batch_execute(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DROP",
        staging_name(table),
        columns.join(", ")
    ))
    .await
    .map_err(LoadError::pg(format!(
        "creating the staging table of {}",
        table.name
    )))
}

/// COPYs encoded rows (columns: `table.load_columns()`) into the staging table.
pub async fn stage(tx: &Transaction<'_>, table: &Table, data: Bytes) -> Result<u64, LoadError> {
    copy_in(tx, &staging_name(table), &table.load_columns(), data).await
}

/// The key a table is merged on: its natural key (first UNIQUE), else its
/// primary key (the facts, keyed by the source row's id).
pub fn merge_key(table: &Table) -> &'static [&'static str] {
    table.unique.first().copied().unwrap_or(table.primary_key)
}

/// Merges the staging table into the table on its [`merge_key`]; returns
/// the rows inserted or changed. A row whose values are all equal is not
/// touched (no new tuple, `loaded_at` kept), so re-reading an unchanged
/// source changes nothing.
pub async fn merge(tx: &Transaction<'_>, table: &Table) -> Result<u64, LoadError> {
    tx.execute(&merge_sql(table), &[])
        .await
        .map_err(LoadError::pg(format!("merging {}", table.name)))
}

/// Starts a backfill's load of a dimension. Returns true when the dimension
/// holds no source row yet (a first load): its rows then go straight into
/// it by COPY, and its foreign keys are dropped until
/// [`finish_first_load`] adds them back, validated, in the same
/// transaction. Measured on 500,000 customers: staging them took 0.79 s
/// and the upsert 2.72 s even without the FK (speculative insertion per
/// row), where a plain insert took 1.48 s and one join validating the FK
/// 0.07 s; the FK's trigger adds a locking lookup per row (about 4 µs: at
/// 50,000 customers the upsert took 0.43 s with it, 0.24 s without).
/// The DDL keeps readers of the dimension waiting until the transaction
/// ends, as a backfill's reload of the facts does anyway. Otherwise
/// (false) the rows go through staging and [`merge`], as in sync.
pub async fn start_first_load(tx: &Transaction<'_>, table: &Table) -> Result<bool, LoadError> {
    if holds_source_rows(tx, table).await? {
        return Ok(false);
    }
    super::execute_all(
        tx,
        &super::drop_foreign_keys_sql(table),
        format!(
            "dropping the foreign keys of {} for its first load",
            table.name
        ),
    )
    .await?;
    Ok(true)
}

/// Adds back what [`start_first_load`] dropped, validated (one join checks
/// every row; a row whose key is missing fails the transaction).
pub async fn finish_first_load(tx: &Transaction<'_>, table: &Table) -> Result<(), LoadError> {
    let add: Vec<String> = table
        .foreign_keys
        .iter()
        .map(|fk| super::add_foreign_key_sql(table, fk, true))
        .collect();
    super::execute_all(
        tx,
        &add,
        format!("adding back the foreign keys of {}", table.name),
    )
    .await
}

/// Whether the dimension holds a row besides its -1 member.
async fn holds_source_rows(tx: &Transaction<'_>, table: &Table) -> Result<bool, LoadError> {
    let sql = format!(
        "SELECT EXISTS (SELECT 1 FROM {} WHERE {} <> -1)",
        qualified(table),
        quote_ident(D, merge_key(table)[0])
    );
    Ok(tx
        .query_one(&sql, &[])
        .await
        .map_err(LoadError::pg(format!("reading {}", table.name)))?
        .get(0))
}

/// [`merge`], returning the natural keys of the rows inserted or changed.
pub async fn merge_changed(tx: &Transaction<'_>, table: &Table) -> Result<Vec<i64>, LoadError> {
    let sql = format!(
        "{} RETURNING d.{}::bigint",
        merge_sql(table),
        quote_ident(D, merge_key(table)[0])
    );
    Ok(tx
        .query(&sql, &[])
        .await
        .map_err(LoadError::pg(format!("merging {}", table.name)))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// `(old.c, ...) IS DISTINCT FROM (new.c, ...)` over the columns a merge
/// writes (all but the natural key): true when the row would change.
pub fn row_differs(table: &Table, old: &str, new: &str) -> String {
    let natural = merge_key(table);
    let updated: Vec<&str> = table
        .load_columns()
        .into_iter()
        .filter(|c| !natural.contains(c))
        .collect();
    let side = |alias: &str| {
        updated
            .iter()
            .map(|c| format!("{alias}.{}", quote_ident(D, c)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) IS DISTINCT FROM ({})", side(old), side(new))
}

fn merge_sql(table: &Table) -> String {
    // Staged rows equal to their current row are left out before the
    // upsert: ON CONFLICT DO UPDATE locks (and so dirties) every row it
    // meets, even one its WHERE then skips, and a sync re-reads many
    // unchanged rows (the lookback window).
    let same_key = merge_key(table)
        .iter()
        .map(|c| format!("c.{0} = s.{0}", quote_ident(D, c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    upsert_sql(
        table,
        &format!(
            "{stg} s WHERE NOT EXISTS (SELECT 1 FROM {table_sql} c WHERE {same_key} AND NOT {differs})",
            stg = staging_name(table),
            table_sql = qualified(table),
            differs = row_differs(table, "c", "s"),
        ),
    )
}

/// `INSERT INTO table SELECT <load columns> FROM <source> ON CONFLICT
/// (merge key) DO UPDATE`, rewriting only rows that differ. `source` is a
/// FROM clause (with any WHERE) giving the load columns.
pub fn upsert_sql(table: &Table, source: &str) -> String {
    let natural = merge_key(table);
    let columns = table.load_columns();
    let updated: Vec<&str> = columns
        .iter()
        .copied()
        .filter(|c| !natural.contains(c))
        .collect();
    let mut set: Vec<String> = updated
        .iter()
        .map(|c| format!("{0} = EXCLUDED.{0}", quote_ident(D, c)))
        .collect();
    if table.column("loaded_at").is_some() {
        set.push(format!("{} = now()", quote_ident(D, "loaded_at")));
    }
    format!(
        "INSERT INTO {table_sql} AS d ({cols}) SELECT {cols} FROM {source} \
         ON CONFLICT ({natural}) DO UPDATE SET {set} \
         WHERE {differs}",
        table_sql = qualified(table),
        cols = ident_list(D, &columns),
        natural = ident_list(D, natural),
        set = set.join(", "),
        differs = row_differs(table, "d", "EXCLUDED"),
    )
}

/// Natural keys in the staging table that the dimension does not hold yet
/// (call before [`merge`]): rows that may resolve references loaded as -1.
pub async fn new_keys(tx: &Transaction<'_>, table: &Table) -> Result<Vec<i64>, LoadError> {
    let natural = quote_ident(D, merge_key(table)[0]);
    let sql = format!(
        "SELECT DISTINCT s.{natural}::bigint FROM {stg} s \
         WHERE NOT EXISTS (SELECT 1 FROM {table_sql} d WHERE d.{natural} = s.{natural})",
        stg = staging_name(table),
        table_sql = qualified(table),
    );
    Ok(tx
        .query(&sql, &[])
        .await
        .map_err(LoadError::pg(format!("finding new rows of {}", table.name)))?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// dim_product.category_name follows a renamed category (SCD1).
pub async fn restate_category_names(tx: &Transaction<'_>) -> Result<u64, LoadError> {
    use crate::schema::dwh::{DIM_CATEGORY, DIM_PRODUCT};
    let sql = format!(
        "UPDATE {p} p SET category_name = c.name FROM {c} c \
         WHERE c.category_key = p.category_key AND p.category_name IS DISTINCT FROM c.name",
        p = qualified(&DIM_PRODUCT),
        c = qualified(&DIM_CATEGORY),
    );
    tx.execute(&sql, &[])
        .await
        .map_err(LoadError::pg("restating product category names"))
}

/// Streams the rows of a query to `f` (key maps can be large: never a
/// whole result in memory twice).
async fn each_row<C: tokio_postgres::GenericClient>(
    client: &C,
    sql: &str,
    what: &str,
    mut f: impl FnMut(tokio_postgres::Row),
) -> Result<(), LoadError> {
    use futures::TryStreamExt;
    let stream = client
        .query_raw(sql, std::iter::empty::<i32>())
        .await
        .map_err(LoadError::pg(what))?;
    futures::pin_mut!(stream);
    while let Some(row) = stream.try_next().await.map_err(LoadError::pg(what))? {
        f(row);
    }
    Ok(())
}

/// Reads natural → surrogate keys of every dimension (without the -1
/// members, which are not source rows).
pub async fn read_keys<C: tokio_postgres::GenericClient>(client: &C) -> Result<Keys, LoadError> {
    read_keys_of(client, true).await
}

/// `SELECT cols FROM table WHERE <natural key> <> -1`, plus `tail`.
fn keys_sql(table: &Table, cols: &str, tail: &str) -> String {
    format!(
        "SELECT {cols} FROM {} WHERE {} <> -1{tail}",
        qualified(table),
        quote_ident(D, table.unique[0][0])
    )
}

const PRODUCT_KEY_COLUMNS: &str =
    "product_id, product_key, category_key, (unit_cost * 100)::bigint";
const CUSTOMER_KEY_COLUMNS: &str = "customer_id, customer_key";

fn product_key(row: &tokio_postgres::Row) -> (i64, ProductKey) {
    (
        row.get(0),
        ProductKey {
            key: row.get(1),
            category_key: row.get(2),
            unit_cost: row.get(3),
        },
    )
}

/// Like [`read_keys`]; with `all` false only regions and categories (what
/// the other dimensions reference), which are small.
pub async fn read_keys_of<C: tokio_postgres::GenericClient>(
    client: &C,
    all: bool,
) -> Result<Keys, LoadError> {
    let mut keys = Keys::default();
    each_row(
        client,
        &keys_sql(&DIM_REGION, "region_id, region_key", ""),
        "reading the region keys",
        |row| {
            keys.region
                .insert(i64::from(row.get::<_, i32>(0)), row.get(1));
        },
    )
    .await?;
    each_row(
        client,
        &keys_sql(&DIM_CATEGORY, "category_id, category_key, name", ""),
        "reading the category keys",
        |row| {
            keys.category
                .insert(i64::from(row.get::<_, i32>(0)), (row.get(1), row.get(2)));
        },
    )
    .await?;
    if !all {
        return Ok(keys);
    }
    each_row(
        client,
        &keys_sql(&DIM_PRODUCT, PRODUCT_KEY_COLUMNS, ""),
        "reading the product keys",
        |row| {
            let (id, key) = product_key(&row);
            keys.product.insert(id, key);
        },
    )
    .await?;
    let mut customers = Vec::new();
    each_row(
        client,
        &keys_sql(&DIM_CUSTOMER, CUSTOMER_KEY_COLUMNS, ""),
        "reading the customer keys",
        |row| customers.push((row.get(0), row.get(1))),
    )
    .await?;
    keys.customer = KeyMap::from_pairs(customers);
    read_employee_keys(client, &mut keys).await?;
    Ok(keys)
}

async fn read_employee_keys<C: tokio_postgres::GenericClient>(
    client: &C,
    keys: &mut Keys,
) -> Result<(), LoadError> {
    each_row(
        client,
        &keys_sql(&DIM_EMPLOYEE, "employee_id, employee_key", ""),
        "reading the employee keys",
        |row| {
            keys.employee
                .insert(i64::from(row.get::<_, i32>(0)), row.get(1));
        },
    )
    .await
}

/// The keys of the small dimensions (regions, categories, employees), for
/// [`keys_for`]: what a sync reads once.
pub async fn read_small_keys<C: tokio_postgres::GenericClient>(
    client: &C,
) -> Result<Keys, LoadError> {
    let mut keys = read_keys_of(client, false).await?;
    read_employee_keys(client, &mut keys).await?;
    Ok(keys)
}

/// `small` ([`read_small_keys`]) plus the keys of these customers and
/// products (natural keys; those the warehouse lacks stay absent): what a
/// sync's chunk of re-derived orders references, so that its cost follows
/// the change, not the size of the customer and product dimensions.
pub async fn keys_for<C: tokio_postgres::GenericClient>(
    client: &C,
    small: &Keys,
    customers: &[i64],
    products: &[i64],
) -> Result<Keys, LoadError> {
    let mut keys = small.clone();
    let any = |table: &Table| format!(" AND {} = ANY($1)", quote_ident(D, table.unique[0][0]));
    for row in client
        .query(
            &keys_sql(&DIM_PRODUCT, PRODUCT_KEY_COLUMNS, &any(&DIM_PRODUCT)),
            &[&products],
        )
        .await
        .map_err(LoadError::pg("reading the product keys"))?
    {
        let (id, key) = product_key(&row);
        keys.product.insert(id, key);
    }
    keys.customer = client
        .query(
            &keys_sql(&DIM_CUSTOMER, CUSTOMER_KEY_COLUMNS, &any(&DIM_CUSTOMER)),
            &[&customers],
        )
        .await
        .map_err(LoadError::pg("reading the customer keys"))?
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    Ok(keys)
}

/// Rows per dimension, for the summary.
pub type DimCounts = HashMap<&'static str, u64>;
