-- salesdwh marts: schema "mart" (SPEC §7). Hand-written; not generated.
--
-- Applied by `salesdwh init` after 01_dwh_schema.sql, in the same
-- transaction, then every materialized view that is not yet populated is
-- refreshed (src/marts.rs). Pipeline runs refresh all of them at the end of
-- every successful run, CONCURRENTLY once populated.
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
--   * Names (region, category, employee, customer) are the current SCD1
--     values, as of the last refresh.
--
-- View or materialized view, for a 10M-row fact_sales:
--   * every mart that aggregates fact_sales is MATERIALIZED, with a UNIQUE
--     index on its grain so `REFRESH MATERIALIZED VIEW CONCURRENTLY` works
--     (readers are never blocked and never see an empty mart);
--   * etl_recent_runs and etl_performance read the small run log and are
--     plain views, always current.
--   None of the materialized views reads another one, so their refresh order
--   is free; src/marts.rs still orders them by dependency.
--
-- Idempotence and changed definitions:
--   * Plain views and functions are CREATE OR REPLACE. That cannot drop,
--     rename, retype or reorder a column (views) or change the result
--     columns (functions): such a change needs a DROP ... IF EXISTS right
--     before the CREATE.
--   * Materialized views cannot be replaced. Each one carries a definition
--     revision at the end of its comment ("[rev N]"). Before each
--     CREATE MATERIALIZED VIEW IF NOT EXISTS, pg_temp.drop_stale_matview(name, N)
--     drops the existing view when its revision differs, so the CREATE
--     rebuilds it (WITH NO DATA; init then populates it). An unchanged view
--     is left alone: a second init changes nothing and keeps the data.
--     Trade-off: changing a definition without bumping its revision goes
--     unnoticed on existing warehouses (IF NOT EXISTS keeps the old one), and
--     an object someone built on top of a changed mart makes init fail
--     ("other objects depend on it") rather than being dropped silently.
--     A renamed index or a removed mart needs an explicit DROP here.

-- Session-local helper (schema pg_temp): gone when init's connection closes,
-- never visible to bi_reader.
CREATE OR REPLACE FUNCTION pg_temp.drop_stale_matview(p_name text, p_rev integer)
RETURNS void
LANGUAGE plpgsql
AS $fn$
DECLARE
    v_kind "char";
    v_comment text;
BEGIN
    SELECT c.relkind, obj_description(c.oid, 'pg_class')
      INTO v_kind, v_comment
      FROM pg_class c
     WHERE c.relnamespace = 'mart'::regnamespace AND c.relname = p_name;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF v_kind <> 'm' THEN
        RAISE EXCEPTION 'mart.% exists but is not a materialized view (relkind %)', p_name, v_kind
            USING HINT = 'drop or rename it, then run salesdwh init again';
    END IF;
    IF v_comment IS NULL OR v_comment NOT LIKE format('%%[rev %s]', p_rev) THEN
        RAISE NOTICE 'mart.%: definition changed (now rev %), rebuilding', p_name, p_rev;
        EXECUTE format('DROP MATERIALIZED VIEW mart.%I', p_name);
    END IF;
END
$fn$;

-- ---------------------------------------------------------------------------
-- sales_daily: sales dynamics.
-- Grain: one row per day × region × category with at least one valid sale.
-- orders counts distinct orders in the cell: additive over days and regions
-- (an order has one day and one region), NOT over categories (an order with
-- items in two categories counts in both).
-- ---------------------------------------------------------------------------
SELECT pg_temp.drop_stale_matview('sales_daily', 1);

CREATE MATERIALIZED VIEW IF NOT EXISTS mart.sales_daily AS
SELECT d.full_date          AS sale_date,
       s.date_key,
       s.region_key,
       r.name               AS region_name,
       s.category_key,
       c.name               AS category_name,
       s.revenue,
       s.margin,
       s.orders,
       s.items,
       s.units
FROM (
    SELECT o.date_key, o.region_key, o.category_key,
           sum(o.revenue) AS revenue,
           sum(o.margin)  AS margin,
           count(*)       AS orders,
           sum(o.items)   AS items,
           sum(o.units)   AS units
    FROM (
        -- Two-level aggregation instead of count(DISTINCT order_id): both
        -- levels can hash, no sort of the whole fact table.
        SELECT f.date_key, f.region_key, f.category_key, f.order_id,
               sum(f.revenue)  AS revenue,
               sum(f.margin)   AS margin,
               count(*)        AS items,
               sum(f.quantity) AS units
        FROM dwh.fact_sales f
        WHERE f.order_status NOT IN ('cancelled', 'returned')
        GROUP BY f.date_key, f.region_key, f.category_key, f.order_id
    ) o
    GROUP BY o.date_key, o.region_key, o.category_key
) s
JOIN dwh.dim_date d     ON d.date_key = s.date_key
JOIN dwh.dim_region r   ON r.region_key = s.region_key
JOIN dwh.dim_category c ON c.category_key = s.category_key
WITH NO DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ux_sales_daily_grain
    ON mart.sales_daily (date_key, region_key, category_key);

COMMENT ON MATERIALIZED VIEW mart.sales_daily IS
    'Sales dynamics: one row per day x region x category with valid sales (cancelled/returned excluded). items = order lines, units = summed quantity, orders = distinct orders in the cell (not additive over categories). [rev 1]';

-- ---------------------------------------------------------------------------
-- manager_performance: manager effectiveness.
-- Grain: one row per employee × month with at least one valid order.
-- Online orders and unresolved managers are the Unassigned member
-- (employee_key -1), listed like any manager. average_check =
-- round(revenue / orders, 2). region_name is the employee's own region.
-- ---------------------------------------------------------------------------
SELECT pg_temp.drop_stale_matview('manager_performance', 1);

CREATE MATERIALIZED VIEW IF NOT EXISTS mart.manager_performance AS
SELECT date_trunc('month', d.full_date::timestamp)::date AS month,
       o.employee_key,
       e.employee_id,
       e.full_name                 AS employee_name,
       e.title,
       r.name                      AS region_name,
       sum(o.revenue)              AS revenue,
       sum(o.margin)               AS margin,
       count(*)                    AS orders,
       sum(o.items)                AS items,
       sum(o.units)                AS units,
       round(sum(o.revenue) / count(*), 2) AS average_check
FROM (
    SELECT f.employee_key, f.order_id, f.date_key,
           sum(f.revenue)  AS revenue,
           sum(f.margin)   AS margin,
           count(*)        AS items,
           sum(f.quantity) AS units
    FROM dwh.fact_sales f
    WHERE f.order_status NOT IN ('cancelled', 'returned')
    GROUP BY f.employee_key, f.order_id, f.date_key
) o
JOIN dwh.dim_date d     ON d.date_key = o.date_key
JOIN dwh.dim_employee e ON e.employee_key = o.employee_key
JOIN dwh.dim_region r   ON r.region_key = e.region_key
GROUP BY date_trunc('month', d.full_date::timestamp)::date, o.employee_key,
         e.employee_id, e.full_name, e.title, r.name
WITH NO DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ux_manager_performance_grain
    ON mart.manager_performance (employee_key, month);

COMMENT ON MATERIALIZED VIEW mart.manager_performance IS
    'Manager effectiveness: one row per employee x month with valid orders; employee_key -1 = Unassigned (online orders). average_check = round(revenue / orders, 2). [rev 1]';

-- ---------------------------------------------------------------------------
-- product_ranking: top-N and least popular products, all time.
-- Grain: one row per product in dim_product (the -1 member only if it has
-- sales). Products never sold (or only in cancelled/returned orders) are
-- listed with revenue 0.00 and quantity 0: they are the least popular.
-- Ranks use RANK(): ties share a rank and the next rank is skipped
-- (1, 1, 3), so "rank <= N" can return more than N products on a tie.
--   revenue_rank / quantity_rank:                 1 = most revenue / units
--   revenue_rank_from_bottom / quantity_rank_...: 1 = least revenue / units
-- ---------------------------------------------------------------------------
SELECT pg_temp.drop_stale_matview('product_ranking', 1);

CREATE MATERIALIZED VIEW IF NOT EXISTS mart.product_ranking AS
SELECT p.product_key,
       p.product_id,
       p.sku,
       p.name                           AS product_name,
       p.category_name,
       p.is_active,
       coalesce(s.revenue, 0.00)        AS revenue,
       coalesce(s.quantity, 0)          AS quantity,
       coalesce(s.orders, 0)            AS orders,
       rank() OVER (ORDER BY coalesce(s.revenue, 0.00) DESC) AS revenue_rank,
       rank() OVER (ORDER BY coalesce(s.revenue, 0.00) ASC)  AS revenue_rank_from_bottom,
       rank() OVER (ORDER BY coalesce(s.quantity, 0) DESC)   AS quantity_rank,
       rank() OVER (ORDER BY coalesce(s.quantity, 0) ASC)    AS quantity_rank_from_bottom
FROM dwh.dim_product p
LEFT JOIN (
    SELECT o.product_key,
           sum(o.revenue)  AS revenue,
           sum(o.quantity) AS quantity,
           count(*)        AS orders
    FROM (
        SELECT f.product_key, f.order_id,
               sum(f.revenue)  AS revenue,
               sum(f.quantity) AS quantity
        FROM dwh.fact_sales f
        WHERE f.order_status NOT IN ('cancelled', 'returned')
        GROUP BY f.product_key, f.order_id
    ) o
    GROUP BY o.product_key
) s ON s.product_key = p.product_key
WHERE p.product_key <> -1 OR s.product_key IS NOT NULL
WITH NO DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ux_product_ranking_grain
    ON mart.product_ranking (product_key);

COMMENT ON MATERIALIZED VIEW mart.product_ranking IS
    'Products by revenue and units, all time, valid sales only; never-sold products listed with 0. RANK() ties (1, 1, 3); *_rank 1 = best, *_rank_from_bottom 1 = least popular. [rev 1]';

-- ---------------------------------------------------------------------------
-- average_check: revenue / distinct orders.
-- Grain: one row per month × region (the order's region) with valid orders.
-- Every order has one region, so a month's overall check is
-- sum(revenue) / sum(orders) over its rows.
-- ---------------------------------------------------------------------------
SELECT pg_temp.drop_stale_matview('average_check', 1);

CREATE MATERIALIZED VIEW IF NOT EXISTS mart.average_check AS
SELECT date_trunc('month', d.full_date::timestamp)::date AS month,
       o.region_key,
       r.name                      AS region_name,
       sum(o.revenue)              AS revenue,
       count(*)                    AS orders,
       round(sum(o.revenue) / count(*), 2) AS average_check
FROM (
    SELECT f.region_key, f.order_id, f.date_key,
           sum(f.revenue) AS revenue
    FROM dwh.fact_sales f
    WHERE f.order_status NOT IN ('cancelled', 'returned')
    GROUP BY f.region_key, f.order_id, f.date_key
) o
JOIN dwh.dim_date d   ON d.date_key = o.date_key
JOIN dwh.dim_region r ON r.region_key = o.region_key
GROUP BY date_trunc('month', d.full_date::timestamp)::date, o.region_key, r.name
WITH NO DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ux_average_check_grain
    ON mart.average_check (month, region_key);

COMMENT ON MATERIALIZED VIEW mart.average_check IS
    'Average check = round(revenue / distinct orders, 2), one row per month x region (the order''s region) with valid orders. [rev 1]';

-- ---------------------------------------------------------------------------
-- customer_report: customer behaviour per month.
-- Grain: one row per customer × month with at least one valid order.
--   spend               = revenue of the month's valid orders
--   average_order_price = round(spend / orders, 2)
--   top_category        = category with the most revenue that month; ties
--                         go to the lowest category name, then the lowest
--                         category_key
--   median_hours_to_completion = median (percentile_cont(0.5), interpolated)
--                         of completed_at - ordered_at in hours over the
--                         month's valid orders that are completed, rounded
--                         to 2 decimals; NULL when none is completed yet
-- ---------------------------------------------------------------------------
SELECT pg_temp.drop_stale_matview('customer_report', 2);

CREATE MATERIALIZED VIEW IF NOT EXISTS mart.customer_report AS
WITH by_order AS (
    SELECT f.customer_key, f.order_id, f.date_key,
           sum(f.revenue) AS revenue,
           extract(epoch FROM max(f.completed_at) - min(f.ordered_at)) / 3600 AS hours_to_completion
    FROM dwh.fact_sales f
    WHERE f.order_status NOT IN ('cancelled', 'returned')
    GROUP BY f.customer_key, f.order_id, f.date_key
),
by_month AS (
    SELECT o.customer_key,
           date_trunc('month', d.full_date::timestamp)::date AS month,
           sum(o.revenue) AS spend,
           count(*)       AS orders,
           -- NULL hours (orders not completed) are ignored by percentile_cont.
           round((percentile_cont(0.5) WITHIN GROUP (ORDER BY o.hours_to_completion))::numeric, 2)
                          AS median_hours_to_completion
    FROM by_order o
    JOIN dwh.dim_date d ON d.date_key = o.date_key
    GROUP BY o.customer_key, date_trunc('month', d.full_date::timestamp)::date
),
by_category AS (
    SELECT f.customer_key, f.date_key, f.category_key,
           sum(f.revenue) AS revenue
    FROM dwh.fact_sales f
    WHERE f.order_status NOT IN ('cancelled', 'returned')
    GROUP BY f.customer_key, f.date_key, f.category_key
),
top_category AS (
    SELECT DISTINCT ON (m.customer_key, m.month)
           m.customer_key, m.month, c.name AS category_name
    FROM (
        SELECT b.customer_key,
               date_trunc('month', d.full_date::timestamp)::date AS month,
               b.category_key,
               sum(b.revenue) AS revenue
        FROM by_category b
        JOIN dwh.dim_date d ON d.date_key = b.date_key
        GROUP BY b.customer_key, date_trunc('month', d.full_date::timestamp)::date, b.category_key
    ) m
    JOIN dwh.dim_category c ON c.category_key = m.category_key
    ORDER BY m.customer_key, m.month, m.revenue DESC, c.name, c.category_key
)
SELECT m.customer_key,
       cu.customer_id,
       cu.full_name,
       m.month,
       m.spend,
       m.orders,
       round(m.spend / m.orders, 2) AS average_order_price,
       m.median_hours_to_completion,
       t.category_name              AS top_category
FROM by_month m
JOIN dwh.dim_customer cu ON cu.customer_key = m.customer_key
JOIN top_category t      ON t.customer_key = m.customer_key AND t.month = m.month
WITH NO DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ux_customer_report_grain
    ON mart.customer_report (customer_key, month);

COMMENT ON MATERIALIZED VIEW mart.customer_report IS
    'Per customer x month with valid orders: spend, orders, average_order_price = round(spend / orders, 2), top_category (most revenue; ties to the lowest name), median_hours_to_completion (median of completed_at - ordered_at in hours over completed valid orders). [rev 2]';

-- ---------------------------------------------------------------------------
-- customer_metrics: customer value, all time.
-- Grain: one row per customer in dim_customer (the -1 Unknown member only if
-- it has sales). Customers without valid orders are listed with
-- lifetime_value 0.00, orders 0 and NULL dates.
--   lifetime_value      = revenue of all valid orders
--   average_order_value = round(lifetime_value / orders, 2), NULL without orders
--   first/last_purchase = order day of the first / last valid order
--   as_of               = the UTC day of the refresh; days_since_* = as_of - day
--   favorite_category   = category with the most lifetime revenue; ties go
--                         to the lowest category name, then category_key
--   value_segment       = 'High' if lifetime_value >= 5000,
--                         'Medium' if >= 1000, else 'Low'
--   segment             = the source CRM segment (dim_customer.segment)
-- ---------------------------------------------------------------------------
SELECT pg_temp.drop_stale_matview('customer_metrics', 1);

CREATE MATERIALIZED VIEW IF NOT EXISTS mart.customer_metrics AS
WITH by_order AS (
    SELECT f.customer_key, f.order_id, f.date_key,
           sum(f.revenue) AS revenue
    FROM dwh.fact_sales f
    WHERE f.order_status NOT IN ('cancelled', 'returned')
    GROUP BY f.customer_key, f.order_id, f.date_key
),
per_customer AS (
    SELECT o.customer_key,
           sum(o.revenue)    AS lifetime_value,
           count(*)          AS orders,
           min(d.full_date)  AS first_purchase,
           max(d.full_date)  AS last_purchase
    FROM by_order o
    JOIN dwh.dim_date d ON d.date_key = o.date_key
    GROUP BY o.customer_key
),
favorite AS (
    SELECT DISTINCT ON (b.customer_key)
           b.customer_key, c.name AS category_name
    FROM (
        SELECT f.customer_key, f.category_key, sum(f.revenue) AS revenue
        FROM dwh.fact_sales f
        WHERE f.order_status NOT IN ('cancelled', 'returned')
        GROUP BY f.customer_key, f.category_key
    ) b
    JOIN dwh.dim_category c ON c.category_key = b.category_key
    ORDER BY b.customer_key, b.revenue DESC, c.name, c.category_key
),
as_of AS (
    SELECT (now() AT TIME ZONE 'UTC')::date AS as_of
)
SELECT cu.customer_key,
       cu.customer_id,
       cu.full_name,
       cu.segment,
       coalesce(p.lifetime_value, 0.00)           AS lifetime_value,
       coalesce(p.orders, 0)                      AS orders,
       round(p.lifetime_value / p.orders, 2)      AS average_order_value,
       p.first_purchase,
       p.last_purchase,
       a.as_of,
       a.as_of - p.first_purchase                 AS days_since_first_purchase,
       a.as_of - p.last_purchase                  AS days_since_last_purchase,
       fav.category_name                          AS favorite_category,
       CASE
           WHEN coalesce(p.lifetime_value, 0) >= 5000 THEN 'High'
           WHEN coalesce(p.lifetime_value, 0) >= 1000 THEN 'Medium'
           ELSE 'Low'
       END                                        AS value_segment
FROM dwh.dim_customer cu
CROSS JOIN as_of a
LEFT JOIN per_customer p ON p.customer_key = cu.customer_key
LEFT JOIN favorite fav   ON fav.customer_key = cu.customer_key
WHERE cu.customer_key <> -1 OR p.customer_key IS NOT NULL
WITH NO DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ux_customer_metrics_grain
    ON mart.customer_metrics (customer_key);

-- Serves top_customers(n) and "most valuable customers" without a sort.
CREATE INDEX IF NOT EXISTS ix_customer_metrics_lifetime_value
    ON mart.customer_metrics (lifetime_value DESC, customer_id);

COMMENT ON MATERIALIZED VIEW mart.customer_metrics IS
    'Per customer, all time, valid orders only: lifetime_value, orders, average_order_value, first/last purchase and days since (as of the refresh day, UTC), favorite_category (most revenue; ties to the lowest name), value_segment High >= 5000, Medium >= 1000, else Low. [rev 1]';

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
SELECT pg_temp.drop_stale_matview('customer_retention', 1);

CREATE MATERIALIZED VIEW IF NOT EXISTS mart.customer_retention AS
WITH active AS (
    SELECT DISTINCT a.customer_key, date_trunc('month', d.full_date::timestamp)::date AS month
    FROM (
        SELECT DISTINCT f.customer_key, f.date_key
        FROM dwh.fact_sales f
        WHERE f.order_status NOT IN ('cancelled', 'returned')
          AND f.customer_key <> -1
    ) a
    JOIN dwh.dim_date d ON d.date_key = a.date_key
),
cohort AS (
    SELECT customer_key, min(month) AS cohort_month
    FROM active
    GROUP BY customer_key
),
cohort_size AS (
    SELECT cohort_month, count(*) AS customers
    FROM cohort
    GROUP BY cohort_month
),
activity AS (
    SELECT c.cohort_month, a.month, count(*) AS customers
    FROM cohort c
    JOIN active a ON a.customer_key = c.customer_key
    GROUP BY c.cohort_month, a.month
),
grid AS (
    SELECT s.cohort_month, s.customers AS cohort_size, g.month::date AS month
    FROM cohort_size s
    CROSS JOIN (SELECT max(month) AS last_month FROM active) l
    CROSS JOIN LATERAL generate_series(s.cohort_month::timestamp, l.last_month::timestamp,
                                       interval '1 month') AS g(month)
)
SELECT g.cohort_month,
       g.month                                   AS activity_month,
       ((extract(year FROM g.month) - extract(year FROM g.cohort_month)) * 12
        + extract(month FROM g.month) - extract(month FROM g.cohort_month))::integer
                                                 AS months_since_first,
       g.cohort_size,
       coalesce(a.customers, 0)                  AS active_customers,
       round(coalesce(a.customers, 0)::numeric / g.cohort_size, 4) AS retention_share
FROM grid g
LEFT JOIN activity a ON a.cohort_month = g.cohort_month AND a.month = g.month
WITH NO DATA;

CREATE UNIQUE INDEX IF NOT EXISTS ux_customer_retention_grain
    ON mart.customer_retention (cohort_month, months_since_first);

COMMENT ON MATERIALIZED VIEW mart.customer_retention IS
    'Monthly cohorts (month of the first valid order): per cohort x activity month, from the cohort month (share 1) to the last month with sales, zeros included; retention_share = round(active_customers / cohort_size, 4). Unknown customer (-1) excluded. [rev 1]';

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
