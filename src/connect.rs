//! Opens connections to the two servers from validated endpoints.
//!
//! Every failure names the server and the endpoint as `user@host:port/db`
//! (never the password) and keeps the driver's error as its source, so the
//! CLI can print one line that says what failed and where. MySQL sessions
//! always run with `time_zone = '+00:00'`: the source's DATETIMEs are UTC.

use std::time::Duration;

use bb8_postgres::PostgresConnectionManager;
use tokio_postgres::NoTls;

use crate::config::{DbEndpoint, Engine};

pub type PgPool = bb8::Pool<PostgresConnectionManager<NoTls>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {} at {endpoint}", endpoint.engine.label())]
    Failed {
        endpoint: Box<DbEndpoint>,
        #[source]
        source: BoxError,
    },
    #[error("cannot connect to {} at {endpoint}: no answer within {} s", endpoint.engine.label(), timeout.as_secs())]
    Timeout {
        endpoint: Box<DbEndpoint>,
        timeout: Duration,
    },
}

impl ConnectError {
    pub fn endpoint(&self) -> &DbEndpoint {
        match self {
            ConnectError::Failed { endpoint, .. } | ConnectError::Timeout { endpoint, .. } => {
                endpoint
            }
        }
    }

    /// The same failure reported against `endpoint` (e.g. the database the
    /// user configured when only its server was contacted).
    pub fn with_endpoint(self, endpoint: &DbEndpoint) -> Self {
        match self {
            ConnectError::Failed { source, .. } => ConnectError::Failed {
                endpoint: Box::new(endpoint.clone()),
                source,
            },
            ConnectError::Timeout { timeout, .. } => ConnectError::Timeout {
                endpoint: Box::new(endpoint.clone()),
                timeout,
            },
        }
    }

    /// True when the server answered that the database does not exist.
    pub fn is_unknown_database(&self) -> bool {
        let ConnectError::Failed { source, .. } = self else {
            return false;
        };
        if let Some(mysql_async::Error::Server(e)) = source.downcast_ref::<mysql_async::Error>() {
            return e.code == 1049;
        }
        if let Some(e) = source.downcast_ref::<tokio_postgres::Error>() {
            return e.code() == Some(&tokio_postgres::error::SqlState::INVALID_CATALOG_NAME);
        }
        false
    }
}

/// Connection options for MySQL. TCP only: the socket would silently pick a
/// different account (`user@localhost` instead of `user@127.0.0.1`).
pub fn mysql_opts(endpoint: &DbEndpoint) -> mysql_async::Opts {
    mysql_async::OptsBuilder::default()
        .ip_or_hostname(endpoint.host.clone())
        .tcp_port(endpoint.port)
        .user(Some(endpoint.user.clone()))
        .pass(endpoint.password.as_ref().map(|p| p.expose().to_string()))
        .db_name(endpoint.database.clone())
        .prefer_socket(false)
        .init(vec![
            "SET time_zone = '+00:00'".to_string(),
            "SET NAMES utf8mb4".to_string(),
        ])
        .into()
}

/// One MySQL connection.
pub async fn mysql_conn(
    endpoint: &DbEndpoint,
    timeout: Duration,
) -> Result<mysql_async::Conn, ConnectError> {
    debug_assert_eq!(endpoint.engine, Engine::MySql);
    match tokio::time::timeout(timeout, mysql_async::Conn::new(mysql_opts(endpoint))).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(ConnectError::Failed {
            endpoint: Box::new(endpoint.clone()),
            source: Box::new(e),
        }),
        Err(_) => Err(ConnectError::Timeout {
            endpoint: Box::new(endpoint.clone()),
            timeout,
        }),
    }
}

pub fn pg_config(endpoint: &DbEndpoint, timeout: Duration) -> tokio_postgres::Config {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&endpoint.host)
        .port(endpoint.port)
        .user(&endpoint.user)
        .connect_timeout(timeout)
        .application_name("salesdwh");
    if let Some(db) = &endpoint.database {
        config.dbname(db);
    }
    if let Some(password) = &endpoint.password {
        config.password(password.expose());
    }
    config
}

/// One PostgreSQL client; its connection task runs on the current runtime.
pub async fn pg_client(
    endpoint: &DbEndpoint,
    timeout: Duration,
) -> Result<tokio_postgres::Client, ConnectError> {
    debug_assert_eq!(endpoint.engine, Engine::Postgres);
    let config = pg_config(endpoint, timeout);
    let connecting = config.connect(NoTls);
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok((client, connection))) => {
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "PostgreSQL connection closed");
                }
            });
            Ok(client)
        }
        Ok(Err(e)) => Err(ConnectError::Failed {
            endpoint: Box::new(endpoint.clone()),
            source: Box::new(e),
        }),
        Err(_) => Err(ConnectError::Timeout {
            endpoint: Box::new(endpoint.clone()),
            timeout,
        }),
    }
}

/// A pool of PostgreSQL connections. One connection is opened first so a
/// bad URL or a down server fails here with the driver's own reason
/// instead of a pool timeout later.
pub async fn pg_pool(
    endpoint: &DbEndpoint,
    timeout: Duration,
    size: u32,
) -> Result<PgPool, ConnectError> {
    drop(pg_client(endpoint, timeout).await?);
    let manager = PostgresConnectionManager::new(pg_config(endpoint, timeout), NoTls);
    Ok(bb8::Pool::builder()
        .max_size(size)
        .connection_timeout(timeout)
        .build_unchecked(manager))
}
