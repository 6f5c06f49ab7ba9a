//! The drivers: bounded channels from extract through transform to load.
//! `backfill` is the one-shot historical load; `sync` is the incremental
//! one and reuses its extract, transform and load stages; `verify` compares
//! the facts with the source and repairs through `sync`.

pub mod backfill;
pub mod sync;
pub mod verify;

use crate::connect::ConnectError;
use crate::extract::ExtractError;
use crate::load::LoadError;
use crate::marts::MartsError;
use crate::state::StateError;
use crate::transform::TransformError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Transform(#[from] TransformError),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("refreshing the marts failed")]
    Marts(#[source] MartsError),
    #[error("this warehouse is not set up for this version of salesdwh")]
    NotSetUp(#[source] MartsError),
    #[error("the warehouse already holds facts ({sales} sales rows, {payments} payments)")]
    NotEmpty {
        sales: i64,
        payments: i64,
        /// The refused run had --from/--to.
        windowed: bool,
    },
    #[error("an unfinished backfill was started with other options ({recorded})")]
    ResumeMismatch { recorded: String },
    #[error("a backfill of this warehouse is unfinished")]
    BackfillUnfinished,
    /// `verify` found rows that differ (the report lists them).
    #[error("the warehouse differs from the source in {0} rows")]
    Differences(usize),
    #[error("a pipeline task stopped unexpectedly: {0}")]
    Task(String),
    /// Ctrl-C or SIGTERM during the run: it stopped where it was, keeping
    /// what it had committed.
    #[error("the run was {0}")]
    Stopped(&'static str),
    /// A `backfill --truncate` that stopped after emptying the facts: the
    /// same command would empty them again, so its hint differs.
    #[error(transparent)]
    TruncatedThenStopped(Box<PipelineError>),
}

/// Set when a run sends its last COMMIT: a stop request from then on lets
/// the run end (it is about to), so a run that committed is never closed
/// as stopped. One run per process, so one flag.
static LAST_COMMIT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called just before a run's last COMMIT (see [`LAST_COMMIT`]).
fn last_commit_under_way() {
    LAST_COMMIT.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// Runs `work` unless the process is asked to stop first: then `work` is
/// dropped where it is and the run fails with [`PipelineError::Stopped`].
async fn or_stopped<T>(
    work: impl std::future::Future<Output = Result<T, PipelineError>>,
) -> Result<T, PipelineError> {
    tokio::select! {
        result = work => result,
        how = stop_requested() => Err(PipelineError::Stopped(how)),
    }
}

/// Resolves when the process is asked to stop (Ctrl-C, SIGTERM), with how,
/// unless the run's last commit is under way. A second request ends the
/// process at once, should the wind-down hang.
async fn stop_requested() -> &'static str {
    let how = signalled().await;
    tokio::spawn(async {
        signalled().await;
        eprintln!("salesdwh: stopped without cleaning up (the next run does it)");
        std::process::exit(1);
    });
    if LAST_COMMIT.load(std::sync::atomic::Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    how
}

async fn signalled() -> &'static str {
    // A handler that cannot be installed never fires (the default stays).
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => "interrupted (Ctrl-C)",
        _ = terminate => "stopped (SIGTERM)",
    }
}

const DAY_MICROS: i64 = 86_400_000_000;

/// Midnight (UTC) of a day, in microseconds since the epoch.
fn day_micros(d: chrono::NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp_micros()
}

/// A day's `date_key` (YYYYMMDD).
fn date_key(d: chrono::NaiveDate) -> i32 {
    use chrono::Datelike;
    d.year() * 10_000 + d.month() as i32 * 100 + d.day() as i32
}

impl PipelineError {
    /// Usage errors (exit 2) as opposed to a failed run (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            PipelineError::NotEmpty { .. }
                | PipelineError::ResumeMismatch { .. }
                | PipelineError::BackfillUnfinished
                | PipelineError::NotSetUp(_)
        )
    }

    /// The server a failure happened on, when its text does not name it
    /// (a connection error does; a refusal or a stop is on neither).
    pub fn server(&self) -> Option<crate::config::Engine> {
        use crate::config::Engine;
        match self {
            PipelineError::Extract(ExtractError::Connect(_)) | PipelineError::Connect(_) => None,
            PipelineError::Extract(_) => Some(Engine::MySql),
            PipelineError::Load(_) | PipelineError::Marts(_) => Some(Engine::Postgres),
            PipelineError::State(StateError::Locked { .. }) => None,
            PipelineError::State(_) => Some(Engine::Postgres),
            PipelineError::TruncatedThenStopped(e) => e.server(),
            _ => None,
        }
    }

    /// A failure a rerun recovers from, keeping the work already done.
    pub fn resumable(&self) -> bool {
        matches!(
            self,
            PipelineError::Load(_)
                | PipelineError::Extract(_)
                | PipelineError::Connect(_)
                | PipelineError::State(StateError::LockLost)
                | PipelineError::Stopped(_)
        )
    }

    pub fn hint(&self) -> Option<&'static str> {
        if let PipelineError::Stopped(_) = self {
            return Some("rerun the same command to carry on: what the run committed is kept");
        }
        if self.resumable() {
            return Some(
                "rerun the same command when the servers are reachable: finished work is kept",
            );
        }
        match self {
            PipelineError::NotEmpty { windowed: true, .. } => Some(
                "to reload the orders of this window in place, run `salesdwh sync` with the same --from/--to (--truncate would empty all the facts and load only this window)",
            ),
            PipelineError::NotEmpty { .. } => Some(
                "use `salesdwh sync` for new changes, or `salesdwh backfill --truncate` to reload the facts from scratch",
            ),
            PipelineError::ResumeMismatch { .. } => Some(
                "rerun with the same --from/--to/--batch-rows to resume it, or add --truncate to start over",
            ),
            PipelineError::NotSetUp(_) => Some(
                "run `salesdwh init` first: after an upgrade it installs the new marts and rebuilds them; nothing was changed",
            ),
            PipelineError::Differences(_) => Some(
                "run `salesdwh verify --repair`: a sync that also re-derives their orders",
            ),
            PipelineError::BackfillUnfinished => Some(
                "finish it with `salesdwh backfill` (without --truncate, which would start it over), then sync; nothing was changed",
            ),
            PipelineError::TruncatedThenStopped(e) if e.resumable() => Some(
                "rerun `salesdwh backfill` without --truncate to resume: the chunks already loaded are kept (--truncate would start over)",
            ),
            PipelineError::TruncatedThenStopped(e) => e.hint(),
            PipelineError::State(StateError::Locked { .. }) => {
                Some("wait for the other run to finish; nothing was changed")
            }
            _ => None,
        }
    }
}
