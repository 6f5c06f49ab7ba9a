//! Parse, run, print one error line, exit 0/1/2 (SPEC §6).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    tune_malloc();
    let cli = salesdwh::cli::Cli::parse(); // usage errors: clap prints and exits 2
    match salesdwh::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err((error, secrets)) => {
            eprintln!("salesdwh: error: {}", error.report(&secrets));
            ExitCode::from(error.exit_code())
        }
    }
}

/// glibc malloc settings for a long bulk load, before any other thread
/// exists. `MALLOC_ARENA_MAX` / `MALLOC_MMAP_THRESHOLD_` in the
/// environment still decide when set.
///
/// * At most four arenas (the default is eight per core). The backfill's
///   chunks are allocated and freed on many threads (runtime, blocking
///   pool, polars), and every arena keeps the memory freed into it: with
///   the default, peak RSS grew from about 105 MB at 1M order items to
///   146 MB at 10M; with four, from 97 to 117 MB, at the same CPU time
///   (two arenas saved a little more memory but cost CPU in contention).
/// * A fixed mmap threshold of 2 MiB. By default glibc raises it (up to
///   32 MiB) after the first large free, and its trim threshold to twice
///   that, so each arena kept up to ~10 MB free: RSS crept from 102 to
///   124 MB during a 10M-item backfill's facts phase. Fixed, the trim
///   threshold stays at its 128 KiB: 10M peak 102–106 MB, 1M 87–92 MB,
///   for about 0.06 s more system time per 1M backfill (page faults of
///   memory handed back and taken again). The large COPY buffers are
///   reused, not reallocated (`load::copy::recycle`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // the project's one unsafe block (Cargo.toml [lints])
fn tune_malloc() {
    let unset = |name: &str| std::env::var_os(name).is_none();
    // SAFETY: mallopt only sets allocator parameters; it runs first thing
    // in main, before any other thread exists.
    unsafe {
        if unset("MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, 4);
        }
        if unset("MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 2 << 20);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}
