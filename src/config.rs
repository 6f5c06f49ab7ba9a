//! Resolves raw configuration (flags, process environment, `.env`) into
//! validated [`Settings`] before any work starts.
//!
//! Precedence: a flag beats the environment, which beats `.env` (dotenvy
//! never overrides a variable that is already set). Passwords live only in
//! [`Secret`], whose `Debug`/`Display` never show the value, and a database
//! endpoint displays as `user@host:port/database`; a configuration error
//! names the setting, never its value, because the value may hold a password.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDate;

/// A password. It is only readable through [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Which server a URL points at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    MySql,
    Postgres,
}

impl Engine {
    pub fn label(self) -> &'static str {
        match self {
            Engine::MySql => "MySQL",
            Engine::Postgres => "PostgreSQL",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Engine::MySql => 3306,
            Engine::Postgres => 5432,
        }
    }
}

/// A parsed database URL. Displays without the password.
#[derive(Clone, PartialEq, Eq)]
pub struct DbEndpoint {
    pub engine: Engine,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Option<Secret>,
    /// `None` when the URL names no database (test server URLs).
    pub database: Option<String>,
}

impl DbEndpoint {
    /// Parses `mysql://user:password@host:port/database` or
    /// `postgres[ql]://…`. The error text never contains the URL.
    pub fn parse(engine: Engine, raw: &str) -> Result<Self, String> {
        let url = url::Url::parse(raw.trim()).map_err(|e| e.to_string())?;
        let schemes: &[&str] = match engine {
            Engine::MySql => &["mysql", "mariadb"],
            Engine::Postgres => &["postgres", "postgresql"],
        };
        if !schemes.contains(&url.scheme()) {
            return Err(format!("the scheme must be {}://", schemes[0]));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_matches(|c| c == '[' || c == ']').to_string(),
            _ => return Err("it names no host".into()),
        };
        let user = decode(url.username())?;
        if user.is_empty() {
            return Err("it names no user".into());
        }
        let password = match url.password() {
            Some(p) => Some(Secret::new(decode(p)?)),
            None => None,
        };
        let path = decode(url.path().trim_start_matches('/'))?;
        if path.contains('/') {
            return Err("the path must be a single database name".into());
        }
        Ok(DbEndpoint {
            engine,
            host,
            port: url.port().unwrap_or(engine.default_port()),
            user,
            password,
            database: (!path.is_empty()).then_some(path),
        })
    }

    /// The same server with another database.
    pub fn with_database(&self, database: &str) -> Self {
        DbEndpoint {
            database: Some(database.to_string()),
            ..self.clone()
        }
    }

    /// The database name, or an error naming the setting that lacks it.
    pub fn database_name(&self, setting: &'static str) -> Result<&str, ConfigError> {
        self.database.as_deref().ok_or(ConfigError::Invalid {
            name: setting,
            reason: "it names no database (…/database at the end)".into(),
        })
    }
}

fn decode(part: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| "it is not valid UTF-8 after percent-decoding".to_string())
}

impl fmt::Display for DbEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)?;
        if let Some(db) = &self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for DbEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({self})", self.engine.label())
    }
}

/// A configuration problem: exit code 2, one line naming the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} is not set: put it in .env or the environment, or pass {flag}")]
    Missing {
        name: &'static str,
        flag: &'static str,
    },
    #[error("{name} is malformed: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read the env file {path}: {source}")]
    EnvFile {
        path: PathBuf,
        #[source]
        source: dotenvy::Error,
    },
}

/// Raw values as given on the command line; `None` = not given.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    pub env_file: Option<PathBuf>,
    pub mysql_url: Option<String>,
    pub postgres_url: Option<String>,
    pub connect_timeout_secs: Option<String>,
    pub pg_pool_size: Option<String>,
    pub dim_date_from: Option<String>,
    pub dim_date_to: Option<String>,
    pub workers: Option<String>,
    pub batch_rows: Option<String>,
    pub lookback_secs: Option<String>,
}

/// Loads `.env` into the process environment (without overriding it).
/// An explicit `--env-file` must exist; the implicit `.env` is optional.
pub fn load_env_file(explicit: Option<&Path>) -> Result<(), ConfigError> {
    match explicit {
        Some(path) => dotenvy::from_path(path).map_err(|source| ConfigError::EnvFile {
            path: path.to_path_buf(),
            source,
        }),
        None => match dotenvy::dotenv() {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(source) => Err(ConfigError::EnvFile {
                path: PathBuf::from(".env"),
                source,
            }),
        },
    }
}

/// Validated settings; business code sees only this.
#[derive(Debug, Clone)]
pub struct Settings {
    pub mysql: DbEndpoint,
    pub postgres: DbEndpoint,
    pub connect_timeout: Duration,
    pub pg_pool_size: u32,
    pub dim_date_from: NaiveDate,
    pub dim_date_to: NaiveDate,
    /// Concurrent extract/load workers.
    pub workers: usize,
    /// Source rows per batch (order items per fact chunk).
    pub batch_rows: u64,
    /// Incremental runs re-read this far behind the watermark.
    pub lookback_secs: u64,
}

impl Settings {
    /// Resolves flags over `env` (the process environment after `.env`).
    pub fn resolve(
        raw: &RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        // The source's settings, as for `seed`; then the warehouse's.
        let SourceSettings {
            mysql,
            connect_timeout,
        } = Settings::resolve_source(raw, env)?;
        let postgres = endpoint(
            &raw.postgres_url,
            env,
            "POSTGRES_URL",
            "--postgres-url",
            Engine::Postgres,
        )?;
        let given = |flag: &Option<String>, name, flag_name| setting(flag, env, name, flag_name);
        let pg_pool_size: u32 = number(
            given(&raw.pg_pool_size, "PG_POOL_SIZE", "--pg-pool-size"),
            4,
            1..=64,
        )?;
        let dim_date_from = date(
            given(&raw.dim_date_from, "DIM_DATE_FROM", "--dim-date-from"),
            "2015-01-01",
        )?;
        let dim_date_to = date(
            given(&raw.dim_date_to, "DIM_DATE_TO", "--dim-date-to"),
            "2035-12-31",
        )?;
        let workers: usize = number(given(&raw.workers, "WORKERS", "--workers"), 3, 1..=32)?;
        let batch_rows: u64 = number(
            given(&raw.batch_rows, "BATCH_ROWS", "--batch-rows"),
            20_000,
            100..=10_000_000,
        )?;
        let lookback_secs: u64 = number(
            given(&raw.lookback_secs, "LOOKBACK_SECS", "--lookback-secs"),
            600,
            0..=30 * 86_400,
        )?;
        if dim_date_to < dim_date_from {
            return Err(ConfigError::Invalid {
                name: given(&raw.dim_date_to, "DIM_DATE_TO", "--dim-date-to").1,
                reason: format!(
                    "it is before {}",
                    given(&raw.dim_date_from, "DIM_DATE_FROM", "--dim-date-from").1
                ),
            });
        }
        Ok(Settings {
            mysql,
            postgres,
            connect_timeout,
            pg_pool_size,
            dim_date_from,
            dim_date_to,
            workers,
            batch_rows,
            lookback_secs,
        })
    }

    /// Resolves only what commands that touch the source alone need
    /// (`seed`): POSTGRES_URL may be absent.
    pub fn resolve_source(
        raw: &RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<SourceSettings, ConfigError> {
        let mysql = endpoint(
            &raw.mysql_url,
            env,
            "MYSQL_URL",
            "--mysql-url",
            Engine::MySql,
        )?;
        let connect_timeout_secs: u64 = number(
            setting(
                &raw.connect_timeout_secs,
                env,
                "CONNECT_TIMEOUT_SECS",
                "--connect-timeout-secs",
            ),
            10,
            1..=3600,
        )?;
        Ok(SourceSettings {
            mysql,
            connect_timeout: Duration::from_secs(connect_timeout_secs),
        })
    }

    /// Every password in the settings, for last-resort redaction of output.
    pub fn secrets(&self) -> Vec<String> {
        let pairs = [&self.mysql, &self.postgres].map(|e| {
            (
                e.user.clone(),
                e.password.as_ref().map(|s| s.expose().to_string()),
            )
        });
        maskable(pairs.into_iter())
    }
}

/// Settings of a command that only touches the MySQL source.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub mysql: DbEndpoint,
    pub connect_timeout: Duration,
}

impl SourceSettings {
    pub fn secrets(&self) -> Vec<String> {
        maskable(std::iter::once((
            self.mysql.user.clone(),
            self.mysql.password.as_ref().map(|s| s.expose().to_string()),
        )))
    }
}

/// A setting's raw value, the flag over the environment (an empty variable
/// counts as unset), and the name its errors give: the flag when one was
/// passed, so the message names what the user typed.
fn setting(
    flag: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    flag_name: &'static str,
) -> (Option<String>, &'static str) {
    match flag {
        Some(value) => (Some(value.clone()), flag_name),
        None => (env(name).filter(|v| !v.trim().is_empty()), name),
    }
}

/// A database URL setting, parsed; required.
fn endpoint(
    flag: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    flag_name: &'static str,
    engine: Engine,
) -> Result<DbEndpoint, ConfigError> {
    let (value, said) = setting(flag, env, name, flag_name);
    let value = value.ok_or(ConfigError::Missing {
        name,
        flag: flag_name,
    })?;
    let endpoint = DbEndpoint::parse(engine, &value)
        .map_err(|reason| ConfigError::Invalid { name: said, reason })?;
    endpoint.database_name(said)?;
    Ok(endpoint)
}

fn number<T>(
    (value, name): (Option<String>, &'static str),
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + fmt::Display + Copy,
{
    let Some(value) = value else {
        return Ok(default);
    };
    let parsed: T = value.trim().parse().map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("'{}' is not a whole number", value.trim()),
    })?;
    if !range.contains(&parsed) {
        return Err(ConfigError::Invalid {
            name,
            reason: format!("{parsed} is outside {}..={}", range.start(), range.end()),
        });
    }
    Ok(parsed)
}

fn date(
    (value, name): (Option<String>, &'static str),
    default: &str,
) -> Result<NaiveDate, ConfigError> {
    let text = value.unwrap_or_else(|| default.to_string());
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d").map_err(|_| ConfigError::Invalid {
        name,
        reason: format!("'{}' is not a date like 2024-01-31", text.trim()),
    })
}

/// Passwords found in raw URL strings, for redacting output when settings
/// could not even be resolved. Lenient on purpose: it runs on bad input.
pub fn raw_secrets(raw: &RawConfig, env: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let candidates = [
        raw.mysql_url.clone(),
        raw.postgres_url.clone(),
        env("MYSQL_URL"),
        env("POSTGRES_URL"),
    ];
    let candidates = candidates.into_iter().flatten().filter_map(|u| {
        let rest = u.split_once("://")?.1;
        let userinfo = rest.rsplit_once('@')?.0;
        let (user, password) = userinfo.split_once(':')?;
        Some((user.to_string(), Some(password.to_string())))
    });
    maskable(candidates)
}

/// The passwords worth masking. A password equal to a user name is shown
/// by design wherever the user is, and masking very short ones would only
/// mangle the message.
fn maskable(pairs: impl Iterator<Item = (String, Option<String>)>) -> Vec<String> {
    let pairs: Vec<_> = pairs.collect();
    let mut out: Vec<String> = pairs
        .iter()
        .filter_map(|(_, p)| p.clone())
        .filter(|p| p.chars().count() >= 3 && !pairs.iter().any(|(u, _)| u == p))
        .collect();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BOTH: &[(&str, &str)] = &[
        ("MYSQL_URL", "mysql://app:s3cret@db.example:3307/techmarket"),
        ("POSTGRES_URL", "postgres://pg:pw%40x@10.0.0.5/dwh"),
    ];

    #[test]
    fn parses_urls_and_hides_passwords() {
        let s = Settings::resolve(&RawConfig::default(), &env_of(BOTH)).unwrap();
        assert_eq!(s.mysql.host, "db.example");
        assert_eq!(s.mysql.port, 3307);
        assert_eq!(s.mysql.database.as_deref(), Some("techmarket"));
        assert_eq!(s.mysql.password.as_ref().unwrap().expose(), "s3cret");
        assert_eq!(s.postgres.port, 5432);
        assert_eq!(s.postgres.password.as_ref().unwrap().expose(), "pw@x");
        let shown = format!("{s:?} {} {}", s.mysql, s.postgres);
        assert!(
            !shown.contains("s3cret") && !shown.contains("pw@x"),
            "{shown}"
        );
        assert!(shown.contains("app@db.example:3307/techmarket"));
    }

    #[test]
    fn flags_beat_environment() {
        let raw = RawConfig {
            mysql_url: Some("mysql://flag@h1/a".into()),
            pg_pool_size: Some("8".into()),
            ..Default::default()
        };
        let s = Settings::resolve(&raw, &env_of(BOTH)).unwrap();
        assert_eq!(s.mysql.user, "flag");
        assert_eq!(s.pg_pool_size, 8);
        assert_eq!(s.postgres.user, "pg");
    }

    #[test]
    fn missing_and_malformed_settings_are_named_without_values() {
        let err = Settings::resolve(&RawConfig::default(), &env_of(&BOTH[1..])).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::Missing {
                name: "MYSQL_URL",
                ..
            }
        ));
        for bad in [
            "mysql://app:s3cret@db.example:notaport/tm",
            "postgres://app:s3cret@h/tm",
            "mysql://app:s3cret@db.example:3306",
            "not a url s3cret",
        ] {
            let env = env_of(&[("MYSQL_URL", bad), BOTH[1]]);
            let err = Settings::resolve(&RawConfig::default(), &env).unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("MYSQL_URL is malformed"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        let env = env_of(&[BOTH[0], BOTH[1], ("PG_POOL_SIZE", "zero")]);
        let err = Settings::resolve(&RawConfig::default(), &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PG_POOL_SIZE is malformed: 'zero' is not a whole number"
        );
        let env = env_of(&[
            BOTH[0],
            BOTH[1],
            ("DIM_DATE_FROM", "2030-01-01"),
            ("DIM_DATE_TO", "2020-01-01"),
        ]);
        assert!(Settings::resolve(&RawConfig::default(), &env).is_err());
    }

    #[test]
    fn a_malformed_flag_is_named_as_typed_and_an_empty_variable_is_unset() {
        let cases = [
            (
                RawConfig {
                    workers: Some("0".into()),
                    ..Default::default()
                },
                ("WORKERS", "4"),
                "--workers is malformed: 0 is outside 1..=32",
            ),
            (
                RawConfig {
                    postgres_url: Some("postgres://app:s3cret@h".into()),
                    ..Default::default()
                },
                ("LOOKBACK_SECS", "60"),
                "--postgres-url is malformed: it names no database",
            ),
            (
                RawConfig {
                    dim_date_to: Some("2020-01-01".into()),
                    ..Default::default()
                },
                ("DIM_DATE_FROM", "2030-01-01"),
                "--dim-date-to is malformed: it is before DIM_DATE_FROM",
            ),
        ];
        for (raw, var, expected) in cases {
            let env = env_of(&[BOTH[0], BOTH[1], var]);
            let text = Settings::resolve(&raw, &env).unwrap_err().to_string();
            assert!(text.starts_with(expected), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
        }
        let env = env_of(&[BOTH[0], BOTH[1], ("WORKERS", " "), ("BATCH_ROWS", "")]);
        let settings = Settings::resolve(&RawConfig::default(), &env).unwrap();
        assert_eq!((settings.workers, settings.batch_rows), (3, 20_000));
        let source = Settings::resolve_source(
            &RawConfig::default(),
            &env_of(&[BOTH[0], ("CONNECT_TIMEOUT_SECS", "")]),
        )
        .unwrap();
        assert_eq!(source.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn raw_secrets_finds_passwords_in_broken_urls() {
        let raw = RawConfig {
            mysql_url: Some("mysql://u:hunter2@h:bad/x".into()),
            ..Default::default()
        };
        let found = raw_secrets(&raw, &env_of(&[("POSTGRES_URL", "postgres://p:pa:ss@h/d")]));
        assert_eq!(found, vec!["hunter2".to_string(), "pa:ss".to_string()]);
        let same = RawConfig {
            mysql_url: Some("mysql://app:app@h/x".into()),
            ..Default::default()
        };
        assert!(raw_secrets(&same, &env_of(&[])).is_empty());
    }
}
