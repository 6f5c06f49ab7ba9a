//! Progress of long work: an indicatif bar on a terminal, a plain log line
//! every few seconds elsewhere (cron, CI). The only module that knows
//! indicatif.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{
    HumanCount, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle,
};

const LOG_EVERY: Duration = Duration::from_secs(5);

/// Counts work done towards a known total. Cheap to call from any thread.
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Mutex<Instant>,
}

/// Several bars drawn together (one per stage or table); off a terminal
/// each reports by log lines.
pub struct Board {
    multi: Option<MultiProgress>,
    quiet: bool,
}

impl Board {
    pub fn new(quiet: bool) -> Self {
        let multi = (!quiet && std::io::stderr().is_terminal())
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Board { multi, quiet }
    }

    /// A new bar below the existing ones.
    pub fn bar(&self, label: &str, total: u64) -> Progress {
        let mut p = Progress::build(label, total, self.quiet, false);
        if let (Some(multi), Some(bar)) = (&self.multi, p.bar.take()) {
            p.bar = Some(multi.add(bar));
        }
        p
    }
}

impl Progress {
    /// A bar when stderr is a terminal (unless `quiet`), log lines otherwise.
    pub fn new(label: &str, total: u64, quiet: bool) -> Self {
        Self::build(label, total, quiet, true)
    }

    fn build(label: &str, total: u64, quiet: bool, draw: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let target = if draw {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            };
            let bar = ProgressBar::with_draw_target(Some(total), target);
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>12} [{bar:30}] {human_pos}/{human_len} rows  {rate}  ETA {eta}",
                )
                .expect("static template")
                // Whole rows: indicatif's {per_sec} prints four decimals.
                .with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{}/s", HumanCount(state.per_sec().round() as u64));
                    },
                )
                .progress_chars("=> "),
            );
            bar.set_prefix(label.to_string());
            bar
        });
        let now = Instant::now();
        Progress {
            label: label.to_string(),
            total,
            done: AtomicU64::new(0),
            bar,
            started: now,
            last_log: Mutex::new(now),
        }
    }

    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        match &self.bar {
            Some(bar) => {
                // Totals may be estimates: never show more done than total.
                if bar.length().is_some_and(|len| done > len) {
                    bar.set_length(done);
                }
                bar.set_position(done)
            }
            None => {
                let mut last = self.last_log.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= LOG_EVERY {
                    *last = Instant::now();
                    let secs = self.started.elapsed().as_secs_f64();
                    tracing::info!(
                        "{}: {done}/{} rows ({:.0} rows/s)",
                        self.label,
                        self.total.max(done),
                        done as f64 / secs.max(1e-9)
                    );
                }
            }
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
