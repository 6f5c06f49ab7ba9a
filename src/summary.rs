//! The run summaries printed on stdout at the end of a command: per source
//! table rows read, loaded and rejected, rejects by reason, references
//! loaded as -1, phases, elapsed and rows/s.

use std::fmt::Write as _;

use crate::config::Settings;
use crate::pipeline::backfill::BackfillReport;
use crate::pipeline::sync::SyncReport;
use crate::pipeline::verify::{TableCheck, VerifyReport};
use crate::schema::OLTP;
use crate::transform::RunStats;

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The per-table table and the reject/unresolved lines; `changed` adds
/// the column of rows a sync's keyset found changed.
pub fn tables(prefix: &str, stats: &RunStats, changed: bool) -> String {
    let mut out = String::new();
    let _ = write!(out, "{prefix}   {:<12} ", "table");
    if changed {
        let _ = write!(out, "{:>10} ", "changed");
    }
    let _ = writeln!(out, "{:>12} {:>12} {:>10}", "read", "loaded", "rejected");
    for table in OLTP.tables {
        if let Some(t) = stats.tables.get(table.name) {
            let loaded = if table.name == "orders" {
                "-".to_string()
            } else {
                thousands(t.loaded)
            };
            let _ = write!(out, "{prefix}   {:<12} ", table.name);
            if changed {
                let _ = write!(out, "{:>10} ", thousands(t.changed));
            }
            let _ = writeln!(
                out,
                "{:>12} {:>12} {:>10}",
                thousands(t.read),
                loaded,
                thousands(t.rejected_total())
            );
        }
    }
    for table in OLTP.tables {
        if let Some(t) = stats.tables.get(table.name) {
            for (reason, n) in &t.rejected {
                let _ = writeln!(
                    out,
                    "{prefix}   rejected {reason:<26} {n:>8}  ({})",
                    table.name
                );
            }
        }
    }
    for table in OLTP.tables {
        if let Some(t) = stats.tables.get(table.name) {
            for (what, n) in &t.unresolved {
                let _ = writeln!(
                    out,
                    "{prefix}   loaded with key -1: {what:<20} {n:>8}  ({})",
                    table.name
                );
            }
        }
    }
    out
}

pub fn backfill(report: &BackfillReport, settings: &Settings) -> String {
    let mut out = String::new();
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let (read, loaded, rejected) = report.stats.totals();
    let facts = report
        .stats
        .tables
        .get("order_items")
        .map_or(0, |t| t.loaded);
    let _ = writeln!(
        out,
        "backfill: run {} succeeded: {} into {} in {secs:.2} s",
        report.run_id, settings.mysql, settings.postgres
    );
    let _ = writeln!(
        out,
        "backfill:   {} chunks ({} resumed from an earlier attempt); phases: {}",
        report.chunks,
        report.resumed_chunks,
        report
            .phases
            .iter()
            .map(|(name, d)| format!("{name} {:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out.push_str(&tables("backfill:", &report.stats, false));
    let _ = writeln!(
        out,
        "backfill: {} source rows read, {} loaded, {} rejected; {:.0} source rows/s, {:.0} fact_sales rows/s",
        thousands(read),
        thousands(loaded),
        thousands(rejected),
        read as f64 / secs,
        facts as f64 / secs
    );
    let _ = writeln!(out, "backfill: {}", report.marts.describe());
    out
}

pub fn sync(report: &SyncReport, settings: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "sync: run {} succeeded: {} into {} in {:.2} s",
        report.run_id,
        settings.mysql,
        settings.postgres,
        report.elapsed.as_secs_f64()
    );
    out.push_str(&tables("sync:", &report.stats, true));
    if let Some(n) = report.window_orders {
        let _ = writeln!(
            out,
            "sync: {} orders dated in --from/--to (by the source or the warehouse) re-derived with the changes",
            thousands(n)
        );
    }
    let _ = writeln!(
        out,
        "sync: {} dimension rows changed; {} orders re-derived: {} fact rows upserted, {} deleted, {} rejects released; {} fact rows restated for product changes",
        thousands(report.dims_changed),
        thousands(report.orders),
        thousands(report.applied.upserted),
        thousands(report.applied.deleted),
        thousands(report.applied.released),
        thousands(report.restated)
    );
    let marts = report.marts.describe();
    let _ = writeln!(
        out,
        "sync: phases: {}; {marts}",
        report
            .phases
            .iter()
            .map(|(name, d)| format!("{name} {:.2} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    out
}

/// `verify`'s comparison table and the rows that differ (the first few).
fn checks(out: &mut String, checks: &[TableCheck]) {
    let _ = writeln!(
        out,
        "verify:   {:<12} {:>12} {:>12} {:>9} {:>7} {:>7} {:>7} {:>8}",
        "table", "source", "loaded", "rejected", "extra", "missing", "doubled", "pending"
    );
    for c in checks {
        let _ = writeln!(
            out,
            "verify:   {:<12} {:>12} {:>12} {:>9} {:>7} {:>7} {:>7} {:>8}",
            c.source_table,
            thousands(c.source_rows),
            thousands(c.facts),
            thousands(c.rejects),
            c.extra.len(),
            c.missing.len(),
            c.doubled.len(),
            c.pending
        );
    }
    const SHOWN: usize = 10;
    for c in checks {
        for (what, rows) in [
            ("loaded but gone from the source", &c.extra),
            ("in the source but neither loaded nor rejected", &c.missing),
            ("both loaded and rejected", &c.doubled),
        ] {
            if rows.is_empty() {
                continue;
            }
            let listed: Vec<String> = rows
                .iter()
                .take(SHOWN)
                .map(|d| format!("{} (order {})", d.id, d.order_id))
                .collect();
            let more = rows.len().saturating_sub(SHOWN);
            let _ = writeln!(
                out,
                "verify:   {} {what}: {}{}",
                c.source_table,
                listed.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            );
        }
    }
}

pub fn verify(report: &VerifyReport, settings: &Settings) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "verify: {} against {} in {:.2} s",
        settings.mysql,
        settings.postgres,
        report.elapsed.as_secs_f64()
    );
    checks(&mut out, &report.tables);
    let pending = |c: &[TableCheck]| c.iter().map(|t| t.pending).sum::<u64>();
    let last = match &report.repair {
        Some((sync, after)) => {
            let _ = writeln!(
                out,
                "verify: repair: sync run {} re-derived {} orders: {} fact rows upserted, {} deleted, {} rejects released; compared again:",
                sync.run_id,
                thousands(sync.orders),
                thousands(sync.applied.upserted),
                thousands(sync.applied.deleted),
                thousands(sync.applied.released)
            );
            checks(&mut out, after);
            after
        }
        None => &report.tables,
    };
    let differences: usize = last.iter().map(TableCheck::differences).sum();
    let _ = writeln!(
        out,
        "verify: {}; {} rows pending (changed since the watermarks: the next sync settles them)",
        if differences == 0 {
            "no differences".to_string()
        } else {
            format!("{differences} rows differ")
        },
        thousands(pending(last))
    );
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_separators() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(1234567), "1,234,567");
    }
}
