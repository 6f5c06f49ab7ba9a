//! The error a command returns to `main`: which exit code it means, and the
//! one line printed for it (cause chain, a hint what to do, no password).

use crate::config::ConfigError;
use crate::connect::ConnectError;
use crate::init::InitError;
use crate::pipeline::PipelineError;
use crate::schema::files::SchemaFilesError;
use crate::seed::SeedError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Init(#[from] InitError),
    #[error(transparent)]
    SchemaFiles(#[from] SchemaFilesError),
    #[error(transparent)]
    Seed(#[from] SeedError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A backfill or sync that failed on one server, named (`what` is e.g.
    /// "backfill into user@host:port/db"); connection errors name it already.
    #[error("{what} failed")]
    Run {
        what: String,
        #[source]
        source: Box<PipelineError>,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl Error {
    /// SPEC §6: 2 for usage or configuration, 1 for a failed run.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) => 2,
            Error::Seed(e) if e.is_usage() => 2,
            _ if self.pipeline().is_some_and(PipelineError::is_usage) => 2,
            _ => 1,
        }
    }

    /// The pipeline's error, whether named with its server or not.
    fn pipeline(&self) -> Option<&PipelineError> {
        match self {
            Error::Pipeline(e) => Some(e),
            Error::Run { source, .. } => Some(source),
            _ => None,
        }
    }

    /// A failed `command` (backfill, sync) with the server it failed on,
    /// when the error does not name it already.
    pub fn located(command: &str, settings: &crate::config::Settings, e: PipelineError) -> Error {
        use crate::config::Engine;
        let what = match e.server() {
            Some(Engine::MySql) => format!("{command} from {}", settings.mysql),
            Some(Engine::Postgres) => format!("{command} into {}", settings.postgres),
            None => return Error::Pipeline(e),
        };
        Error::Run {
            what,
            source: Box::new(e),
        }
    }

    fn connect_error(&self) -> Option<&ConnectError> {
        fn of(e: &PipelineError) -> Option<&ConnectError> {
            match e {
                PipelineError::Connect(e)
                | PipelineError::Extract(crate::extract::ExtractError::Connect(e)) => Some(e),
                PipelineError::TruncatedThenStopped(e) => of(e),
                _ => None,
            }
        }
        match self {
            Error::Connect(e)
            | Error::Init(InitError::Connect(e))
            | Error::Seed(SeedError::Connect(e)) => Some(e),
            _ => self.pipeline().and_then(of),
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        if let Some(e) = self.connect_error() {
            let setting = match e.endpoint().engine {
                crate::config::Engine::MySql => "MYSQL_URL",
                crate::config::Engine::Postgres => "POSTGRES_URL",
            };
            if e.is_unknown_database() {
                return Some("run `salesdwh init` to create it".into());
            }
            let then = match self.pipeline() {
                Some(PipelineError::TruncatedThenStopped(_)) => {
                    "; then rerun `salesdwh backfill` without --truncate to resume"
                }
                _ => "",
            };
            return Some(format!(
                "check that the server is up (scripts/local-stack.sh up) and that {setting} has the right host, port, user and password{then}"
            ));
        }
        match self {
            Error::Config(_) => Some("see .env.example and `salesdwh --help`".into()),
            Error::Seed(e) => e.hint().map(str::to_string),
            Error::Pipeline(e) => e.hint().map(str::to_string),
            Error::Run { source, .. } => source.hint().map(str::to_string),
            Error::Init(InitError::Drift { .. }) => Some(
                "init creates missing tables but never alters existing ones: migrate them by hand to match sql/mysql/01_schema.sql and sql/postgres/01_dwh_schema.sql, or recreate them".into(),
            ),
            Error::SchemaFiles(SchemaFilesError::Stale { .. }) => {
                Some("run `salesdwh schema generate` and commit the result".into())
            }
            _ => None,
        }
    }

    /// One line: the error and its causes joined by ": ", then the hint,
    /// with every known secret masked as a last line of defence.
    pub fn report(&self, secrets: &[String]) -> String {
        let mut line = cause_chain(self);
        if let Some(hint) = self.hint() {
            line.push_str(" (");
            line.push_str(&hint);
            line.push(')');
        }
        // Drivers sometimes repeat their own prefix ("I/O error: I/O error: …").
        let mut parts: Vec<&str> = line.split(": ").collect();
        parts.dedup();
        let mut line = parts.join(": ").replace(['\n', '\r'], " ");
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            line = line.replace(secret.as_str(), "***");
        }
        line
    }
}

/// An error and its causes joined by ": ", each cause only once:
/// `transparent` variants forward source() to the inner error, whose
/// Display is already in the line. Also what `etl_runs.error` records.
pub fn cause_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = e.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

impl From<crate::load::LoadError> for Error {
    fn from(e: crate::load::LoadError) -> Self {
        Error::Pipeline(e.into())
    }
}
