//! The backfill's orders as the customer marts need them, spilled to local
//! bucket files while the chunks load (a customer's orders all in one
//! bucket), so that the customer aggregates are computed at the end one
//! bucket at a time, without writing every order to PostgreSQL and reading
//! them back in customer order (a sort of them all).
//! Memory holds one bucket; the files live in a temporary directory that
//! goes with the spill, also when the run fails. A killed run cannot remove
//! its directory: the next backfill on the machine removes those whose
//! process is gone ([`sweep_stale`]; a directory is named after its
//! process id).

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use crate::transform::marts::SalesOrder;

/// Buckets: at 10M order items (about 3.1M orders) one holds about 50k
/// orders, some 10 MB in memory while its customers are computed.
const BUCKETS: usize = 64;

/// Orders being written.
pub struct OrderSpill {
    dir: tempfile::TempDir,
    files: Vec<BufWriter<File>>,
}

/// Orders written, read back a bucket at a time.
pub struct SpilledOrders {
    dir: tempfile::TempDir,
}

const PREFIX: &str = "salesdwh-orders-";

/// Removes the spills of killed runs from the temporary directory.
pub fn sweep_stale() {
    sweep(&std::env::temp_dir());
}

/// The spill directories in the temporary directory of process `pid`.
pub fn dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let prefix = format!("{PREFIX}{pid}-");
    std::fs::read_dir(std::env::temp_dir())
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the spill directories in `tmp` of processes that are gone
/// (killed runs); best effort. Where there is no /proc, it leaves them.
fn sweep(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        let gone = Path::new("/proc/self").exists() && !Path::new(&format!("/proc/{pid}")).exists();
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn bucket_of(customer_key: i64) -> usize {
    // Spreads consecutive keys (Fibonacci hashing).
    ((customer_key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % BUCKETS
}

fn bucket_path(dir: &Path, i: usize) -> std::path::PathBuf {
    dir.join(format!("orders-{i:02}.bin"))
}

impl OrderSpill {
    /// A new spill in the system's temporary directory.
    pub fn new() -> io::Result<Self> {
        let tmp = std::env::temp_dir();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}-", std::process::id()))
            .tempdir_in(&tmp)?;
        let files = (0..BUCKETS)
            .map(|i| File::create(bucket_path(dir.path(), i)).map(BufWriter::new))
            .collect::<io::Result<_>>()?;
        Ok(OrderSpill { dir, files })
    }

    /// Where the files are (for error messages).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Appends orders (with their order_id, which is not kept).
    pub fn add(&mut self, orders: &[(i64, SalesOrder)]) -> io::Result<()> {
        for (_, o) in orders {
            let f = &mut self.files[bucket_of(o.customer_key)];
            f.write_all(&o.customer_key.to_le_bytes())?;
            f.write_all(&o.month.to_le_bytes())?;
            f.write_all(&o.date_key.to_le_bytes())?;
            f.write_all(&o.spend_cents.to_le_bytes())?;
            f.write_all(&o.completion_micros.unwrap_or(i64::MIN).to_le_bytes())?;
            f.write_all(&(o.categories.len() as u32).to_le_bytes())?;
            for (k, c) in &o.categories {
                f.write_all(&k.to_le_bytes())?;
                f.write_all(&c.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Flushes the files for reading.
    pub fn finish(self) -> io::Result<SpilledOrders> {
        for f in self.files {
            f.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(SpilledOrders { dir: self.dir })
    }
}

impl SpilledOrders {
    pub fn buckets(&self) -> usize {
        BUCKETS
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The orders of bucket `i`, in (customer_key, month) order.
    pub fn bucket(&self, i: usize) -> io::Result<Vec<SalesOrder>> {
        let mut bytes = Vec::new();
        File::open(bucket_path(self.dir.path(), i))?.read_to_end(&mut bytes)?;
        let mut r = Reader { bytes: &bytes };
        let mut orders = Vec::new();
        while !r.bytes.is_empty() {
            let customer_key = r.i64()?;
            let month = r.i32()?;
            let date_key = r.i32()?;
            let spend_cents = r.i64()?;
            let completion_micros = Some(r.i64()?).filter(|v| *v != i64::MIN);
            let n = r.i32()? as u32 as usize;
            let mut categories = Vec::with_capacity(n);
            for _ in 0..n {
                categories.push((r.i32()?, r.i64()?));
            }
            orders.push(SalesOrder {
                customer_key,
                month,
                date_key,
                spend_cents,
                completion_micros,
                categories,
            });
        }
        orders.sort_by_key(|o| (o.customer_key, o.month));
        Ok(orders)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        if self.bytes.len() < N {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated order spill",
            ));
        }
        let (head, rest) = self.bytes.split_at(N);
        self.bytes = rest;
        Ok(head.try_into().expect("split at N"))
    }

    fn i32(&mut self) -> io::Result<i32> {
        Ok(i32::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> io::Result<i64> {
        Ok(i64::from_le_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(
        customer: i64,
        month: i32,
        completion: Option<i64>,
        cats: &[(i32, i64)],
    ) -> SalesOrder {
        SalesOrder {
            customer_key: customer,
            month,
            date_key: 20260101 + month,
            spend_cents: cats.iter().map(|c| c.1).sum(),
            completion_micros: completion,
            categories: cats.to_vec(),
        }
    }

    #[test]
    fn orders_come_back_whole_by_customer_and_month() {
        let written = vec![
            (1, order(7, 3, Some(5), &[(1, 100), (4, -20)])),
            (2, order(-1, 2, None, &[])),
            (3, order(7, 1, Some(0), &[(2, 50)])),
            (
                4,
                order(i64::MAX, 9, Some(i64::MAX), &[(i32::MIN, i64::MIN)]),
            ),
        ];
        let mut spill = OrderSpill::new().unwrap();
        spill.add(&written[..2]).unwrap();
        spill.add(&written[2..]).unwrap();
        let spilled = spill.finish().unwrap();
        let mut read: Vec<SalesOrder> = Vec::new();
        for i in 0..spilled.buckets() {
            let bucket = spilled.bucket(i).unwrap();
            // Sorted within a bucket; a customer in one bucket only.
            assert!(bucket
                .windows(2)
                .all(|w| (w[0].customer_key, w[0].month) <= (w[1].customer_key, w[1].month)));
            read.extend(bucket);
        }
        let mut want: Vec<SalesOrder> = written.into_iter().map(|(_, o)| o).collect();
        want.sort_by_key(|o| (o.customer_key, o.month));
        read.sort_by_key(|o| (o.customer_key, o.month));
        assert_eq!(read, want);
        let dir = spilled.dir().to_path_buf();
        drop(spilled);
        assert!(!dir.exists(), "the files go with the spill");
    }

    #[test]
    fn a_killed_run_s_spill_is_swept_and_a_live_one_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        // No process has pid 4194305 (above Linux's maximum pid).
        let dead = tmp.path().join(format!("{PREFIX}4194305-abc"));
        let live = tmp
            .path()
            .join(format!("{PREFIX}{}-abc", std::process::id()));
        let other = tmp.path().join("unrelated-4194305");
        for d in [&dead, &live, &other] {
            std::fs::create_dir(d).unwrap();
        }
        sweep(tmp.path());
        assert!(!dead.exists());
        assert!(live.exists() && other.exists());
    }
}
