//! The drivers: bounded channels from extract through transform to load.
//! `backfill` is the one-shot historical load; `sync` is the incremental
//! one and reuses its extract, transform and load stages.

pub mod backfill;
pub mod sync;

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
    NotEmpty { sales: i64, payments: i64 },
    #[error("an unfinished backfill was started with other options ({recorded})")]
    ResumeMismatch { recorded: String },
    #[error("a backfill of this warehouse is unfinished")]
    BackfillUnfinished,
    #[error("a pipeline task stopped unexpectedly: {0}")]
    Task(String),
    /// A `backfill --truncate` that stopped after emptying the facts: the
    /// same command would empty them again, so its hint differs.
    #[error(transparent)]
    TruncatedThenStopped(Box<PipelineError>),
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

    /// A failure a rerun recovers from, keeping the work already done.
    pub fn resumable(&self) -> bool {
        matches!(
            self,
            PipelineError::Load(_)
                | PipelineError::Extract(_)
                | PipelineError::Connect(_)
                | PipelineError::State(StateError::LockLost)
        )
    }

    pub fn hint(&self) -> Option<&'static str> {
        if self.resumable() {
            return Some(
                "rerun the same command when the servers are reachable: finished work is kept",
            );
        }
        match self {
            PipelineError::NotEmpty { .. } => Some(
                "use `salesdwh sync` for new changes, or `salesdwh backfill --truncate` to reload the facts from scratch",
            ),
            PipelineError::ResumeMismatch { .. } => Some(
                "rerun with the same --from/--to/--batch-rows to resume it, or add --truncate to start over",
            ),
            PipelineError::NotSetUp(_) => Some(
                "run `salesdwh init` first: after an upgrade it installs the new marts and rebuilds them; nothing was changed",
            ),
            PipelineError::BackfillUnfinished => Some(
                "finish it with `salesdwh backfill` (without --truncate, which would start it over), then sync; nothing was changed",
            ),
            PipelineError::TruncatedThenStopped(e) if e.resumable() => Some(
                "when the servers are reachable, rerun `salesdwh backfill` without --truncate to resume: the chunks already loaded are kept (--truncate would start over)",
            ),
            PipelineError::TruncatedThenStopped(e) => e.hint(),
            PipelineError::State(StateError::Locked { .. }) => {
                Some("wait for the other run to finish; nothing was changed")
            }
            _ => None,
        }
    }
}
