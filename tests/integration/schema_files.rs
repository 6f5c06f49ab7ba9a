//! `schema generate` writes the files from the model; `--check` passes on
//! the committed tree and fails, naming the file, once one is edited.

use crate::support::{bare_salesdwh, repo_root, run_expect, stderr, stdout};

#[test]
fn committed_generated_files_match_the_model() {
    let out = run_expect(
        bare_salesdwh(repo_root()).args(["schema", "generate", "--check"]),
        0,
    );
    assert!(stdout(&out).contains("up to date"));
}

#[test]
fn check_fails_naming_each_edited_file_and_generate_repairs_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    let salesdwh = || bare_salesdwh(dir.path().to_path_buf());

    let out = run_expect(salesdwh().args(["schema", "generate", "--dir", &root]), 0);
    assert_eq!(stdout(&out).matches("wrote").count(), 4, "{}", stdout(&out));
    run_expect(
        salesdwh().args(["schema", "generate", "--check", "--dir", &root]),
        0,
    );
    for file in [
        "sql/mysql/01_schema.sql",
        "sql/postgres/01_dwh_schema.sql",
        "docs/oltp_mysql.dbml",
        "docs/dwh_postgres.dbml",
    ] {
        let committed = std::fs::read_to_string(repo_root().join(file)).unwrap();
        let fresh = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert_eq!(committed, fresh, "{file}");
    }

    let dbml = dir.path().join("docs/dwh_postgres.dbml");
    let edited = std::fs::read_to_string(&dbml)
        .unwrap()
        .replace("margin numeric(14,2)", "margin numeric(18,4)");
    std::fs::write(&dbml, edited).unwrap();
    let out = run_expect(
        salesdwh().args(["schema", "generate", "--check", "--dir", &root]),
        1,
    );
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("docs/dwh_postgres.dbml"), "{err}");
    assert!(!err.contains("01_schema.sql"), "{err}");

    std::fs::remove_file(dir.path().join("sql/mysql/01_schema.sql")).unwrap();
    let out = run_expect(
        salesdwh().args(["schema", "generate", "--check", "--dir", &root]),
        1,
    );
    let err = stderr(&out);
    assert!(
        err.contains("docs/dwh_postgres.dbml") && err.contains("sql/mysql/01_schema.sql"),
        "{err}"
    );

    let out = run_expect(salesdwh().args(["schema", "generate", "--dir", &root]), 0);
    assert_eq!(stdout(&out).matches("wrote").count(), 2, "{}", stdout(&out));
    run_expect(
        salesdwh().args(["schema", "generate", "--check", "--dir", &root]),
        0,
    );
}
