//! Roles carried with the data (issue 14.3): pg_dump carries no roles, so
//! pgplan carries their attributes, settings, memberships (WITH ADMIN
//! OPTION) and passwords — a SCRAM verifier and an MD5 hash, set as they
//! are — and verify checks them; grants and default privileges come with
//! the dump and verify compares them. Every login here is a real one over
//! TCP, against a pg_hba.conf that asks for passwords.

use std::process::{Command, Stdio};

use pgplan::observed::{PasswordKind, Role};
use pgplan::pgtools::roles::{read_verifiers, Expected, RoleCheck};
use pgplan::pgtools::{
    backup, inventory, no_progress, prepare_target_with, restore, verify_with_roles, BackupOptions,
    ConnInfo, Mismatch, Passwords, PgError, RestoreOptions, Runner,
};
use pgplan::plan::VerifyChecks;
use pgplan::spec::DumpFormat;

use crate::support::pg::{bin, child_path};
use crate::support::{LocalPostgres, PgOptions};

pub const BILLING_RO_PW: &str = "billing-ro-scram-pw-81";
pub const LEGACY_PW: &str = "legacy-md5-pw-22";
pub const OWNER_PW: &str = "owner-pw-3f9";

/// Roles as billing systems have them: a read-only login with a SCRAM
/// password, a connection limit, an expiry and a setting; a legacy login
/// whose password is an MD5 hash; a group held WITH ADMIN OPTION; an owner
/// whose default privileges give the group SELECT on new tables.
pub const ROLES_SQL: &str = "
CREATE ROLE reporting NOLOGIN;
CREATE ROLE billing_owner LOGIN CREATEDB PASSWORD 'owner-pw-3f9';
CREATE ROLE billing_ro LOGIN CONNECTION LIMIT 7 VALID UNTIL '2031-05-04 03:02:01+00' PASSWORD 'billing-ro-scram-pw-81';
ALTER ROLE billing_ro SET search_path = \"$user\", billing;
ALTER ROLE billing_ro SET statement_timeout = '30s';
SET password_encryption = 'md5';
CREATE ROLE legacy_app LOGIN NOINHERIT PASSWORD 'legacy-md5-pw-22';
RESET password_encryption;
GRANT reporting TO billing_ro WITH ADMIN OPTION;
GRANT reporting TO legacy_app;
";

/// In the database, as its owner: a schema, default privileges for the
/// group, a table and an explicit grant.
pub fn billing_sql(owner: &str) -> String {
    format!(
        "CREATE SCHEMA billing AUTHORIZATION {owner};
SET ROLE {owner};
ALTER DEFAULT PRIVILEGES IN SCHEMA billing GRANT SELECT ON TABLES TO reporting;
CREATE TABLE billing.invoices (id int PRIMARY KEY, total numeric);
INSERT INTO billing.invoices SELECT i, i * 1.5 FROM generate_series(1, 50) i;
GRANT UPDATE ON billing.invoices TO legacy_app;
RESET ROLE;"
    )
}

fn local(pg: &LocalPostgres) -> Runner<'static> {
    Runner::Local {
        conn: ConnInfo {
            host: pg.host().to_string(),
            port: pg.port(),
            user: pg.superuser().to_string(),
            password: Some(pg.password().to_string()),
            sslmode: "disable".into(),
            sslrootcert: None,
        },
    }
}

/// A login over TCP with a password, as a client would make it: `Err` with
/// libpq's message when refused.
pub fn tcp_login(port: u16, user: &str, password: &str, db: &str) -> Result<(), String> {
    tcp_login_at("127.0.0.1", port, user, password, db)
}

/// [`tcp_login`] to a simulated pod's server, at the pod's address.
pub fn pod_login(
    ep: &crate::support::sim::kubelet::PgEndpoint,
    user: &str,
    password: &str,
    db: &str,
) -> Result<(), String> {
    tcp_login_at(&ep.addr.to_string(), ep.port, user, password, db)
}

/// [`tcp_login`] to a server at `host`.
pub fn tcp_login_at(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    db: &str,
) -> Result<(), String> {
    let out = Command::new(bin("psql"))
        .args(["-X", "-A", "-t", "-w", "-h", host, "-p"])
        .arg(port.to_string())
        .args(["-U", user, "-d", db, "-c", "SELECT current_user"])
        .env_clear()
        .env("PATH", child_path())
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == user {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn md5_server() -> LocalPostgres {
    LocalPostgres::start_with(PgOptions {
        host_auth: "md5".into(),
        ..PgOptions::default()
    })
    .expect("a server asking for md5 passwords over TCP")
}

fn checks() -> VerifyChecks {
    VerifyChecks {
        row_counts: true,
        checksums: true,
        sequences: true,
        sql: Vec::new(),
    }
}

fn mismatches(e: PgError) -> Vec<Mismatch> {
    match e {
        PgError::Verify(f) => f.mismatches,
        other => panic!("expected a verification failure, got {other}"),
    }
}

/// Backs up `billing` from `source`, prepares `target` with the observed
/// roles and the verifiers read at apply, restores; returns what verify
/// gets to check.
async fn carry(
    source: &LocalPostgres,
    target: &LocalPostgres,
    dir: &std::path::Path,
) -> (
    Vec<Role>,
    pgplan::pgtools::roles::Verifiers,
    std::path::PathBuf,
) {
    let s = local(source);
    let inv = inventory::server(&s, "src", &|d| d == "billing")
        .await
        .unwrap();
    let roles: Vec<Role> = inv
        .roles
        .into_iter()
        .filter(|r| r.name != source.superuser())
        .collect();
    let (paths, manifest) = backup(
        &s,
        dir,
        "billing",
        "billing",
        &BackupOptions {
            format: DumpFormat::Custom,
            directory_when_local: false,
            jobs: 2,
            compression: None,
        },
        &no_progress,
    )
    .await
    .unwrap();
    let privileges = manifest.privileges.clone().expect("privileges recorded");
    assert_eq!(
        privileges.default_privileges,
        ["for billing_owner in billing on tables: reporting=r/billing_owner"],
        "the default privilege is measured in the dump's snapshot"
    );
    assert!(
        privileges
            .grants
            .iter()
            .any(|g| g.starts_with("table billing.invoices: ")
                && g.contains("legacy_app=w/billing_owner")),
        "{privileges:?}"
    );
    let verifiers = read_verifiers(&s).await.unwrap();
    assert!(verifiers.readable);
    let t = local(target);
    let prepared = prepare_target_with(
        &t,
        &roles,
        &[("billing".into(), "billing_owner".into())],
        false,
        Passwords {
            verifiers: Some(&verifiers),
            given: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        prepared.passwords,
        ["billing_owner", "billing_ro", "legacy_app"],
        "{prepared:?}"
    );
    restore(
        &t,
        &paths.manifest,
        &RestoreOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    (roles, verifiers, paths.manifest)
}

#[tokio::test]
async fn scram_and_md5_passwords_attributes_and_memberships_are_carried_and_verified() {
    let source = md5_server();
    source.psql("postgres", ROLES_SQL);
    source.psql("postgres", "CREATE DATABASE billing OWNER billing_owner");
    source.psql("billing", &billing_sql("billing_owner"));
    // Both passwords work on the source, over TCP.
    tcp_login(source.port(), "billing_ro", BILLING_RO_PW, "billing").unwrap();
    tcp_login(source.port(), "legacy_app", LEGACY_PW, "billing").unwrap();

    // What the plan sees: the kind of each password, never the password.
    let inv = inventory::server(&local(&source), "src", &|_| false)
        .await
        .unwrap();
    let kind = |n: &str| inv.roles.iter().find(|r| r.name == n).unwrap().password;
    assert_eq!(kind("billing_ro"), PasswordKind::ScramSha256);
    assert_eq!(kind("legacy_app"), PasswordKind::Md5);
    assert_eq!(kind("reporting"), PasswordKind::None);
    let ro = inv.roles.iter().find(|r| r.name == "billing_ro").unwrap();
    assert_eq!(ro.connection_limit, 7);
    assert_eq!(
        ro.valid_until.as_deref(),
        Some("2031-05-04T03:02:01.000000Z")
    );
    assert_eq!(ro.admin_of, ["reporting"]);
    let snapshot = serde_json::to_string(&inv).unwrap();
    assert!(!snapshot.contains("SCRAM-SHA-256$"), "{snapshot}");

    let target = md5_server();
    let dir = tempfile::tempdir().unwrap();
    let (roles, verifiers, manifest_path) = carry(&source, &target, dir.path()).await;
    // The verifiers file beside the archive is for this user only.
    let file = manifest_path.with_file_name("billing.roles.json");
    pgplan::pgtools::roles::write_verifiers(&file, &verifiers).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Real logins on the target with the passwords the source had.
    tcp_login(target.port(), "billing_ro", BILLING_RO_PW, "billing").unwrap();
    tcp_login(target.port(), "legacy_app", LEGACY_PW, "billing").unwrap();
    tcp_login(target.port(), "billing_owner", OWNER_PW, "billing").unwrap();
    let refused = tcp_login(target.port(), "billing_ro", "not-it", "billing").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );
    // The same verifiers, byte for byte (salt and all), and the same attributes.
    let q = "SELECT string_agg(rolname || ':' || rolpassword, ' ' ORDER BY rolname) FROM pg_authid WHERE rolname IN ('billing_ro', 'legacy_app')";
    assert_eq!(target.psql("postgres", q), source.psql("postgres", q));
    let a = "SELECT string_agg(format('%s %s %s %s %s %s', rolname, rolcanlogin, rolinherit, rolconnlimit, rolvaliduntil, rolconfig), ' | ' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('billing_ro', 'legacy_app', 'reporting', 'billing_owner')";
    assert_eq!(target.psql("postgres", a), source.psql("postgres", a));
    let m = "SELECT string_agg(format('%s in %s admin %s', pg_get_userbyid(member), pg_get_userbyid(roleid), admin_option), ', ' ORDER BY 1) FROM pg_auth_members WHERE pg_get_userbyid(roleid) = 'reporting'";
    assert_eq!(target.psql("postgres", m), source.psql("postgres", m));
    assert_eq!(
        target.psql("postgres", m),
        "billing_ro in reporting admin t, legacy_app in reporting admin f"
    );
    // The default privilege came with the dump: a new table of the owner's
    // is readable by the group on the target.
    target.psql(
        "billing",
        "SET ROLE billing_owner; CREATE TABLE billing.later (x int); RESET ROLE;",
    );
    assert_eq!(
        target.psql(
            "billing",
            "SELECT has_table_privilege('reporting', 'billing.later', 'SELECT')"
        ),
        "t"
    );

    // Verify checks all of it.
    let manifest = pgplan::pgtools::Manifest::read(&manifest_path).unwrap();
    let t = local(&target);
    let role_checks: Vec<RoleCheck> = roles
        .iter()
        .map(|r| RoleCheck {
            role: r,
            password: verifiers
                .of(&r.name)
                .map_or(Expected::Nothing, Expected::Verifier),
        })
        .collect();
    target.psql("billing", "DROP TABLE billing.later");
    let verified = verify_with_roles(&t, &manifest, &checks(), &role_checks, &no_progress)
        .await
        .unwrap();
    let rc = verified.roles.unwrap();
    assert_eq!(
        rc.same_password,
        ["billing_owner", "billing_ro", "legacy_app"]
    );
    assert_eq!(rc.roles.len(), 4, "{rc:?}");
    assert_eq!(verified.privileges, Some(2));

    // A changed password, attribute, membership or grant fails verify.
    target.psql(
        "postgres",
        "ALTER ROLE billing_ro PASSWORD 'something-else'; ALTER ROLE legacy_app CONNECTION LIMIT 3; \
         REVOKE reporting FROM billing_ro",
    );
    target.psql(
        "billing",
        "REVOKE UPDATE ON billing.invoices FROM legacy_app",
    );
    let found = mismatches(
        verify_with_roles(&t, &manifest, &checks(), &role_checks, &no_progress)
            .await
            .unwrap_err(),
    );
    let text: Vec<String> = found.iter().map(|m| m.to_string()).collect();
    assert!(
        found.contains(&Mismatch::RolePassword {
            role: "billing_ro".into()
        }),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("role legacy_app has `") && t.contains("CONNECTION LIMIT 3")),
        "{text:?}"
    );
    assert!(
        found.contains(&Mismatch::RoleMemberships {
            role: "billing_ro".into(),
            expected: vec!["reporting (admin)".into()],
            actual: vec![],
        }),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.starts_with("privilege `table billing.invoices: ")
                && t.ends_with("` is missing")),
        "{text:?}"
    );
    let all = text.join("\n");
    assert!(
        !all.contains("SCRAM-SHA-256$") && !all.contains(BILLING_RO_PW),
        "{all}"
    );
}

/// A source that does not let pgplan read `pg_authid` (an RDS master, a
/// login without superuser): the kinds are unknown, no verifier is read,
/// and a password the spec gives is set (hashed into SCRAM by pgplan) and
/// checked by a real login.
#[tokio::test]
async fn a_source_without_pg_authid_says_so_and_a_given_password_logs_in() {
    let source = LocalPostgres::start();
    source.psql("postgres", ROLES_SQL);
    source.psql(
        "postgres",
        "CREATE ROLE master LOGIN CREATEROLE CREATEDB PASSWORD 'master-pw-77'; \
         CREATE DATABASE billing OWNER billing_owner; GRANT billing_owner TO master",
    );
    source.psql("billing", &billing_sql("billing_owner"));
    let master = Runner::Local {
        conn: ConnInfo {
            host: "127.0.0.1".into(),
            port: source.port(),
            user: "master".into(),
            password: Some("master-pw-77".into()),
            sslmode: "disable".into(),
            sslrootcert: None,
        },
    };
    let inv = inventory::server(&master, "src", &|_| false).await.unwrap();
    assert!(
        inv.roles
            .iter()
            .all(|r| r.password == PasswordKind::Unknown),
        "{:?}",
        inv.roles
    );
    let v = read_verifiers(&master).await.unwrap();
    assert!(!v.readable && v.is_empty(), "{v:?}");

    let target = LocalPostgres::start();
    let t = local(&target);
    let ro: Role = inv
        .roles
        .iter()
        .find(|r| r.name == "billing_ro")
        .unwrap()
        .clone();
    let given: std::collections::BTreeMap<String, String> =
        [("billing_ro".to_string(), "given-by-the-spec-19".to_string())].into();
    let prepared = prepare_target_with(
        &t,
        &[
            ro.clone(),
            Role {
                name: "reporting".into(),
                ..Role::default()
            },
        ],
        &[],
        false,
        Passwords {
            verifiers: Some(&v),
            given: Some(&given),
        },
    )
    .await
    .unwrap();
    assert_eq!(prepared.passwords, ["billing_ro"]);
    // pgplan sent a SCRAM verifier, not the password.
    assert!(target
        .psql(
            "postgres",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'billing_ro'"
        )
        .starts_with("SCRAM-SHA-256$4096:"));
    tcp_login(
        target.port(),
        "billing_ro",
        "given-by-the-spec-19",
        "postgres",
    )
    .unwrap();

    // Verify logs in with it (after a wrong password was refused).
    let (checked, bad) = pgplan::pgtools::roles::check_roles(
        &t,
        "postgres",
        &[RoleCheck {
            role: &ro,
            password: Expected::Given("given-by-the-spec-19"),
        }],
    )
    .await
    .unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    assert_eq!(checked.logged_in, ["billing_ro"]);
    let (_, bad) = pgplan::pgtools::roles::check_roles(
        &t,
        "postgres",
        &[RoleCheck {
            role: &ro,
            password: Expected::Given("not-what-was-set"),
        }],
    )
    .await
    .unwrap();
    let text = bad
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    assert!(
        text.contains(
            "role billing_ro cannot log in with the password the spec gives: rejected the password"
        ),
        "{text}"
    );
    assert!(!text.contains("not-what-was-set"), "{text}");
}

/// The verifiers of every role of a server, to look for in outputs.
fn verifiers_on(read: impl Fn(&str) -> String) -> Vec<String> {
    read("SELECT string_agg(rolpassword, ' ') FROM pg_authid WHERE rolpassword IS NOT NULL")
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Files under `dir`, but archives and the roles files (mode 0600, beside
/// the archive, where the verifiers are kept on purpose).
fn outputs_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            if p.is_dir() {
                todo.push(p);
            } else if !name.ends_with(".dump") && !name.ends_with(".roles.json") {
                out.push(p);
            }
        }
    }
    out
}

pub(crate) mod statefulset {
    use super::*;
    use crate::apply::{ok, pgplan_in, spec, text};
    use crate::support::sim::scenario::healthcare as hc;
    use crate::support::{Scenario, SimCluster};

    /// The healthcare cluster as a legacy one would be: TCP logins by md5
    /// (`POSTGRES_HOST_AUTH_METHOD=md5`, which the StatefulSet inherits), the
    /// billing roles, and default privileges in the healthcare database.
    pub(crate) fn legacy_cluster() -> (SimCluster, String) {
        use k8s_openapi::api::apps::v1::Deployment;
        use kube::api::{Api, Patch, PatchParams};
        let cluster = SimCluster::with_scenario(Scenario::Healthcare);
        tokio::runtime::Runtime::new().unwrap().block_on(async {
            let api: Api<Deployment> = Api::namespaced(cluster.client().await, hc::NAMESPACE);
            api.patch(
                hc::DEPLOYMENT,
                &PatchParams::default(),
                &Patch::Strategic(serde_json::json!({"spec": {
                    "strategy": {"type": "Recreate", "rollingUpdate": null},
                    "template": {"spec": {"containers": [{"name": "postgres",
                        "env": [{"name": "POSTGRES_HOST_AUTH_METHOD", "value": "md5"}]}]}}}})),
            )
            .await
            .expect("patch the postgres Deployment");
        });
        cluster.wait_until(
            std::time::Duration::from_secs(90),
            "the postgres Deployment rolled out",
            |c| {
                let pods = c.pod_names(hc::NAMESPACE, "app=postgres");
                pods.len() == 1
                    && c.workloads_ready(hc::NAMESPACE)
                    && c.get_json("pods", hc::NAMESPACE, &pods[0])
                        .is_some_and(|p| p.to_string().contains("POSTGRES_HOST_AUTH_METHOD"))
            },
        );
        let pod = cluster.pod_names(hc::NAMESPACE, "app=postgres")[0].clone();
        let ep = cluster
            .pod_postgres(hc::NAMESPACE, &pod)
            .expect("postgres runs");
        // Initialised before the variable was set: its pg_hba.conf is changed by hand, as
        // legacy clusters' were.
        crate::support::pg::set_host_auth(&ep.data_dir, "md5").unwrap();
        let q = |db: &str, sql: &str| cluster.psql(hc::NAMESPACE, &pod, db, sql);
        q("postgres", "SELECT pg_reload_conf()");
        q("postgres", ROLES_SQL);
        q(hc::DATABASE, &billing_sql("billing_owner"));
        pod_login(&ep, "legacy_app", LEGACY_PW, hc::DATABASE).unwrap();
        pod_login(&ep, "billing_ro", BILLING_RO_PW, hc::DATABASE).unwrap();
        (cluster, pod)
    }

    /// The plan says what it carries, and holds no verifier.
    #[test]
    fn the_plan_says_which_roles_and_passwords_it_carries() {
        let (cluster, source_pod) = legacy_cluster();
        let verifiers =
            verifiers_on(|sql| cluster.psql(hc::NAMESPACE, &source_pod, "postgres", sql));
        assert_eq!(verifiers.len(), 4, "{verifiers:?}");
        let state = tempfile::tempdir().unwrap();
        let plan = ok(&pgplan_in(
            &cluster,
            state.path(),
            &["plan", "-f", &spec()],
            &[],
        ));
        assert!(
            plan.contains("create, if missing, 5 roles (billing_owner, billing_ro, healthcare_user, legacy_app, and 1 more) and 1 database (healthcare) on k8s/default/StatefulSet/postgres; carry 4 passwords and 2 memberships"),
            "{plan}"
        );
        assert!(plan.contains("billing_ro (NOSUPERUSER LOGIN"), "{plan}");
        assert!(
            plan.contains("password: the source's SCRAM verifier"),
            "{plan}"
        );
        assert!(
            plan.contains("legacy_app has an MD5 password hash"),
            "{plan}"
        );
        let json = ok(&pgplan_in(
            &cluster,
            state.path(),
            &["plan", "-f", &spec(), "--format", "json"],
            &[],
        ));
        let snapshot = ok(&pgplan_in(
            &cluster,
            state.path(),
            &["observe", "-f", &spec()],
            &[],
        ));
        assert!(snapshot.contains("password: md5"), "{snapshot}");
        for (what, content) in [
            ("plan", &plan),
            ("json plan", &json),
            ("snapshot", &snapshot),
        ] {
            for v in &verifiers {
                assert!(
                    !content.contains(v.as_str()),
                    "a password verifier is in the {what}"
                );
            }
        }
    }

    #[test]
    fn moving_into_a_statefulset_keeps_every_login() {
        let (cluster, source_pod) = legacy_cluster();
        let verifiers =
            verifiers_on(|sql| cluster.psql(hc::NAMESPACE, &source_pod, "postgres", sql));
        let state = tempfile::tempdir().unwrap();
        let out = pgplan_in(
            &cluster,
            state.path(),
            &["apply", "-f", &spec(), "--auto-approve"],
            &[],
        );
        let stdout = ok(&out);

        // Every login works on the StatefulSet's server, over TCP, with its old password.
        let target = cluster
            .pod_postgres(hc::NAMESPACE, "postgres-0")
            .expect("postgres-0 serves");
        pod_login(&target, "billing_ro", BILLING_RO_PW, hc::DATABASE).unwrap();
        pod_login(&target, "legacy_app", LEGACY_PW, hc::DATABASE).unwrap();
        pod_login(&target, "billing_owner", OWNER_PW, hc::DATABASE).unwrap();
        pod_login(&target, hc::USER, hc::PASSWORD, hc::DATABASE).unwrap();
        let q = |db: &str, sql: &str| cluster.psql(hc::NAMESPACE, "postgres-0", db, sql);
        assert_eq!(
            q("postgres", "SELECT string_agg(format('%s in %s admin %s', pg_get_userbyid(member), pg_get_userbyid(roleid), admin_option), ', ' ORDER BY 1) FROM pg_auth_members WHERE pg_get_userbyid(roleid) = 'reporting'"),
            "billing_ro in reporting admin t, legacy_app in reporting admin f"
        );
        assert_eq!(
            q("postgres", "SELECT rolconnlimit || ' ' || rolconfig::text FROM pg_roles WHERE rolname = 'billing_ro'"),
            "7 {\"search_path=\\\"$user\\\", billing\",statement_timeout=30s}"
        );
        q(
            hc::DATABASE,
            "SET ROLE billing_owner; CREATE TABLE billing.later (x int); RESET ROLE;",
        );
        assert_eq!(
            q(
                hc::DATABASE,
                "SELECT has_table_privilege('reporting', 'billing.later', 'SELECT')"
            ),
            "t",
            "the default privilege came with the dump"
        );
        // What apply said it did, in the plan's words ("if missing"), and verified.
        assert!(
            stdout.contains("created 4 roles and 0 databases; existed already: 1 role (healthcare_user), given the source's attributes and 1 database (healthcare)"),
            "{stdout}"
        );
        assert!(
            stdout.contains(
                "passwords set for billing_owner, billing_ro, healthcare_user, legacy_app"
            ),
            "{stdout}"
        );
        assert!(
            stdout.contains(
                "the source's password on billing_owner, billing_ro, healthcare_user, legacy_app"
            ),
            "{stdout}"
        );

        // No verifier in the output or the journal.
        let mut seen = vec![
            ("stdout".to_string(), stdout),
            ("stderr".into(), text(&out.stderr)),
        ];
        for f in outputs_under(state.path()) {
            seen.push((
                f.display().to_string(),
                String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned(),
            ));
        }
        for (what, content) in &seen {
            for v in &verifiers {
                assert!(
                    !content.contains(v.as_str()),
                    "a password verifier is in {what}"
                );
            }
        }
    }
}

mod in_pod {
    use super::*;
    use crate::apply::{pgplan_in, spec, text};
    use crate::support::sim::scenario::healthcare as hc;
    use crate::support::{Scenario, SimCluster};

    /// A source whose data lives in its pod loses its roles with the pod: a
    /// rollback that recreates it gets them back from what the backup read,
    /// and the grants to them restore with the data.
    #[test]
    fn a_rollback_into_a_source_whose_data_was_in_its_pod_brings_its_roles_back() {
        let cluster = SimCluster::with_scenario(Scenario::HealthcareInPod);
        let pod = cluster.pod_names(hc::NAMESPACE, "app=postgres")[0].clone();
        let q = |pod: &str, db: &str, sql: &str| cluster.psql(hc::NAMESPACE, pod, db, sql);
        q(&pod, "postgres", ROLES_SQL);
        q(&pod, hc::DATABASE, "GRANT SELECT ON patients TO reporting");
        let state = tempfile::tempdir().unwrap();
        let out = pgplan_in(
            &cluster,
            state.path(),
            &["apply", "-f", &spec(), "--auto-approve"],
            &[("PGPLAN_TEST_FAIL", "pg/healthcare/healthcare/restore")],
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains("Rolled back to the original topology"),
            "{err}"
        );
        cluster.wait_until(std::time::Duration::from_secs(60), "the source back", |c| {
            c.pod_names(hc::NAMESPACE, "app=postgres").len() == 1
                && c.workloads_ready(hc::NAMESPACE)
        });
        let back = cluster.pod_names(hc::NAMESPACE, "app=postgres")[0].clone();
        assert_ne!(back, pod, "a new pod, with a new emptyDir");
        let ep = cluster
            .pod_postgres(hc::NAMESPACE, &back)
            .expect("postgres runs");
        pod_login(&ep, "billing_ro", BILLING_RO_PW, hc::DATABASE).unwrap();
        assert_eq!(
            q(
                &back,
                hc::DATABASE,
                "SELECT has_table_privilege('billing_ro', 'patients', 'SELECT')"
            ),
            "t",
            "the grant came back with the data, through the membership"
        );
        assert_eq!(
            q(
                &back,
                "postgres",
                "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'billing_ro'"
            ),
            "7"
        );
    }
}

mod rds {
    use super::*;
    use crate::apply::{ok, text};
    use crate::backstage::World;
    use crate::support::sim::scenario::backstage as bs;

    /// The billing roles on Backstage's in-cluster server, and a default
    /// privilege in one plugin database.
    fn with_roles(w: &World) {
        let q = |db: &str, sql: &str| w.cluster.psql(bs::NAMESPACE, bs::POD, db, sql);
        q("postgres", ROLES_SQL);
        q("backstage_plugin_app", &billing_sql("billing_owner"));
    }

    #[test]
    fn moving_to_rds_keeps_every_login_and_a_given_password_replaces_one() {
        let w = World::new();
        with_roles(&w);
        let verifiers = verifiers_on(|sql| w.cluster.psql(bs::NAMESPACE, bs::POD, "postgres", sql));
        let spec = w.spec(|s| {
            s.replace(
                "  credentials:\n",
                "  credentials:\n    roles:\n      billing_owner:\n        password: ${BILLING_OWNER_NEW_PASSWORD}\n",
            )
        });
        let given = [("BILLING_OWNER_NEW_PASSWORD", "a-new-owner-password-44")];
        let plan = ok(&w.run(&["plan", "-f", spec.to_str().unwrap()], &given));
        assert!(
            plan.contains("billing_owner (NOSUPERUSER LOGIN CREATEDB"),
            "{plan}"
        );
        assert!(
            plan.contains("password: from ${BILLING_OWNER_NEW_PASSWORD}"),
            "{plan}"
        );
        assert!(!plan.contains("a-new-owner-password-44"), "{plan}");

        let out = w.apply(&spec, &given);
        let stdout = ok(&out);
        assert!(
            stdout.contains("the source's password on billing_ro, legacy_app"),
            "{stdout}"
        );
        assert!(
            stdout.contains("logged in over TCP as billing_owner"),
            "{stdout}"
        );
        let port = w.rds_pg.port();
        tcp_login(port, "billing_ro", BILLING_RO_PW, "backstage_plugin_app").unwrap();
        tcp_login(port, "legacy_app", LEGACY_PW, "backstage_plugin_app").unwrap();
        tcp_login(
            port,
            "billing_owner",
            "a-new-owner-password-44",
            "backstage_plugin_app",
        )
        .unwrap();
        assert!(tcp_login(port, "billing_owner", OWNER_PW, "backstage_plugin_app").is_err());
        assert_eq!(
            w.rds_pg.psql("postgres", "SELECT string_agg(format('%s in %s admin %s', pg_get_userbyid(member), pg_get_userbyid(roleid), admin_option), ', ' ORDER BY 1) FROM pg_auth_members WHERE pg_get_userbyid(roleid) = 'reporting'"),
            // The master user is granted what pgplan creates (RDS has no superuser).
            "billing_ro in reporting admin t, legacy_app in reporting admin f, postgres in reporting admin f"
        );
        w.rds_pg.psql(
            "backstage_plugin_app",
            "SET ROLE billing_owner; CREATE TABLE billing.later (x int); RESET ROLE;",
        );
        assert_eq!(
            w.rds_pg.psql(
                "backstage_plugin_app",
                "SELECT has_table_privilege('reporting', 'billing.later', 'SELECT')"
            ),
            "t"
        );
        let all = format!("{plan}{stdout}{}", text(&out.stderr));
        assert!(!all.contains("a-new-owner-password-44"));
        for f in outputs_under(&w.dir.path().join(".pgplan")) {
            let content = String::from_utf8_lossy(&std::fs::read(&f).unwrap()).into_owned();
            assert!(
                !content.contains("a-new-owner-password-44"),
                "{}",
                f.display()
            );
            for v in &verifiers {
                assert!(
                    !content.contains(v.as_str()),
                    "a verifier is in {}",
                    f.display()
                );
            }
        }
    }
}

/// A role password must be a `${VAR}` reference, and a stall timeout a
/// duration: both located errors from `validate`.
#[test]
fn validate_refuses_a_literal_role_password_and_a_bad_stall_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(crate::apply::spec())
        .unwrap()
        .replace(
            "  databases:\n",
            "  credentials:\n    roles:\n      billing_ro:\n        password: hunter2-literal\n  databases:\n",
        )
        .replace("    directory: .pgplan/backups/healthcare\n", "    directory: .pgplan/backups/healthcare\n    stallTimeout: soon\n");
    let path = dir.path().join("pgplan.yaml");
    std::fs::write(&path, text).unwrap();
    let out = crate::cli::pgplan(&["validate", "-f", path.to_str().unwrap()], &[]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("pgplan::spec::literal-secret"), "{err}");
    assert!(err.contains("pgplan.yaml:34:19"), "{err}");
    assert!(err.contains("pgplan.yaml:49:19"), "{err}");
    assert!(err.contains("`soon` is not a duration"), "{err}");
}
