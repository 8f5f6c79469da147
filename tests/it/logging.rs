//! Diagnostics (issue 23.11): `RUST_LOG` and `-v` reach a real log
//! subscriber on stderr, whose lines pass the redactor; and a server that
//! cannot be logged into is told apart from one that cannot be reached,
//! each with its own code and help.

use std::io::Read;
use std::net::TcpListener;
use std::process::Output;

use crate::cli::pgplan;
use crate::support::pg::set_host_auth;
use crate::support::LocalPostgres;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An external source at `host:port` with `user` (password `${PGPLAN_TEST_PW}`).
fn spec_for(dir: &std::path::Path, host: &str, port: u16, user: &str) -> String {
    let spec = format!(
        "apiVersion: pgplan.dev/v1alpha1
kind: Placement
metadata: {{name: legacy}}
spec:
  source:
    external: {{host: \"{host}\", port: {port}, tls: {{mode: disable}}}}
  target:
    rds:
      region: us-east-1
      instanceIdentifier: legacy
      engineVersion: \"15.4\"
      instanceClass: db.t3.micro
      allocatedStorage: 20
      tls: {{mode: require}}
  credentials:
    source:
      username: {user}
      password: ${{PGPLAN_TEST_PW}}
    target:
      username: postgres
      password: ${{PGPLAN_TEST_PW}}
  databases: [app]
"
    );
    let path = dir.join("pgplan.yaml");
    std::fs::write(&path, spec).unwrap();
    path.display().to_string()
}

fn observe(spec: &str, env: &[(&str, &str)]) -> Output {
    let mut all = vec![("AWS_EC2_METADATA_DISABLED", "true")];
    all.extend_from_slice(env);
    pgplan(&["observe", "-f", spec], &all)
}

#[test]
fn rust_log_and_verbose_write_redacted_lines_to_stderr() {
    let pg = LocalPostgres::start();
    pg.create_database("app");
    let dir = tempfile::tempdir().unwrap();
    // The host comes from the environment, so it is a secret like every `${VAR}` value.
    let spec = spec_for(dir.path(), "${CANARY_HOST}", pg.port(), pg.superuser());
    let env = [
        ("PGPLAN_TEST_PW", pg.password()),
        ("CANARY_HOST", "localhost"),
    ];

    let quiet = observe(&spec, &env);
    assert!(
        !text(&quiet.stderr).contains(" DEBUG "),
        "{}",
        text(&quiet.stderr)
    );

    for run in [pgplan(&["observe", "-f", &spec, "-vv"], &env), {
        let mut with_log = env.to_vec();
        with_log.push(("RUST_LOG", "pgplan=debug"));
        observe(&spec, &with_log)
    }] {
        let err = text(&run.stderr);
        assert!(
            err.contains(" DEBUG pgplan::pgtools: running server=(sensitive):"),
            "{err}"
        );
        assert!(!err.contains("localhost"), "{err}");
        assert!(!err.contains(pg.password()), "{err}");
    }
}

#[test]
fn a_wrong_password_is_not_an_unreachable_server() {
    let pg = LocalPostgres::start();
    pg.create_database("app");
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_for(dir.path(), "127.0.0.1", pg.port(), pg.superuser());

    let wrong = observe(&spec, &[("PGPLAN_TEST_PW", "not-the-password-81")]);
    let err = text(&wrong.stderr);
    assert_eq!(wrong.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{} rejected the password", pg.port())),
        "{err}"
    );
    assert!(err.contains("pgplan::pg::auth"), "{err}");
    assert!(err.contains("password is wrong for that user"), "{err}");
    assert!(!err.contains("refused the connection"), "{err}");
    assert!(!err.contains("not-the-password-81"), "{err}");

    // A pg_hba.conf without a line for the login.
    set_host_auth(pg.data_dir(), "reject").unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let rejected = observe(&spec, &[("PGPLAN_TEST_PW", pg.password())]);
    let err = text(&rejected.stderr);
    assert!(
        err.contains("does not admit this login (pg_hba.conf)"),
        "{err}"
    );
    assert!(err.contains("pgplan::pg::hba"), "{err}");
}

#[test]
fn unreachable_unknown_and_silent_servers_are_each_named() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("PGPLAN_TEST_PW", "pw-for-nothing")];

    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = observe(&spec_for(dir.path(), "127.0.0.1", closed, "app"), &env);
    let err = text(&out.stderr);
    assert!(
        err.contains("refused the connection (nothing listens there)"),
        "{err}"
    );
    assert!(err.contains("pgplan::pg::unreachable"), "{err}");

    let out = observe(
        &spec_for(dir.path(), "db.pgplan-test.invalid", 5432, "app"),
        &env,
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot be found (the host name does not resolve)"),
        "{err}"
    );
    assert!(err.contains("pgplan::pg::unknown-host"), "{err}");

    // Accepts the connection and never answers (libpq's connect timeout is 10 s).
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let keep = std::thread::spawn(move || {
        let held: Vec<_> = silent.incoming().take(2).flatten().collect();
        let mut buf = [0u8; 1];
        for mut s in held {
            let _ = s.read(&mut buf);
        }
    });
    let out = observe(&spec_for(dir.path(), "127.0.0.1", port, "app"), &env);
    let err = text(&out.stderr);
    assert!(err.contains("did not answer in time"), "{err}");
    assert!(err.contains("pgplan::pg::timeout"), "{err}");
    drop(keep);
}
