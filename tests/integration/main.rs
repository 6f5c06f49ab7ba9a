//! Integration tests against real MariaDB/MySQL and PostgreSQL servers.
//! Each test creates its own uniquely named databases (see `support`) and
//! drops them when it ends, so tests run in parallel and leave nothing behind.

mod support;

mod backfill;
mod config_errors;
mod dbml_matches_ddl;
mod init;
mod marts;
mod schema_files;
mod seed;
mod sync;
mod verify;
