//! Bad configuration gives the right exit code and exactly one line on
//! stderr, and the password never shows in any output.

use std::process::Output;

use crate::support::{
    bare_salesdwh, mysql_server, pg_server, run_expect, stderr, stdout, url_of, TestDbs,
};

fn assert_one_line_without(output: &Output, secret: &str) -> String {
    let err = stderr(output);
    assert_eq!(err.lines().count(), 1, "stderr: {err}");
    assert!(!err.contains(secret), "password leaked to stderr: {err}");
    assert!(
        !stdout(output).contains(secret),
        "password leaked to stdout"
    );
    err
}

/// A TCP port on 127.0.0.1 that nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn missing_mysql_url_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_expect(
        bare_salesdwh(dir.path().into())
            .env("POSTGRES_URL", url_of(&pg_server()))
            .arg("init"),
        2,
    );
    let err = assert_one_line_without(&out, "salesdwh:salesdwh@");
    assert!(err.contains("MYSQL_URL is not set"), "{err}");
}

#[test]
fn malformed_urls_are_usage_errors_that_hide_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "Pw-Malformed-7731";
    for (name, value) in [
        (
            "MYSQL_URL",
            format!("mysql://salesdwh:{secret}@127.0.0.1:port/techmarket"),
        ),
        (
            "MYSQL_URL",
            format!("postgres://salesdwh:{secret}@127.0.0.1/techmarket"),
        ),
        (
            "MYSQL_URL",
            format!("mysql://salesdwh:{secret}@127.0.0.1:3306"),
        ),
        (
            "POSTGRES_URL",
            format!("postgres://salesdwh:{secret}@:5432/dwh"),
        ),
    ] {
        let mut cmd = bare_salesdwh(dir.path().into());
        cmd.env("MYSQL_URL", "mysql://u:p@127.0.0.1/db")
            .env("POSTGRES_URL", "postgres://u:p@127.0.0.1/db")
            .env(name, &value)
            .arg("init");
        let out = run_expect(&mut cmd, 2);
        let err = assert_one_line_without(&out, secret);
        assert!(
            err.contains(&format!("{name} is malformed")),
            "{value}: {err}"
        );
    }
    let out = run_expect(
        bare_salesdwh(dir.path().into())
            .env("MYSQL_URL", "mysql://u:p@127.0.0.1/db")
            .env("POSTGRES_URL", "postgres://u:p@127.0.0.1/db")
            .env("CONNECT_TIMEOUT_SECS", "soon")
            .arg("init"),
        2,
    );
    assert!(stderr(&out).contains("CONNECT_TIMEOUT_SECS is malformed"));
}

#[test]
fn wrong_mysql_password_fails_the_run_naming_host_and_database() {
    let dbs = TestDbs::names();
    let secret = format!("Wrong-Pw-{}", std::process::id());
    let mut bad = dbs.mysql.clone();
    bad.password = Some(salesdwh::config::Secret::new(secret.clone()));
    let out = run_expect(dbs.salesdwh().env("MYSQL_URL", url_of(&bad)).arg("init"), 1);
    let err = assert_one_line_without(&out, &secret);
    assert!(
        err.contains(&format!("cannot connect to MySQL at {}", dbs.mysql)),
        "{err}"
    );
    assert!(err.contains("Access denied"), "{err}");
}

#[test]
fn closed_ports_fail_the_run_naming_host_and_database() {
    let dbs = TestDbs::names();
    let secret = "Pw-Closed-Port-4410";
    let port = closed_port();

    let mut mysql = mysql_server().with_database("techmarket");
    mysql.port = port;
    mysql.password = Some(salesdwh::config::Secret::new(secret));
    let out = run_expect(
        dbs.salesdwh().env("MYSQL_URL", url_of(&mysql)).arg("init"),
        1,
    );
    let err = assert_one_line_without(&out, secret);
    assert!(
        err.contains(&format!(
            "cannot connect to MySQL at {}@127.0.0.1:{port}/techmarket",
            mysql.user
        )),
        "{err}"
    );
    assert!(err.contains("local-stack.sh up"), "{err}");

    let mut pg = pg_server().with_database("dwh");
    pg.port = port;
    pg.password = Some(salesdwh::config::Secret::new(secret));
    let out = run_expect(
        dbs.salesdwh().env("POSTGRES_URL", url_of(&pg)).arg("init"),
        1,
    );
    let err = assert_one_line_without(&out, secret);
    assert!(
        err.contains(&format!(
            "cannot connect to PostgreSQL at {}@127.0.0.1:{port}/dwh",
            pg.user
        )),
        "{err}"
    );
}

#[test]
fn flags_beat_the_environment_which_beats_dot_env() {
    let dbs = TestDbs::names();
    let port = closed_port();
    // .env holds a dead MySQL URL; the environment a good one: env wins.
    std::fs::write(
        dbs.workdir.path().join(".env"),
        format!(
            "MYSQL_URL=mysql://nobody:x@127.0.0.1:{port}/nothing\nPOSTGRES_URL={}\n",
            dbs.pg_url()
        ),
    )
    .unwrap();
    let out = run_expect(
        dbs.salesdwh().env_remove("POSTGRES_URL").args([
            "init",
            "--dim-date-from",
            "2024-01-01",
            "--dim-date-to",
            "2024-01-02",
        ]),
        0,
    );
    assert!(
        stdout(&out).contains(&dbs.pg.to_string()),
        "{}",
        stdout(&out)
    );
    // A flag beats the environment.
    let out = run_expect(
        dbs.salesdwh().args([
            "--mysql-url",
            &format!("mysql://nobody:x@127.0.0.1:{port}/flagdb"),
            "init",
        ]),
        1,
    );
    assert!(
        stderr(&out).contains(&format!("127.0.0.1:{port}/flagdb")),
        "{}",
        stderr(&out)
    );
}
