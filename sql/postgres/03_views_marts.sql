-- salesdwh marts: schema "mart" (SPEC §7). Hand-written; not generated.
--
-- Applied by `salesdwh init` after 01_dwh_schema.sql, in the same
-- transaction; init then builds the aggregates if they are new, stale or of
-- an older definition (mart_base.ensure_built, called from src/marts.rs).
--
-- Rules shared by every mart:
--   * Revenue, margin, order, item and unit figures count only sales whose
--     order_status is NOT 'cancelled' or 'returned' ("valid sales"). An order
--     that was only ever cancelled or returned appears in no mart.
--   * "items"  = order lines (fact_sales rows);
--     "units"  = summed quantity;
--     "orders" = distinct order_id.
--   * Days and months are those of the order date (fact_sales.date_key, UTC);
--     "month" is the first day of the month as a date.
--   * Money columns are NUMERIC, never floating point. Sums keep scale 2;
--     averages are round(x, 2) (half away from zero); shares round(x, 4).
--   * Aggregating marts have no rows for empty cells (a day, month, region
--     or category without valid sales); customer_retention, product_ranking,
--     customer_metrics and the functions do list the zeros, as noted.
--   * Names (region, category, employee, customer, product) are the current
--     SCD1 values: the marts join the dimensions when they are read. They
--     LEFT JOIN them: every key has its dimension row (foreign keys, -1
--     members), so the rows are the same, and PostgreSQL drops the joins a
--     query reads no column of (a monthly total need not touch 50k customers).
--
-- How the marts stay fresh on a 10M-row fact_sales:
--   * Every mart that aggregates fact_sales is a plain VIEW over a small
--     aggregate table in schema mart_base (one row per mart grain, keys
--     only), joined to the dimensions when read. A mart read costs a scan
--     of its aggregate, never of fact_sales.
--   * The pipeline keeps the aggregates equal to their definition over
--     fact_sales, inside its own transaction, so readers never wait and
--     never see half a run:
--       - backfill computes them while its chunks pass (salesdwh, in Rust:
--         src/transform/marts.rs): each chunk's sums of the additive
--         aggregates are added up (its day x region x category cells
--         through local files) and its orders spilled to local files;
--         after the load salesdwh writes those sums
--         (start_additive/additive_written) and the customer aggregates it
--         computes from the spilled orders
--         (prepare_customers/customers_written), and finish_parts marks
--         them built in the last transaction. A resumed
--         backfill calls mart_base.rebuild(): every aggregate recomputed
--         from fact_sales in SQL;
--       - sync hands the orders it is about to change to
--         mart_base.capture(order_ids) / capture_products(product_ids),
--         which keep a copy of their current fact rows; at the end it
--         calls mart_base.apply_changes() and computes in Rust (src/marts.rs
--         apply_changes, with the backfill's definitions) what those orders
--         change: the additive aggregates (sales_cell, sales_month,
--         manager_month, region_month, product_sales) get (new - old),
--         cells that drop to zero orders go (add_deltas); then salesdwh
--         recomputes the (customer, month) pairs of those orders (a pair
--         whose orders only changed amounts from its customer_month row,
--         any other from its orders' fact rows, read by customer_key), and
--         those customers' totals and cohorts (medians, top and favorite
--         categories and cohorts are not additive). The cost follows the
--         change, not the size of the warehouse. After a category rename
--         (ties go by name) every top and favorite category is recomputed
--         in SQL from customer_month (recompute_top_categories).
--   * A run that changes facts without maintaining the aggregates (sync or
--     backfill --no-refresh-marts) marks them stale; the next maintaining
--     run, or init, rebuilds them.
--   * mart_base is not readable by bi_reader; the views are (a view reads
--     its tables with its owner's rights).
--   * etl_recent_runs and etl_performance read the small run log directly.
--
-- Idempotence and changed definitions:
--   * Views and functions are CREATE OR REPLACE. That cannot drop, rename,
--     retype or reorder a view column or change a function's result
--     columns: such a change needs a DROP ... IF EXISTS right before the
--     CREATE.
--   * The aggregate tables carry a definition revision (mart_base.state).
--     When it differs from BASE_REVISION below, schema mart_base is dropped
--     (with the views on it, recreated below) and rebuilt from fact_sales.
--     An object someone built on top of a mart is dropped with it then.

-- Marts of earlier versions were materialized views: make way for the views.
DO $legacy$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'mart'::regnamespace AND c.relkind = 'm'
    LOOP
        RAISE NOTICE 'mart.%: materialized view replaced by a view', v.relname;
        EXECUTE format('DROP MATERIALIZED VIEW mart.%I CASCADE', v.relname);
    END LOOP;
END
$legacy$;

-- BASE_REVISION: bump it whenever a mart_base table or the way it is
-- computed changes.
DO $revision$
DECLARE
    v_revision integer;
BEGIN
    IF to_regclass('mart_base.state') IS NULL THEN
        RETURN;
    END IF;
    -- Dynamic: the table may not exist when this block is parsed.
    EXECUTE 'SELECT revision FROM mart_base.state' INTO v_revision;
    IF v_revision IS DISTINCT FROM 6 THEN
        RAISE NOTICE 'mart_base: definition changed, rebuilding the aggregates';
        DROP SCHEMA mart_base CASCADE;
    END IF;
END
$revision$;

CREATE SCHEMA IF NOT EXISTS mart_base;
REVOKE ALL ON SCHEMA mart_base FROM PUBLIC;
COMMENT ON SCHEMA mart_base IS
    'Aggregates behind the marts, kept by salesdwh runs (see sql/postgres/03_views_marts.sql). Read the views in schema mart instead.';

CREATE TABLE IF NOT EXISTS mart_base.state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    revision   integer NOT NULL,
    stale      boolean NOT NULL,
    built_at   timestamptz,
    updated_at timestamptz
);
-- A new mart_base starts stale: init (or the next run) builds it.
INSERT INTO mart_base.state (revision, stale) VALUES (6, true) ON CONFLICT DO NOTHING;

-- sum() of bigint returns numeric (slow to add up, and cast back): this
-- adds in bigint, and an overflow is an error, never a wrong sum.
CREATE OR REPLACE AGGREGATE mart_base.sum8(bigint) (SFUNC = int8pl, STYPE = bigint, PARALLEL = SAFE);

-- Money is kept in integer cents (exact, and summed far faster than
-- NUMERIC); the views turn it back into NUMERIC with scale 2 (cents * 0.01).
--
-- The additive aggregates below carry no CHECK (orders > 0): INSERT ... ON
-- CONFLICT checks the proposed row, here a possibly negative delta, before
-- it meets the conflict. The tests compare them with a rebuild instead.

-- Grain day x region x category. orders = distinct valid orders in the cell.
CREATE TABLE IF NOT EXISTS mart_base.sales_cell (
    date_key     integer NOT NULL,
    region_key   integer NOT NULL,
    category_key integer NOT NULL,
    revenue_cents bigint  NOT NULL,
    margin_cents bigint  NOT NULL ,
    items        bigint  NOT NULL,
    units        bigint  NOT NULL,
    orders       bigint  NOT NULL,
    PRIMARY KEY (date_key, region_key, category_key)
) WITH (fillfactor = 80);  -- room for in-place (HOT) updates by sync

-- Grain month x region x category: sales_cell's days added up (orders
-- stays distinct: an order has one day). For month-level questions, which
-- a pass over every day would answer 15 times slower.
CREATE TABLE IF NOT EXISTS mart_base.sales_month (
    month        date    NOT NULL,
    region_key   integer NOT NULL,
    category_key integer NOT NULL,
    revenue_cents bigint  NOT NULL,
    margin_cents bigint  NOT NULL,
    items        bigint  NOT NULL,
    units        bigint  NOT NULL,
    orders       bigint  NOT NULL,
    PRIMARY KEY (month, region_key, category_key)
);

-- Grain employee x month (employee of the order; -1 = Unassigned).
CREATE TABLE IF NOT EXISTS mart_base.manager_month (
    employee_key integer NOT NULL,
    month        date    NOT NULL,
    revenue_cents bigint  NOT NULL,
    margin_cents bigint  NOT NULL ,
    items        bigint  NOT NULL,
    units        bigint  NOT NULL,
    orders       bigint  NOT NULL,
    PRIMARY KEY (employee_key, month)
);

-- Grain month x region (region of the order).
CREATE TABLE IF NOT EXISTS mart_base.region_month (
    month      date    NOT NULL,
    region_key integer NOT NULL,
    revenue_cents bigint  NOT NULL,
    orders     bigint  NOT NULL,
    PRIMARY KEY (month, region_key)
);

-- Grain product (products with valid sales only; the view adds the rest).
CREATE TABLE IF NOT EXISTS mart_base.product_sales (
    product_key bigint  NOT NULL PRIMARY KEY,
    revenue_cents bigint  NOT NULL,
    quantity    bigint  NOT NULL,
    orders      bigint  NOT NULL
);

-- (Earlier versions kept a backfill's sales_cell parts in a table.)
DO $drop$
BEGIN
    IF to_regclass('mart_base.sales_cell_part') IS NOT NULL THEN
        DROP TABLE mart_base.sales_cell_part;
    END IF;
END
$drop$;

-- Grain customer x month with valid orders.
CREATE TABLE IF NOT EXISTS mart_base.customer_month (
    customer_key               bigint  NOT NULL,
    month                      date    NOT NULL,
    spend_cents                bigint  NOT NULL,
    orders                     bigint  NOT NULL CHECK (orders > 0),
    median_hours_to_completion numeric,
    top_category_key           integer NOT NULL,
    -- Behind customer_total: its first/last purchase and favorite category
    -- come from these, so a change recomputes only the months it touched.
    first_day                  date     NOT NULL,
    last_day                   date     NOT NULL,
    category_keys              integer[] NOT NULL,
    category_cents             bigint[]  NOT NULL,
    PRIMARY KEY (customer_key, month)
);

-- Grain customer with valid orders (the view adds the rest).
CREATE TABLE IF NOT EXISTS mart_base.customer_total (
    customer_key          bigint  NOT NULL PRIMARY KEY,
    lifetime_value_cents  bigint  NOT NULL,
    orders                bigint  NOT NULL CHECK (orders > 0),
    first_purchase        date    NOT NULL,
    last_purchase         date    NOT NULL,
    favorite_category_key integer NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_customer_total_lifetime_value
    ON mart_base.customer_total (lifetime_value_cents DESC);

-- Grain cohort month x activity month with at least one active member
-- (customers other than -1); the cohort's size is its row where
-- month = cohort_month.
CREATE TABLE IF NOT EXISTS mart_base.cohort_activity (
    cohort_month date   NOT NULL,
    month        date   NOT NULL,
    customers    bigint NOT NULL,
    PRIMARY KEY (cohort_month, month)
);

-- ---------------------------------------------------------------------------
-- Maintenance functions (run by salesdwh as the warehouse owner; not
-- executable by PUBLIC or bi_reader).
-- ---------------------------------------------------------------------------

-- Signatures of earlier versions go (CREATE OR REPLACE would add an
-- overload beside them); quietly, as drop_temp below.
DO $drop$
DECLARE
    f text;
BEGIN
    FOREACH f IN ARRAY ARRAY['mart_base.merge(text, text[], text[], text, text, text)',
                             'mart_base.merge_additive(text, text)',
                             'mart_base.store_orders(text, bigint[])',
                             'mart_base.pair_customers()',
                             'mart_base.fold_parts()',
                             'mart_base.add_deltas(bigint[])',
                             'mart_base.add_deltas(bigint[], date[], bigint[])',
                             'mart_base.recompute_customers()',
                             'mart_base.store_orders(text)',
                             'mart_base.orders_written()',
                             'mart_base.finish_build()',
                             'mart_base.drop_order_indexes()',
                             'mart_base.restore_order_indexes()'] LOOP
        IF to_regprocedure(f) IS NOT NULL THEN
            EXECUTE 'DROP FUNCTION ' || f;
        END IF;
    END LOOP;
END
$drop$;

-- date_key (YYYYMMDD; fact rows always carry a real date, SPEC §5) to the
-- first day of its month, and to its day.
CREATE OR REPLACE FUNCTION mart_base.month_of(date_key integer) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT make_date(date_key / 10000, date_key / 100 % 100, 1) $fn$;

CREATE OR REPLACE FUNCTION mart_base.day_of(date_key integer) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$ SELECT make_date(date_key / 10000, date_key / 100 % 100, date_key % 100) $fn$;

-- The median of `micros` (sorted, no NULL; NULL when empty: the mean of
-- the two middle values of an even count) in hours, rounded half away
-- from zero to 2 decimals, in integer arithmetic: exact, and the same as
-- the backfill computes in Rust (transform::marts::median_hours_cents).
CREATE OR REPLACE FUNCTION mart_base.median_hours(micros bigint[]) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $fn$
    SELECT (div(m.s, 72000000)
            + CASE WHEN abs(mod(m.s, 72000000)) * 2 >= 72000000 THEN sign(m.s) ELSE 0 END) * 0.01
    FROM (SELECT micros[(cardinality(micros) + 1) / 2]::numeric
                 + micros[cardinality(micros) / 2 + 1] AS s) m
$fn$;

-- Drops those of the temp tables `names` that exist (quietly: no NOTICE
-- per missing table in every run's log).
CREATE OR REPLACE FUNCTION mart_base.drop_temp(VARIADIC names text[])
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    n text;
BEGIN
    FOREACH n IN ARRAY names LOOP
        IF to_regclass('pg_temp.' || quote_ident(n)) IS NOT NULL THEN
            EXECUTE format('DROP TABLE pg_temp.%I', n);
        END IF;
    END LOOP;
END
$fn$;

-- The valid sales of fact rows `src` (a relation with fact_sales' columns),
-- pre-aggregated into three temp tables that every aggregate is computed
-- from (money in cents):
--   <name>           one row per order x category (with the order's day,
--                    region, customer, employee)
--   <name>_orders    one row per order (completion_micros = completed_at -
--                    ordered_at in µs;
--                    its revenue per category, by category_key)
--   <name>_products  one row per order x product
CREATE OR REPLACE FUNCTION mart_base.build_parts(src text, name text) RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    hashagg text := current_setting('enable_hashagg');
BEGIN
    PERFORM mart_base.drop_temp(name, name || '_orders', name || '_products');
    -- Over the whole fact table every group is an order or part of one, and
    -- fact_sales lies in order_id order: sorted aggregation streams over the
    -- order_id index, where hashing would hold a state per order (several
    -- times slower). Small sources hash.
    IF src = 'dwh.fact_sales' THEN
        PERFORM set_config('enable_hashagg', 'off', true);
    END IF;
    EXECUTE format($q$
        CREATE TEMP TABLE %1$I ON COMMIT DROP AS
        SELECT f.order_id, f.category_key, f.date_key, f.region_key, f.customer_key,
               f.employee_key,
               (sum(f.revenue) * 100)::bigint AS revenue,
               (sum(f.margin) * 100)::bigint  AS margin,
               count(*)                 AS items,
               sum(f.quantity)::bigint  AS units,
               min(f.ordered_at)        AS ordered_at,
               max(f.completed_at)      AS completed_at
        FROM %2$s f
        WHERE f.order_status NOT IN ('cancelled', 'returned')
        GROUP BY f.order_id, f.category_key, f.date_key, f.region_key, f.customer_key,
                 f.employee_key$q$, name, src);
    EXECUTE format($q$
        CREATE TEMP TABLE %1$I ON COMMIT DROP AS
        SELECT f.product_key, f.order_id,
               (sum(f.revenue) * 100)::bigint AS revenue,
               sum(f.quantity)::bigint AS quantity
        FROM %2$s f
        WHERE f.order_status NOT IN ('cancelled', 'returned')
        GROUP BY f.order_id, f.product_key$q$, name || '_products', src);
    PERFORM set_config('enable_hashagg', hashagg, true);
    -- The orders from the order x category rows, not from the fact rows
    -- again (fewer rows, and one scan of the facts less).
    EXECUTE format($q$
        CREATE TEMP TABLE %1$I ON COMMIT DROP AS
        SELECT p.order_id, p.date_key, p.region_key, p.customer_key, p.employee_key,
               mart_base.sum8(p.revenue) AS revenue,
               mart_base.sum8(p.margin)  AS margin,
               mart_base.sum8(p.items)   AS items,
               mart_base.sum8(p.units)   AS units,
               (extract(epoch FROM max(p.completed_at) - min(p.ordered_at)) * 1000000)::bigint
                   AS completion_micros,
               array_agg(p.category_key ORDER BY p.category_key) AS category_keys,
               array_agg(p.revenue ORDER BY p.category_key)      AS category_cents
        FROM %2$I p
        GROUP BY p.order_id, p.date_key, p.region_key, p.customer_key, p.employee_key$q$,
        name || '_orders', name);
END
$fn$;

-- Replaces the contents of aggregate table `tbl` with the contribution of
-- parts `parts`: `query` computes it (%1$s, %2$s and %3$s are a parts table
-- and its _orders and _products tables) and returns `keys` then
-- `measures`, named so.
CREATE OR REPLACE FUNCTION mart_base.merge(tbl text, keys text[], measures text[],
                                           query text, parts text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    cols text := array_to_string(ARRAY(SELECT quote_ident(c) FROM unnest(keys || measures) c), ', ');
BEGIN
    EXECUTE format('TRUNCATE mart_base.%I', tbl);
    EXECUTE format('INSERT INTO mart_base.%I (%s) %s', tbl, cols,
                   format(query, parts, parts || '_orders', parts || '_products'));
END
$fn$;

-- Adds temp table pg_temp.<tbl>_delta (the aggregate's keys and measures,
-- the last measure counting the row's members) to aggregate `tbl`; rows
-- whose count drops to 0 go; the temp table is dropped.
CREATE OR REPLACE FUNCTION mart_base.add_delta(tbl text, keys text[], measures text[])
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    key_list text := array_to_string(ARRAY(SELECT quote_ident(k) FROM unnest(keys) k), ', ');
    same_keys text := array_to_string(ARRAY(SELECT format('t.%1$I = d.%1$I', k) FROM unnest(keys) k), ' AND ');
    sets text := array_to_string(ARRAY(SELECT format('%1$I = t.%1$I + excluded.%1$I', m) FROM unnest(measures) m), ', ');
    members text := quote_ident(measures[array_length(measures, 1)]);
    cols text := array_to_string(ARRAY(SELECT quote_ident(c) FROM unnest(keys || measures) c), ', ');
    delta text := format('pg_temp.%I', tbl || '_delta');
BEGIN
    EXECUTE format('ANALYZE %s', delta);  -- so the DELETE below probes the few rows it names
    EXECUTE format($q$
        INSERT INTO mart_base.%1$I AS t (%2$s)
        SELECT %2$s FROM %5$s
        ON CONFLICT (%3$s) DO UPDATE SET %4$s$q$,
        tbl, cols, key_list, sets, delta);
    -- Rows whose count dropped to 0 go: only rows whose count fell can have.
    EXECUTE format('DELETE FROM mart_base.%1$I t USING %4$s d
                    WHERE d.%3$s < 0 AND %2$s AND t.%3$s = 0',
        tbl, same_keys, members, delta);
    EXECUTE format('DROP TABLE %s', delta);
END
$fn$;

-- The additive aggregates: table, keys, measures, and the query that
-- computes its contribution from parts (see merge). The backfill's chunks
-- compute the same in Rust (transform::marts::share).
CREATE OR REPLACE FUNCTION mart_base.additive_specs()
RETURNS TABLE (tbl text, keys text[], measures text[], query text)
LANGUAGE sql IMMUTABLE
AS $fn$ VALUES
    ('sales_cell', '{date_key,region_key,category_key}'::text[],
     '{revenue_cents,margin_cents,items,units,orders}'::text[],
     $q$SELECT date_key, region_key, category_key,
               mart_base.sum8(revenue) AS revenue_cents, mart_base.sum8(margin) AS margin_cents,
               mart_base.sum8(items) AS items, mart_base.sum8(units) AS units,
               count(*) AS orders
        FROM %1$I GROUP BY date_key, region_key, category_key$q$),
    ('sales_month', '{month,region_key,category_key}', '{revenue_cents,margin_cents,items,units,orders}',
     $q$SELECT mart_base.month_of(date_key) AS month, region_key, category_key,
               mart_base.sum8(revenue) AS revenue_cents, mart_base.sum8(margin) AS margin_cents,
               mart_base.sum8(items) AS items, mart_base.sum8(units) AS units,
               count(*) AS orders
        FROM %1$I GROUP BY mart_base.month_of(date_key), region_key, category_key$q$),
    ('manager_month', '{employee_key,month}', '{revenue_cents,margin_cents,items,units,orders}',
     $q$SELECT employee_key, mart_base.month_of(date_key) AS month,
               mart_base.sum8(revenue) AS revenue_cents, mart_base.sum8(margin) AS margin_cents,
               mart_base.sum8(items) AS items, mart_base.sum8(units) AS units,
               count(*) AS orders
        FROM %2$I GROUP BY employee_key, mart_base.month_of(date_key)$q$),
    ('region_month', '{month,region_key}', '{revenue_cents,orders}',
     $q$SELECT mart_base.month_of(date_key) AS month, region_key,
               mart_base.sum8(revenue) AS revenue_cents, count(*) AS orders
        FROM %2$I GROUP BY mart_base.month_of(date_key), region_key$q$),
    ('product_sales', '{product_key}', '{revenue_cents,quantity,orders}',
     $q$SELECT product_key, mart_base.sum8(revenue) AS revenue_cents,
               mart_base.sum8(quantity) AS quantity, count(*) AS orders
        FROM %3$I GROUP BY product_key$q$)
$fn$;

-- The additive aggregates rebuilt from parts `parts`.
CREATE OR REPLACE FUNCTION mart_base.merge_additive(parts text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    spec record;
BEGIN
    FOR spec IN SELECT * FROM mart_base.additive_specs() LOOP
        PERFORM mart_base.merge(spec.tbl, spec.keys, spec.measures, spec.query, parts);
    END LOOP;
END
$fn$;

-- The additive aggregates emptied for a backfill to COPY the sums it
-- added up; sales_cell unindexed until additive_written (one
-- sorted pass indexes hundreds of thousands of keys in half the time of
-- inserting them into the index). Idempotent.
CREATE OR REPLACE FUNCTION mart_base.start_additive()
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    spec record;
BEGIN
    FOR spec IN SELECT * FROM mart_base.additive_specs() LOOP
        EXECUTE format('TRUNCATE mart_base.%I', spec.tbl);
    END LOOP;
    ALTER TABLE mart_base.sales_cell DROP CONSTRAINT IF EXISTS sales_cell_pkey;
END
$fn$;

CREATE OR REPLACE FUNCTION mart_base.additive_written()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    ALTER TABLE mart_base.sales_cell ADD CONSTRAINT sales_cell_pkey
        PRIMARY KEY (date_key, region_key, category_key);
    -- The columns a sync looks rows up by: a third of a full ANALYZE's
    -- time (the rest of the statistics come with autovacuum).
    ANALYZE mart_base.sales_cell (date_key, region_key, category_key);
END
$fn$;

-- Recomputes customer_month from the orders of temp table `orders` (one
-- row per order with valid sales, as build_parts' <name>_orders), then
-- customer_total and cohort_activity from customer_month: every customer,
-- in SQL (the reference definition: rebuild() uses it). A backfill
-- computes the same in Rust from its spilled orders (src/marts.rs
-- build_customers), and sync the pairs its orders touched (src/marts.rs
-- recompute_pairs); the tests compare both with this.
CREATE OR REPLACE FUNCTION mart_base.recompute_customers(orders text)
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    TRUNCATE mart_base.customer_month;
    -- top_category: most revenue in the month; ties to the lowest category
    -- name, then key. The month's revenue per category is kept
    -- (category_keys/_cents) for the favorite category over all months.
    EXECUTE format($q$
    INSERT INTO mart_base.customer_month (customer_key, month, spend_cents, orders,
                                          median_hours_to_completion, top_category_key,
                                          first_day, last_day, category_keys, category_cents)
    SELECT m.customer_key, m.month, m.spend, m.orders, m.median, t.category_key,
           m.first_day, m.last_day, t.keys, t.cents
    FROM (
        SELECT s.customer_key, mart_base.month_of(s.date_key) AS month,
               mart_base.sum8(s.revenue) AS spend, count(*) AS orders,
               -- Orders not completed (NULL) are ignored.
               mart_base.median_hours(array_agg(s.completion_micros
                                                ORDER BY s.completion_micros)
                   FILTER (WHERE s.completion_micros IS NOT NULL)) AS median,
               mart_base.day_of(min(s.date_key)) AS first_day,
               mart_base.day_of(max(s.date_key)) AS last_day
        FROM pg_temp.%1$I s
        GROUP BY 1, 2
    ) m
    JOIN (
        SELECT b.customer_key, b.month,
               (array_agg(b.category_key ORDER BY b.revenue DESC, c.name, c.category_key))[1]
                   AS category_key,
               array_agg(b.category_key ORDER BY b.category_key) AS keys,
               array_agg(b.revenue ORDER BY b.category_key) AS cents
        FROM (
            SELECT s.customer_key, mart_base.month_of(s.date_key) AS month, u.category_key,
                   mart_base.sum8(u.cents) AS revenue
            FROM pg_temp.%1$I s,
                 unnest(s.category_keys, s.category_cents) AS u(category_key, cents)
            GROUP BY 1, 2, 3
        ) b
        JOIN dwh.dim_category c ON c.category_key = b.category_key
        GROUP BY b.customer_key, b.month
    ) t ON t.customer_key = m.customer_key AND t.month = m.month$q$, orders);
    PERFORM mart_base.recompute_totals();
END
$fn$;

-- Every month's top category again from its revenue per category, where
-- a category rename changed the tie break (sync), then the totals.
CREATE OR REPLACE FUNCTION mart_base.recompute_top_categories()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    UPDATE mart_base.customer_month m SET top_category_key = t.category_key
    FROM (
        SELECT b.customer_key, b.month,
               (array_agg(b.category_key ORDER BY b.revenue DESC, c.name, c.category_key))[1]
                   AS category_key
        FROM (
            SELECT m.customer_key, m.month, u.category_key, u.cents AS revenue
            FROM mart_base.customer_month m,
                 unnest(m.category_keys, m.category_cents) AS u(category_key, cents)
        ) b
        JOIN dwh.dim_category c ON c.category_key = b.category_key
        GROUP BY b.customer_key, b.month
    ) t
    WHERE t.customer_key = m.customer_key AND t.month = m.month
      AND t.category_key <> m.top_category_key;
    PERFORM mart_base.recompute_totals();
END
$fn$;

-- customer_total and cohort_activity from customer_month, every customer.
CREATE OR REPLACE FUNCTION mart_base.recompute_totals()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    TRUNCATE mart_base.customer_total;
    INSERT INTO mart_base.customer_total (customer_key, lifetime_value_cents, orders,
                                          first_purchase, last_purchase, favorite_category_key)
    SELECT o.customer_key, o.lifetime_value, o.orders, o.first_day, o.last_day, f.category_key
    FROM (
        SELECT customer_key, mart_base.sum8(spend_cents) AS lifetime_value,
               mart_base.sum8(orders) AS orders, min(first_day) AS first_day,
               max(last_day) AS last_day
        FROM mart_base.customer_month
        GROUP BY customer_key
    ) o
    JOIN (
        SELECT b.customer_key,
               (array_agg(b.category_key ORDER BY b.revenue DESC, c.name, c.category_key))[1]
                   AS category_key
        FROM (
            SELECT m.customer_key, u.category_key, mart_base.sum8(u.cents) AS revenue
            FROM mart_base.customer_month m,
                 unnest(m.category_keys, m.category_cents) AS u(category_key, cents)
            GROUP BY m.customer_key, u.category_key
        ) b
        JOIN dwh.dim_category c ON c.category_key = b.category_key
        GROUP BY b.customer_key
    ) f ON f.customer_key = o.customer_key;

    -- Cohorts: customers other than -1 (Unknown), by their first month.
    TRUNCATE mart_base.cohort_activity;
    INSERT INTO mart_base.cohort_activity (cohort_month, month, customers)
    SELECT cohort_month, month, count(*)
    FROM (SELECT min(month) OVER (PARTITION BY customer_key) AS cohort_month, month
          FROM mart_base.customer_month WHERE customer_key <> -1) c
    GROUP BY cohort_month, month;
END
$fn$;

-- The aggregates marked built, with statistics for the next sync's
-- lookups by key.
CREATE OR REPLACE FUNCTION mart_base.mark_built()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    ANALYZE mart_base.customer_month, mart_base.sales_cell;
    UPDATE mart_base.state SET stale = false, built_at = now(), updated_at = now();
END
$fn$;

-- Every aggregate from fact_sales: init and apply_changes when the
-- aggregates are stale, and a backfill resumed from chunks that kept no
-- parts.
CREATE OR REPLACE FUNCTION mart_base.rebuild()
RETURNS void
LANGUAGE plpgsql
-- The hash aggregates of a full pass fit in memory instead of spilling;
-- JIT compiling costs more than it saves on these queries.
SET work_mem = '256MB'
SET jit = off
AS $fn$
BEGIN
    PERFORM mart_base.build_parts('dwh.fact_sales', 'mart_all');
    PERFORM mart_base.merge_additive('mart_all');
    PERFORM mart_base.recompute_customers('mart_all_orders');
    PERFORM mart_base.drop_temp('mart_all', 'mart_all_orders', 'mart_all_products',
                                'mart_touched', 'mart_old');
    PERFORM mart_base.mark_built();
END
$fn$;

-- A backfill that computes the aggregates from its chunks starts here
-- (its first attempt): every aggregate emptied, all marked stale until
-- finish_parts (a rebuild puts a stale state right).
CREATE OR REPLACE FUNCTION mart_base.start_parts()
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'mart_base'::regnamespace AND c.relkind = 'r'
               AND c.relname <> 'state'
    LOOP
        EXECUTE format('TRUNCATE mart_base.%I', t);
    END LOOP;
    PERFORM mart_base.mark_stale();
END
$fn$;

-- The end of such a backfill. After its chunks, side by side with the
-- fact indexes, each in its own transaction and idempotent:
--   * start_additive, then salesdwh COPYs the additive sums it added up,
--     then additive_written;
--   * prepare_customers, then salesdwh COPYs the customer aggregates it
--     computed from the orders (src/marts.rs, from its own spill of the
--     chunks' orders), then customers_written;
-- and last, in the backfill's final transaction, finish_parts.
CREATE OR REPLACE FUNCTION mart_base.prepare_customers()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    TRUNCATE mart_base.customer_month, mart_base.customer_total, mart_base.cohort_activity;
    -- Filled unindexed, indexed in customers_written (as start_additive).
    ALTER TABLE mart_base.customer_month DROP CONSTRAINT IF EXISTS customer_month_pkey;
    ALTER TABLE mart_base.customer_total DROP CONSTRAINT IF EXISTS customer_total_pkey;
    DROP INDEX IF EXISTS mart_base.ix_customer_total_lifetime_value;
END
$fn$;

CREATE OR REPLACE FUNCTION mart_base.customers_written()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    ALTER TABLE mart_base.customer_month ADD CONSTRAINT customer_month_pkey
        PRIMARY KEY (customer_key, month);
    ALTER TABLE mart_base.customer_total ADD CONSTRAINT customer_total_pkey
        PRIMARY KEY (customer_key);
    CREATE INDEX ix_customer_total_lifetime_value
        ON mart_base.customer_total (lifetime_value_cents DESC);
    ANALYZE mart_base.customer_month (customer_key, month);  -- as additive_written
END
$fn$;

CREATE OR REPLACE FUNCTION mart_base.finish_parts()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    UPDATE mart_base.state SET stale = false, built_at = now(), updated_at = now();
END
$fn$;

-- Builds the aggregates when they are new, stale or of an older definition
-- (init). Returns whether it rebuilt them.
CREATE OR REPLACE FUNCTION mart_base.ensure_built()
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
BEGIN
    IF (SELECT stale FROM mart_base.state) THEN
        PERFORM mart_base.rebuild();
        RETURN true;
    END IF;
    RETURN false;
END
$fn$;

-- A run changed facts without maintaining the aggregates.
CREATE OR REPLACE FUNCTION mart_base.mark_stale()
RETURNS void
LANGUAGE sql
AS $fn$ UPDATE mart_base.state SET stale = true, updated_at = now() $fn$;

-- Keeps the current fact rows of the orders `order_ids` (those not kept
-- yet in this transaction) as their "old" contribution. Call it before any
-- of their fact rows change; apply_changes() then uses them.
CREATE OR REPLACE FUNCTION mart_base.capture(order_ids bigint[])
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    fresh bigint[];
BEGIN
    IF to_regclass('pg_temp.mart_touched') IS NULL THEN
        CREATE TEMP TABLE mart_touched (order_id bigint PRIMARY KEY) ON COMMIT DROP;
        CREATE TEMP TABLE mart_old ON COMMIT DROP AS SELECT * FROM dwh.fact_sales WITH NO DATA;
    END IF;
    EXECUTE 'WITH n AS (INSERT INTO pg_temp.mart_touched SELECT DISTINCT unnest($1)
                        ON CONFLICT DO NOTHING RETURNING order_id)
             SELECT array_agg(order_id) FROM n'
        INTO fresh USING order_ids;
    IF fresh IS NOT NULL THEN
        EXECUTE 'INSERT INTO pg_temp.mart_old SELECT * FROM dwh.fact_sales WHERE order_id = ANY($1)'
            USING fresh;
    END IF;
END
$fn$;

-- capture() of every order with a fact row of the products `product_ids`
-- (natural keys): call it before restating their cost or category.
CREATE OR REPLACE FUNCTION mart_base.capture_products(product_ids bigint[])
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    ids bigint[];
BEGIN
    EXECUTE 'SELECT array_agg(DISTINCT f.order_id) FROM dwh.fact_sales f
             JOIN dwh.dim_product p ON p.product_key = f.product_key
             WHERE p.product_id = ANY($1)'
        INTO ids USING product_ids;
    IF ids IS NOT NULL THEN
        PERFORM mart_base.capture(ids);
    END IF;
END
$fn$;

-- Sync, at the end of its transaction: rebuilds stale aggregates (and
-- returns true), or else prepares the temp tables salesdwh COPYs the
-- captured orders' changes into (src/marts.rs apply_changes): for each
-- additive aggregate <tbl>_delta, and mart_pairs, the (customer, month)
-- pairs of those orders before and after; then add_deltas.
CREATE OR REPLACE FUNCTION mart_base.apply_changes()
RETURNS boolean
LANGUAGE plpgsql
AS $fn$
DECLARE
    spec record;
BEGIN
    IF (SELECT stale FROM mart_base.state) THEN
        PERFORM mart_base.rebuild();
        RETURN true;
    END IF;
    PERFORM mart_base.drop_temp('mart_pairs');
    CREATE TEMP TABLE mart_pairs (customer_key bigint, month date) ON COMMIT DROP;
    FOR spec IN SELECT * FROM mart_base.additive_specs() LOOP
        PERFORM mart_base.drop_temp(spec.tbl || '_delta');
        EXECUTE format('CREATE TEMP TABLE %I (LIKE mart_base.%I) ON COMMIT DROP',
                       spec.tbl || '_delta', spec.tbl);
    END LOOP;
    RETURN false;
END
$fn$;

-- The captured orders (capture), none: an empty array.
CREATE OR REPLACE FUNCTION mart_base.touched_orders()
RETURNS bigint[]
LANGUAGE plpgsql
AS $fn$
DECLARE
    ids bigint[];
BEGIN
    IF to_regclass('pg_temp.mart_touched') IS NOT NULL THEN
        EXECUTE 'SELECT array_agg(order_id ORDER BY order_id) FROM pg_temp.mart_touched' INTO ids;
    END IF;
    RETURN coalesce(ids, '{}');
END
$fn$;

-- The additive deltas salesdwh COPYed added (add_delta), after it
-- COPYed mart_pairs.
CREATE OR REPLACE FUNCTION mart_base.add_deltas()
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    spec record;
BEGIN
    FOR spec IN SELECT * FROM mart_base.additive_specs() LOOP
        PERFORM mart_base.add_delta(spec.tbl, spec.keys, spec.measures);
    END LOOP;
    ANALYZE pg_temp.mart_pairs;  -- the pairs' months are read by index
END
$fn$;

-- Sync, after reading the old months of the pairs' customers: their
-- pairs' customer_month rows and their customer_total rows go (salesdwh
-- COPYs the new ones), and temp table mart_cohort_delta awaits the change
-- of their cohort counts.
CREATE OR REPLACE FUNCTION mart_base.replace_pairs()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    DELETE FROM mart_base.customer_month m USING pg_temp.mart_pairs w
    WHERE m.customer_key = w.customer_key AND m.month = w.month;
    DELETE FROM mart_base.customer_total
    WHERE customer_key IN (SELECT customer_key FROM pg_temp.mart_pairs);
    PERFORM mart_base.drop_temp('mart_cohort_delta');
    CREATE TEMP TABLE mart_cohort_delta (cohort_month date, month date, customers bigint)
        ON COMMIT DROP;
END
$fn$;

-- Adds mart_cohort_delta to cohort_activity; rows that reach 0 go.
CREATE OR REPLACE FUNCTION mart_base.apply_cohort_delta()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    INSERT INTO mart_base.cohort_activity AS t (cohort_month, month, customers)
    SELECT cohort_month, month, customers FROM pg_temp.mart_cohort_delta
    ON CONFLICT (cohort_month, month) DO UPDATE SET customers = t.customers + excluded.customers;
    DELETE FROM mart_base.cohort_activity t USING pg_temp.mart_cohort_delta d
    WHERE d.customers < 0 AND t.cohort_month = d.cohort_month AND t.month = d.month
      AND t.customers = 0;
    DROP TABLE pg_temp.mart_cohort_delta;
END
$fn$;

-- The end of a sync's upkeep: its temp tables go.
CREATE OR REPLACE FUNCTION mart_base.changes_applied()
RETURNS void
LANGUAGE plpgsql
AS $fn$
BEGIN
    PERFORM mart_base.drop_temp('mart_touched', 'mart_old', 'mart_pairs');
    UPDATE mart_base.state SET updated_at = now();
END
$fn$;

-- Every row of every aggregate as 'table: row' text, in order: the tests
-- and the bench compare what the runs kept with what rebuild() computes.
CREATE OR REPLACE FUNCTION mart_base.contents()
RETURNS SETOF text
LANGUAGE plpgsql
STABLE
AS $fn$
DECLARE
    t text;
BEGIN
    FOR t IN SELECT c.relname FROM pg_class c
             WHERE c.relnamespace = 'mart_base'::regnamespace AND c.relkind = 'r'
               AND c.relname <> 'state' AND c.relname NOT LIKE '%\_part'
             ORDER BY c.relname
    LOOP
        RETURN QUERY EXECUTE format('SELECT %L || '': '' || r::text AS x FROM mart_base.%I r ORDER BY x', t, t);
    END LOOP;
END
$fn$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mart_base FROM PUBLIC;

-- ---------------------------------------------------------------------------
-- sales_daily: sales dynamics.
-- Grain: one row per day × region × category with at least one valid sale.
-- orders counts distinct orders in the cell: additive over days and regions
-- (an order has one day and one region), NOT over categories (an order with
-- items in two categories counts in both).
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.sales_daily AS
-- The day from date_key itself (what dim_date holds for it): a join less on
-- the largest mart, about a third faster on a full pass. (Spelled out, not
-- mart_base.day_of: a view's functions run with its reader's rights.)
SELECT make_date(s.date_key / 10000, s.date_key / 100 % 100, s.date_key % 100) AS sale_date,
       s.date_key,
       s.region_key,
       r.name               AS region_name,
       s.category_key,
       c.name               AS category_name,
       s.revenue_cents * 0.01 AS revenue,
       s.margin_cents * 0.01  AS margin,
       s.orders,
       s.items,
       s.units
FROM mart_base.sales_cell s
LEFT JOIN dwh.dim_region r   ON r.region_key = s.region_key
LEFT JOIN dwh.dim_category c ON c.category_key = s.category_key;

COMMENT ON VIEW mart.sales_daily IS
    'Sales dynamics: one row per day x region x category with valid sales (cancelled/returned excluded). items = order lines, units = summed quantity, orders = distinct orders in the cell (not additive over categories).';

-- ---------------------------------------------------------------------------
-- sales_monthly: sales dynamics by month (sales_daily's days added up).
-- Grain: one row per month × region × category with at least one valid
-- sale; orders as in sales_daily (distinct orders in the cell).
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.sales_monthly AS
SELECT s.month,
       s.region_key,
       r.name               AS region_name,
       s.category_key,
       c.name               AS category_name,
       s.revenue_cents * 0.01 AS revenue,
       s.margin_cents * 0.01  AS margin,
       s.orders,
       s.items,
       s.units
FROM mart_base.sales_month s
LEFT JOIN dwh.dim_region r   ON r.region_key = s.region_key
LEFT JOIN dwh.dim_category c ON c.category_key = s.category_key;

COMMENT ON VIEW mart.sales_monthly IS
    'Sales dynamics by month: sales_daily added up to month x region x category (first day of the month). orders = distinct orders in the cell (not additive over categories).';

-- ---------------------------------------------------------------------------
-- manager_performance: manager effectiveness.
-- Grain: one row per employee × month with at least one valid order.
-- Online orders and unresolved managers are the Unassigned member
-- (employee_key -1), listed like any manager. average_check =
-- round(revenue / orders, 2). region_name is the employee's own region.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.manager_performance AS
SELECT m.month,
       m.employee_key,
       e.employee_id,
       e.full_name                 AS employee_name,
       e.title,
       r.name                      AS region_name,
       m.revenue_cents * 0.01      AS revenue,
       m.margin_cents * 0.01       AS margin,
       m.orders,
       m.items,
       m.units,
       round(m.revenue_cents * 0.01 / m.orders, 2) AS average_check
FROM mart_base.manager_month m
LEFT JOIN dwh.dim_employee e ON e.employee_key = m.employee_key
LEFT JOIN dwh.dim_region r   ON r.region_key = e.region_key;

COMMENT ON VIEW mart.manager_performance IS
    'Manager effectiveness: one row per employee x month with valid orders; employee_key -1 = Unassigned (online orders). average_check = round(revenue / orders, 2).';

-- ---------------------------------------------------------------------------
-- product_ranking: top-N and least popular products, all time.
-- Grain: one row per product in dim_product (the -1 member only if it has
-- sales). Products never sold (or only in cancelled/returned orders) are
-- listed with revenue 0.00 and quantity 0: they are the least popular.
-- Ranks use RANK(): ties share a rank and the next rank is skipped
-- (1, 1, 3), so "rank <= N" can return more than N products on a tie.
--   revenue_rank / quantity_rank:                 1 = most revenue / units
--   revenue_rank_from_bottom / quantity_rank_...: 1 = least revenue / units
-- orders = distinct valid orders with the product.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.product_ranking AS
SELECT p.product_key,
       p.product_id,
       p.sku,
       p.name                           AS product_name,
       p.category_name,
       p.is_active,
       coalesce(s.revenue_cents * 0.01, 0.00) AS revenue,
       coalesce(s.quantity, 0)          AS quantity,
       coalesce(s.orders, 0)            AS orders,
       rank() OVER (ORDER BY coalesce(s.revenue_cents, 0) DESC) AS revenue_rank,
       rank() OVER (ORDER BY coalesce(s.revenue_cents, 0) ASC)  AS revenue_rank_from_bottom,
       rank() OVER (ORDER BY coalesce(s.quantity, 0) DESC)   AS quantity_rank,
       rank() OVER (ORDER BY coalesce(s.quantity, 0) ASC)    AS quantity_rank_from_bottom
FROM dwh.dim_product p
LEFT JOIN mart_base.product_sales s ON s.product_key = p.product_key
WHERE p.product_key <> -1 OR s.product_key IS NOT NULL;

COMMENT ON VIEW mart.product_ranking IS
    'Products by revenue and units, all time, valid sales only; never-sold products listed with 0. RANK() ties (1, 1, 3); *_rank 1 = best, *_rank_from_bottom 1 = least popular.';

-- ---------------------------------------------------------------------------
-- average_check: revenue / distinct orders.
-- Grain: one row per month × region (the order's region) with valid orders.
-- Every order has one region, so a month's overall check is
-- sum(revenue) / sum(orders) over its rows.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.average_check AS
SELECT a.month,
       a.region_key,
       r.name                      AS region_name,
       a.revenue_cents * 0.01      AS revenue,
       a.orders,
       round(a.revenue_cents * 0.01 / a.orders, 2) AS average_check
FROM mart_base.region_month a
LEFT JOIN dwh.dim_region r ON r.region_key = a.region_key;

COMMENT ON VIEW mart.average_check IS
    'Average check = round(revenue / distinct orders, 2), one row per month x region (the order''s region) with valid orders.';

-- ---------------------------------------------------------------------------
-- customer_report: customer behaviour per month.
-- Grain: one row per customer × month with at least one valid order.
--   spend               = revenue of the month's valid orders
--   average_order_price = round(spend / orders, 2)
--   top_category        = category with the most revenue that month; ties
--                         go to the lowest category name, then the lowest
--                         category_key
--   median_hours_to_completion = median of completed_at - ordered_at in
--                         hours over the month's valid orders that are
--                         completed (an even count: the mean of the two
--                         middle values), computed exactly and rounded half
--                         away from zero to 2 decimals; NULL when none is
--                         completed yet
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.customer_report AS
SELECT m.customer_key,
       cu.customer_id,
       cu.full_name,
       m.month,
       m.spend_cents * 0.01         AS spend,
       m.orders,
       round(m.spend_cents * 0.01 / m.orders, 2) AS average_order_price,
       m.median_hours_to_completion,
       c.name                       AS top_category
FROM mart_base.customer_month m
LEFT JOIN dwh.dim_customer cu ON cu.customer_key = m.customer_key
LEFT JOIN dwh.dim_category c  ON c.category_key = m.top_category_key;

COMMENT ON VIEW mart.customer_report IS
    'Per customer x month with valid orders: spend, orders, average_order_price = round(spend / orders, 2), top_category (most revenue; ties to the lowest name), median_hours_to_completion (median of completed_at - ordered_at in hours over completed valid orders).';

-- ---------------------------------------------------------------------------
-- customer_metrics: customer value, all time.
-- Grain: one row per customer in dim_customer (the -1 Unknown member only if
-- it has sales). Customers without valid orders are listed with
-- lifetime_value 0.00, orders 0 and NULL dates.
--   lifetime_value      = revenue of all valid orders
--   average_order_value = round(lifetime_value / orders, 2), NULL without orders
--   first/last_purchase = order day of the first / last valid order
--   as_of               = today (UTC) when read; days_since_* = as_of - day
--   favorite_category   = category with the most lifetime revenue; ties go
--                         to the lowest category name, then category_key
--   value_segment       = 'High' if lifetime_value >= 5000,
--                         'Medium' if >= 1000, else 'Low'
--   segment             = the source CRM segment (dim_customer.segment)
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.customer_metrics AS
SELECT cu.customer_key,
       cu.customer_id,
       cu.full_name,
       cu.segment,
       coalesce(t.lifetime_value_cents * 0.01, 0.00) AS lifetime_value,
       coalesce(t.orders, 0)                      AS orders,
       round(t.lifetime_value_cents * 0.01 / t.orders, 2) AS average_order_value,
       t.first_purchase,
       t.last_purchase,
       a.as_of,
       a.as_of - t.first_purchase                 AS days_since_first_purchase,
       a.as_of - t.last_purchase                  AS days_since_last_purchase,
       fav.name                                   AS favorite_category,
       CASE
           WHEN coalesce(t.lifetime_value_cents, 0) >= 500000 THEN 'High'
           WHEN coalesce(t.lifetime_value_cents, 0) >= 100000 THEN 'Medium'
           ELSE 'Low'
       END                                        AS value_segment
FROM dwh.dim_customer cu
CROSS JOIN (SELECT (now() AT TIME ZONE 'UTC')::date AS as_of) a
LEFT JOIN mart_base.customer_total t ON t.customer_key = cu.customer_key
LEFT JOIN dwh.dim_category fav       ON fav.category_key = t.favorite_category_key
WHERE cu.customer_key <> -1 OR t.customer_key IS NOT NULL;

COMMENT ON VIEW mart.customer_metrics IS
    'Per customer, all time, valid orders only: lifetime_value, orders, average_order_value, first/last purchase and days since (as of today, UTC), favorite_category (most revenue; ties to the lowest name), value_segment High >= 5000, Medium >= 1000, else Low.';

-- ---------------------------------------------------------------------------
-- customer_retention: monthly cohorts.
-- A customer's cohort is the month of their first valid order. Grain: one
-- row per cohort × activity month, from the cohort month (months_since_first
-- = 0, share 1.0000) through the last month with any valid sale, INCLUDING
-- months in which no cohort member ordered (active_customers 0, share
-- 0.0000).
--   active_customers = cohort members with a valid order in activity_month
--   retention_share  = round(active_customers / cohort_size, 4)
-- The Unknown customer (-1) stands for many unresolved customers and is
-- left out.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.customer_retention AS
WITH size AS (
    SELECT cohort_month, customers AS cohort_size
    FROM mart_base.cohort_activity
    WHERE month = cohort_month
),
last AS (
    SELECT max(month) AS last_month FROM mart_base.cohort_activity
)
SELECT s.cohort_month,
       g.month::date                             AS activity_month,
       ((extract(year FROM g.month) - extract(year FROM s.cohort_month)) * 12
        + extract(month FROM g.month) - extract(month FROM s.cohort_month))::integer
                                                 AS months_since_first,
       s.cohort_size,
       coalesce(a.customers, 0)                  AS active_customers,
       round(coalesce(a.customers, 0)::numeric / s.cohort_size, 4) AS retention_share
FROM size s
CROSS JOIN last l
CROSS JOIN LATERAL generate_series(s.cohort_month::timestamp, l.last_month::timestamp,
                                   interval '1 month') AS g(month)
LEFT JOIN mart_base.cohort_activity a
       ON a.cohort_month = s.cohort_month AND a.month = g.month::date;

COMMENT ON VIEW mart.customer_retention IS
    'Monthly cohorts (month of the first valid order): per cohort x activity month, from the cohort month (share 1) to the last month with sales, zeros included; retention_share = round(active_customers / cohort_size, 4). Unknown customer (-1) excluded.';

-- ---------------------------------------------------------------------------
-- etl_recent_runs: the last 100 runs, newest first (plain view: the run log
-- is small and this must be current).
--   duration_seconds = finished_at - started_at; for a run still running,
--                      the time elapsed so far
--   rows_per_second  = rows_loaded / duration, finished runs only
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.etl_recent_runs AS
SELECT r.run_id,
       r.command,
       r.status,
       r.started_at,
       r.finished_at,
       round(extract(epoch FROM coalesce(r.finished_at, now()) - r.started_at), 3)
                                                 AS duration_seconds,
       r.rows_read,
       r.rows_loaded,
       r.rows_rejected,
       CASE WHEN r.finished_at > r.started_at
            THEN round(r.rows_loaded / extract(epoch FROM r.finished_at - r.started_at), 1)
       END                                       AS rows_per_second,
       r.error,
       r.tool_version
FROM dwh.etl_runs r
ORDER BY r.started_at DESC, r.run_id DESC
LIMIT 100;

COMMENT ON VIEW mart.etl_recent_runs IS
    'The last 100 runs, newest first: duration (elapsed so far while running), rows, rows_per_second = rows_loaded / duration (finished runs), error.';

-- ---------------------------------------------------------------------------
-- etl_performance: one row per command over the whole run log.
--   rows_per_second      = sum(rows_loaded) / sum(duration) of succeeded runs
--   best_rows_per_second = the fastest succeeded run
--   failed_last_7_days   = failed runs started in the last 7 days
--   last_error           = error of the most recent failed run
-- ---------------------------------------------------------------------------
CREATE OR REPLACE VIEW mart.etl_performance AS
SELECT r.command,
       count(*)                                            AS runs,
       count(*) FILTER (WHERE r.status = 'succeeded')      AS succeeded,
       count(*) FILTER (WHERE r.status = 'failed')         AS failed,
       count(*) FILTER (WHERE r.status = 'running')        AS running,
       count(*) FILTER (WHERE r.status = 'failed'
                          AND r.started_at >= now() - interval '7 days')
                                                           AS failed_last_7_days,
       max(r.started_at)                                   AS last_started_at,
       max(r.finished_at) FILTER (WHERE r.status = 'succeeded') AS last_succeeded_at,
       max(r.finished_at) FILTER (WHERE r.status = 'failed')    AS last_failed_at,
       (array_agg(r.error ORDER BY r.started_at DESC, r.run_id DESC)
            FILTER (WHERE r.status = 'failed'))[1]         AS last_error,
       sum(r.rows_loaded) FILTER (WHERE r.status = 'succeeded') AS rows_loaded,
       round(avg(extract(epoch FROM r.finished_at - r.started_at))
                 FILTER (WHERE r.status = 'succeeded'), 3) AS avg_duration_seconds,
       round(sum(r.rows_loaded) FILTER (WHERE r.status = 'succeeded')
             / nullif(sum(extract(epoch FROM r.finished_at - r.started_at))
                          FILTER (WHERE r.status = 'succeeded'), 0), 1)
                                                           AS rows_per_second,
       round(max(r.rows_loaded / extract(epoch FROM r.finished_at - r.started_at))
                 FILTER (WHERE r.status = 'succeeded' AND r.finished_at > r.started_at), 1)
                                                           AS best_rows_per_second
FROM dwh.etl_runs r
GROUP BY r.command;

COMMENT ON VIEW mart.etl_performance IS
    'Per command: runs by status, failures (last 7 days, last error), rows_per_second = sum(rows_loaded) / sum(duration) of succeeded runs, best run.';

-- ---------------------------------------------------------------------------
-- Functions (STABLE, SECURITY INVOKER: the caller's SELECT rights apply).
-- ---------------------------------------------------------------------------

-- top_customers(n): the n customers with the most lifetime value (from
-- customer_metrics, so as of the last refresh). Customers without valid
-- orders are left out; equal values are ordered by customer_id and share a
-- RANK(), so exactly min(n, buyers) rows come back. n <= 0 or NULL: no rows.
CREATE OR REPLACE FUNCTION mart.top_customers(n integer)
RETURNS TABLE (
    rank                bigint,
    customer_key        bigint,
    customer_id         bigint,
    full_name           varchar,
    lifetime_value      numeric,
    orders              bigint,
    average_order_value numeric,
    value_segment       text,
    favorite_category   varchar,
    last_purchase       date
)
LANGUAGE sql
STABLE
AS $fn$
    SELECT rank() OVER (ORDER BY m.lifetime_value DESC),
           m.customer_key, m.customer_id, m.full_name, m.lifetime_value, m.orders,
           m.average_order_value, m.value_segment, m.favorite_category, m.last_purchase
    FROM mart.customer_metrics m
    WHERE m.orders > 0
      AND m.customer_key <> -1
    ORDER BY m.lifetime_value DESC, m.customer_id
    LIMIT greatest(coalesce(n, 0), 0)
$fn$;

COMMENT ON FUNCTION mart.top_customers(integer) IS
    'The n customers with the most lifetime value (valid orders, as of the last refresh); ties share a rank and are ordered by customer_id.';

-- sales_report(date_from, date_to): one row per day of [date_from, date_to]
-- (both inclusive, read live from fact_sales), days without valid sales
-- included with zeros and a NULL average_check. orders is additive over the
-- days (an order has one day). date_from > date_to or a NULL bound: no rows.
CREATE OR REPLACE FUNCTION mart.sales_report(date_from date, date_to date)
RETURNS TABLE (
    sale_date     date,
    revenue       numeric,
    margin        numeric,
    orders        bigint,
    items         bigint,
    units         bigint,
    average_check numeric
)
LANGUAGE sql
STABLE
AS $fn$
    SELECT g.day::date,
           coalesce(s.revenue, 0.00),
           coalesce(s.margin, 0.00),
           coalesce(s.orders, 0),
           coalesce(s.items, 0),
           coalesce(s.units, 0),
           round(s.revenue / s.orders, 2)
    FROM generate_series(date_from::timestamp, date_to::timestamp, interval '1 day') AS g(day)
    LEFT JOIN (
        SELECT o.date_key,
               sum(o.revenue) AS revenue,
               sum(o.margin)  AS margin,
               count(*)       AS orders,
               sum(o.items)   AS items,
               sum(o.units)   AS units
        FROM (
            SELECT f.date_key, f.order_id,
                   sum(f.revenue)  AS revenue,
                   sum(f.margin)   AS margin,
                   count(*)        AS items,
                   sum(f.quantity) AS units
            FROM dwh.fact_sales f
            WHERE f.date_key BETWEEN to_char(date_from, 'YYYYMMDD')::integer
                                 AND to_char(date_to, 'YYYYMMDD')::integer
              AND f.order_status NOT IN ('cancelled', 'returned')
            GROUP BY f.date_key, f.order_id
        ) o
        GROUP BY o.date_key
    ) s ON s.date_key = to_char(g.day, 'YYYYMMDD')::integer
    ORDER BY g.day
$fn$;

COMMENT ON FUNCTION mart.sales_report(date, date) IS
    'Daily revenue, margin, orders, items, units and average check for [date_from, date_to] (inclusive, live), empty days with zeros.';

-- product_velocity(days, as_of): units and revenue per day over the `days`
-- days ending at as_of (inclusive; default: today, UTC), read live from
-- fact_sales. Every product is listed (the -1 member only with sales), the
-- unsold with zeros, fastest first (ties by product_id); velocity_rank is a
-- RANK() by units.
--   units_per_day   = round(units / days, 3)
--   revenue_per_day = round(revenue / days, 2)
-- days <= 0 or NULL: no rows.
CREATE OR REPLACE FUNCTION mart.product_velocity(
    days integer,
    as_of date DEFAULT (now() AT TIME ZONE 'UTC')::date
)
RETURNS TABLE (
    velocity_rank   bigint,
    product_key     bigint,
    product_id      bigint,
    sku             varchar,
    product_name    varchar,
    category_name   varchar,
    is_active       boolean,
    window_start    date,
    window_end      date,
    units           bigint,
    revenue         numeric,
    orders          bigint,
    units_per_day   numeric,
    revenue_per_day numeric
)
LANGUAGE sql
STABLE
AS $fn$
    SELECT rank() OVER (ORDER BY coalesce(s.units, 0) DESC),
           p.product_key, p.product_id, p.sku, p.name, p.category_name, p.is_active,
           as_of - days + 1,
           as_of,
           coalesce(s.units, 0),
           coalesce(s.revenue, 0.00),
           coalesce(s.orders, 0),
           round(coalesce(s.units, 0)::numeric / days, 3),
           round(coalesce(s.revenue, 0.00) / days, 2)
    FROM dwh.dim_product p
    LEFT JOIN (
        SELECT f.product_key,
               sum(f.quantity)            AS units,
               sum(f.revenue)             AS revenue,
               count(DISTINCT f.order_id) AS orders
        FROM dwh.fact_sales f
        WHERE f.date_key BETWEEN to_char(as_of - days + 1, 'YYYYMMDD')::integer
                             AND to_char(as_of, 'YYYYMMDD')::integer
          AND f.order_status NOT IN ('cancelled', 'returned')
        GROUP BY f.product_key
    ) s ON s.product_key = p.product_key
    WHERE days > 0
      AND (p.product_key <> -1 OR s.product_key IS NOT NULL)
    ORDER BY coalesce(s.units, 0) DESC, p.product_id
$fn$;

COMMENT ON FUNCTION mart.product_velocity(integer, date) IS
    'Units and revenue per day of every product over the `days` days ending at as_of (inclusive, default today UTC, live); fastest first.';

-- ---------------------------------------------------------------------------
-- bi_reader: reads every mart and calls the functions, nothing else.
-- 01_dwh_schema.sql grants SELECT on the tables of dwh and mart and sets
-- default privileges, but default privileges only cover objects created by
-- the role that set them; granting again here works whoever runs init and in
-- whatever order. Functions are executable by PUBLIC by default: take that
-- back and give it to bi_reader only.
-- ---------------------------------------------------------------------------
GRANT USAGE ON SCHEMA mart TO bi_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA mart TO bi_reader;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mart FROM PUBLIC;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA mart TO bi_reader;

-- ---------------------------------------------------------------------------
-- Memory for the analysts' sorts: work_mem 64MB for every new session on the
-- warehouse database (PostgreSQL's default is 4MB). A mart read that groups
-- sales_daily's 400k cells (revenue by category and month) sorted them on
-- disk in 250-330 ms; in memory it takes about 150 ms. A session's own SET
-- still wins. Only the database's owner (or a superuser) may set it: init
-- run by another role leaves the setting as it is and says so.
-- ---------------------------------------------------------------------------
DO $work_mem$
BEGIN
    IF pg_has_role(current_user,
                   (SELECT datdba FROM pg_database WHERE datname = current_database()),
                   'USAGE') THEN
        EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '64MB');
    ELSE
        RAISE NOTICE 'salesdwh: not the owner of database %: work_mem for the marts left as it is',
            current_database();
    END IF;
END
$work_mem$;
