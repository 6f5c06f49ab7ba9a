//! The backfill's orders as the customer marts need them, spilled to local
//! bucket files while the chunks load (a customer's orders all in one
//! bucket), so that the customer aggregates are computed at the end one
//! bucket at a time, without writing every order to PostgreSQL and reading
//! them back in customer order (a sort of them all). Memory holds one
//! bucket.
//!
//! Beside them, each chunk's sums per day × region × category cell (one
//! sorted run per chunk, [`OrderSpill::add_cells`]), merged and added up
//! at the end ([`SpilledOrders::cells`]): held in memory until the end,
//! they were the largest part of a backfill's peak at 10M order items (a
//! B-tree of up to a million cells, its nodes half full when filled in key
//! order). The merge holds a small buffer per run.
//!
//! The files live in a temporary directory that
//! goes with the spill, also when the run fails. A killed run cannot remove
//! its directory: the next backfill on the machine removes those whose
//! process is gone ([`sweep_stale`]; a directory is named after its
//! process id).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use crate::transform::marts::{CellKey, SalesOrder, Sums};

/// Buckets: at 10M order items (about 3.1M orders) one holds about 50k
/// orders, some 10 MB in memory while its customers are computed.
const BUCKETS: usize = 64;

/// Orders being written.
pub struct OrderSpill {
    dir: tempfile::TempDir,
    files: Vec<BufWriter<File>>,
    cells: BufWriter<File>,
    /// Each run of cells: (its first byte in the cells file, its cells).
    runs: Vec<(u64, u64)>,
}

/// Orders written, read back a bucket at a time.
pub struct SpilledOrders {
    dir: tempfile::TempDir,
    runs: Vec<(u64, u64)>,
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

fn cells_path(dir: &Path) -> std::path::PathBuf {
    dir.join("cells.bin")
}

/// A spilled cell: its key (3 × 4 bytes) and sums (5 × 8 bytes).
const CELL_BYTES: usize = 12 + 40;

/// Cells a run's cursor reads at a time: at 10M order items (500 runs) the
/// merge holds about 3 MB of buffers.
const CELLS_PER_READ: u64 = 128;

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
        let cells = BufWriter::new(File::create(cells_path(dir.path()))?);
        Ok(OrderSpill {
            dir,
            files,
            cells,
            runs: Vec::new(),
        })
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

    /// Appends one chunk's cell sums as a run (in key order, as a B-tree
    /// map gives them).
    pub fn add_cells(&mut self, cells: &BTreeMap<CellKey, Sums>) -> io::Result<()> {
        if cells.is_empty() {
            return Ok(());
        }
        let n = cells.len() as u64;
        let start = self
            .runs
            .last()
            .map_or(0, |&(at, len)| at + len * CELL_BYTES as u64);
        self.runs.push((start, n));
        for ((date_key, region, category), sums) in cells {
            for k in [date_key, region, category] {
                self.cells.write_all(&k.to_le_bytes())?;
            }
            for v in sums {
                self.cells.write_all(&v.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Flushes the files for reading.
    pub fn finish(self) -> io::Result<SpilledOrders> {
        for f in self.files.into_iter().chain([self.cells]) {
            f.into_inner().map_err(|e| e.into_error())?;
        }
        Ok(SpilledOrders {
            dir: self.dir,
            runs: self.runs,
        })
    }
}

impl SpilledOrders {
    pub fn buckets(&self) -> usize {
        BUCKETS
    }

    /// Every spilled cell once, in key order, with the sums of all its
    /// runs added up (each call reads the runs again).
    pub fn cells(&self) -> io::Result<CellMerge> {
        let mut merge = CellMerge {
            file: File::open(cells_path(self.dir.path()))?,
            runs: self
                .runs
                .iter()
                .map(|&(next, left)| Run {
                    next,
                    left,
                    buf: Vec::new(),
                    pos: 0,
                    current: None,
                })
                .collect(),
            heap: BinaryHeap::with_capacity(self.runs.len()),
            failed: false,
        };
        for i in 0..merge.runs.len() {
            merge.advance(i)?;
        }
        Ok(merge)
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

/// A k-way merge of the cell runs ([`SpilledOrders::cells`]); an I/O error
/// ends it.
pub struct CellMerge {
    file: File,
    runs: Vec<Run>,
    /// The runs by their current key.
    heap: BinaryHeap<Reverse<(CellKey, usize)>>,
    failed: bool,
}

/// A run's cursor: what is left of it in the file, and its buffer.
struct Run {
    next: u64,
    left: u64,
    buf: Vec<u8>,
    pos: usize,
    current: Option<(CellKey, Sums)>,
}

impl CellMerge {
    /// Reads run `i`'s next cell as its current one (and heaps it).
    fn advance(&mut self, i: usize) -> io::Result<()> {
        let run = &mut self.runs[i];
        if run.pos == run.buf.len() {
            if run.left == 0 {
                run.current = None;
                return Ok(());
            }
            let take = run.left.min(CELLS_PER_READ);
            run.buf.resize(take as usize * CELL_BYTES, 0);
            self.file.seek(SeekFrom::Start(run.next))?;
            self.file.read_exact(&mut run.buf)?;
            run.next += take * CELL_BYTES as u64;
            run.left -= take;
            run.pos = 0;
        }
        let mut r = Reader {
            bytes: &run.buf[run.pos..run.pos + CELL_BYTES],
        };
        let key = (r.i32()?, r.i32()?, r.i32()?);
        let mut sums = Sums::default();
        for v in &mut sums {
            *v = r.i64()?;
        }
        run.pos += CELL_BYTES;
        run.current = Some((key, sums));
        self.heap.push(Reverse((key, i)));
        Ok(())
    }

    fn next_cell(&mut self) -> io::Result<Option<(CellKey, Sums)>> {
        let Some(Reverse((key, i))) = self.heap.pop() else {
            return Ok(None);
        };
        let mut sums = self.runs[i]
            .current
            .take()
            .map_or_else(Sums::default, |c| c.1);
        self.advance(i)?;
        while let Some(Reverse((k, j))) = self.heap.peek().copied() {
            if k != key {
                break;
            }
            self.heap.pop();
            if let Some((_, more)) = self.runs[j].current.take() {
                for (a, b) in sums.iter_mut().zip(more) {
                    *a += b;
                }
            }
            self.advance(j)?;
        }
        Ok(Some((key, sums)))
    }
}

impl Iterator for CellMerge {
    type Item = io::Result<(CellKey, Sums)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = self.next_cell();
        if next.is_err() {
            self.failed = true;
        }
        next.transpose()
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
    fn cell_runs_merge_in_key_order_and_add_up() {
        // Three runs that overlap, longer than a cursor's read, and an
        // empty one; the merge must equal one map of all their sums.
        let mut want: BTreeMap<CellKey, Sums> = BTreeMap::new();
        let mut spill = OrderSpill::new().unwrap();
        for (run, step) in [(0i64, 1i32), (1, 3), (2, 7), (3, 2)] {
            let mut cells: BTreeMap<CellKey, Sums> = BTreeMap::new();
            if run != 3 {
                for i in 0..400 {
                    let key = (20260101 + i * step % 300, i % 4 - 1, (i * step) % 5);
                    let sums = [run * 100 + i64::from(i), -1, 1, i64::from(step), run];
                    for (a, b) in cells.entry(key).or_default().iter_mut().zip(sums) {
                        *a += b;
                    }
                }
            }
            for (key, sums) in &cells {
                for (a, b) in want.entry(*key).or_default().iter_mut().zip(sums) {
                    *a += b;
                }
            }
            spill.add_cells(&cells).unwrap();
        }
        let extremes = BTreeMap::from([((i32::MIN, i32::MAX, 0), [i64::MIN, i64::MAX, 0, 0, 0])]);
        spill.add_cells(&extremes).unwrap();
        want.extend(extremes);
        let spilled = spill.finish().unwrap();
        let merged: Vec<(CellKey, Sums)> = spilled.cells().unwrap().map(|c| c.unwrap()).collect();
        assert_eq!(merged, want.into_iter().collect::<Vec<_>>());
        // A second pass reads the same.
        assert_eq!(spilled.cells().unwrap().count(), merged.len());
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
