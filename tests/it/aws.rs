//! The RDS adapter (`pgplan::aws`) against the moto server through
//! aws-sdk-rds: create, describe, wait, modify, snapshot, delete with
//! deletion protection, and the errors a user sees. Each test uses its own
//! moto account; the standard AWS environment (credentials, region,
//! `AWS_ENDPOINT_URL`) is tested in a child process with a clean
//! environment; the IAM test runs a private moto that enforces IAM.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use miette::Diagnostic;
use pgplan::aws::{ConnectOptions, Deletion, Rds, RdsError, StaticCredentials};
use pgplan::plan::RdsSettings;

use crate::support::{Moto, MotoAccount};

const PASSWORD: &str = "correct-horse-battery-staple";
const WAIT: Duration = Duration::from_secs(30);

fn settings(identifier: &str) -> RdsSettings {
    RdsSettings {
        region: "us-east-1".into(),
        identifier: identifier.into(),
        engine_version: "15.4".into(),
        instance_class: "db.t3.micro".into(),
        allocated_storage: 20,
        storage_encrypted: true,
        deletion_protection: true,
        multi_az: false,
        publicly_accessible: false,
        db_subnet_group_name: None,
        vpc_security_group_ids: Vec::new(),
        master_username: "backstage".into(),
        password_var: "BACKSTAGE_DB_PASSWORD".into(),
        tags: BTreeMap::from([
            ("pgplan.dev/placement".to_string(), "backstage".to_string()),
            ("team".to_string(), "platform".to_string()),
        ]),
    }
}

fn options(account: &MotoAccount) -> ConnectOptions {
    ConnectOptions {
        region: Some(account.region.clone()),
        endpoint_url: Some(account.endpoint.clone()),
        credentials: Some(StaticCredentials {
            access_key_id: account.access_key_id.clone(),
            secret_access_key: account.secret_access_key.clone(),
            session_token: None,
        }),
        ..ConnectOptions::default()
    }
}

async fn connect(account: &MotoAccount) -> Rds {
    Rds::connect_with(options(account))
        .await
        .expect("connect to moto")
}

fn code(e: &RdsError) -> String {
    e.code().map(|c| c.to_string()).unwrap_or_default()
}

fn help(e: &RdsError) -> String {
    e.help().map(|h| h.to_string()).unwrap_or_default()
}

/// A port on 127.0.0.1 nothing listens on.
fn closed_port() -> u16 {
    crate::support::pg::free_port().expect("a free port")
}

#[tokio::test]
async fn an_encrypted_protected_instance_is_described_back_with_its_settings() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;
    let want = settings("backstage-prod");

    let created = rds.create_instance(&want, PASSWORD).await.unwrap();
    assert_eq!(created.identifier, "backstage-prod");

    let mut seen = Vec::new();
    let available = rds
        .wait_available("backstage-prod", WAIT, |status, _| {
            seen.push(status.to_string())
        })
        .await
        .unwrap();
    assert_eq!(available.status, "available");
    assert!(seen.is_empty(), "moto is available at once: {seen:?}");

    let described = rds.describe_instance("backstage-prod").await.unwrap();
    let mut tags = want.tags.clone();
    tags.insert("managed-by".into(), "pgplan".into());
    let i = described.expect("the instance exists");
    assert_eq!(
        (
            i.region.as_str(),
            i.identifier.as_str(),
            i.engine.as_str(),
            i.engine_version.as_str(),
            i.instance_class.as_str(),
            i.allocated_storage,
        ),
        (
            "us-east-1",
            "backstage-prod",
            "postgres",
            "15.4",
            "db.t3.micro",
            20
        )
    );
    assert_eq!(
        (
            i.storage_encrypted,
            i.deletion_protection,
            i.multi_az,
            i.publicly_accessible
        ),
        (true, true, false, false)
    );
    assert_eq!(i.master_username.as_deref(), Some("backstage"));
    assert_eq!(i.tags, tags, "settings' tags plus managed-by: pgplan");
    assert!(i.managed_by_pgplan());
    let endpoint = i.endpoint.clone().expect("an endpoint");
    assert_eq!(endpoint.port, 5432);
    assert!(
        endpoint.address.starts_with("backstage-prod."),
        "{}",
        endpoint.address
    );
    assert_eq!(i, available, "the waiter returns what describe says");

    // Observe reads the instance and its snapshots: only the automated one
    // RDS takes of a new instance (backup retention defaults to a day).
    let state = rds.observe("backstage-prod").await.unwrap();
    assert_eq!(state.instances, vec![i]);
    assert!(
        state
            .snapshots
            .iter()
            .all(|s| s.snapshot_type.as_deref() == Some("automated")
                && s.instance_identifier == "backstage-prod"),
        "{:?}",
        state.snapshots
    );

    // Creating it again is an error, not a second instance.
    let again = rds.create_instance(&want, PASSWORD).await.unwrap_err();
    assert_eq!(code(&again), "pgplan::aws::already_exists");
    assert_eq!(
        again.to_string(),
        "DB instance `backstage-prod` already exists in us-east-1"
    );
}

#[tokio::test]
async fn a_protected_instance_is_deleted_only_when_protection_is_lifted() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;
    rds.create_instance(&settings("keep-me"), PASSWORD)
        .await
        .unwrap();

    // Refused by pgplan before anything is sent.
    let refused = rds
        .delete_instance("keep-me", false, None)
        .await
        .unwrap_err();
    assert_eq!(code(&refused), "pgplan::aws::deletion_protected");
    assert_eq!(
        refused.to_string(),
        "DB instance `keep-me` has deletion protection; pgplan will not delete it"
    );
    assert!(help(&refused).contains("--no-deletion-protection"));
    let still = rds.describe_instance("keep-me").await.unwrap().unwrap();
    assert_eq!(
        (still.status.as_str(), still.deletion_protection),
        ("available", true)
    );

    // Refused by AWS (moto) and mapped to the same error.
    let raw = account
        .rds_client()
        .delete_db_instance()
        .db_instance_identifier("keep-me")
        .skip_final_snapshot(true)
        .send()
        .await
        .expect_err("moto refuses to delete a protected instance");
    let mapped = rds.error_from_sdk("DeleteDBInstance", "keep-me", raw);
    assert!(
        matches!(&mapped, RdsError::DeletionProtected { identifier } if identifier == "keep-me"),
        "{mapped:?}"
    );
    assert!(rds.describe_instance("keep-me").await.unwrap().is_some());

    // Lifted on request, with a final snapshot.
    let deletion = rds
        .delete_instance("keep-me", true, Some("keep-me-final"))
        .await
        .unwrap();
    assert_eq!(
        deletion,
        Deletion::Started {
            lifted_protection: true
        }
    );
    rds.wait_deleted("keep-me", WAIT, |_, _| {}).await.unwrap();
    assert_eq!(rds.describe_instance("keep-me").await.unwrap(), None);
    let snapshots = rds.describe_snapshots("keep-me").await.unwrap();
    assert_eq!(
        snapshots
            .iter()
            .map(|s| (s.identifier.as_str(), s.status.as_str()))
            .collect::<Vec<_>>(),
        vec![("keep-me-final", "available")]
    );

    // Deleting what is gone says so.
    assert_eq!(
        rds.delete_instance("keep-me", true, None).await.unwrap(),
        Deletion::AlreadyGone
    );
}

#[tokio::test]
async fn an_instance_pgplan_did_not_create_is_never_deleted() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;
    account
        .rds_client()
        .create_db_instance()
        .db_instance_identifier("Adopted-DB")
        .db_instance_class("db.t3.micro")
        .engine("postgres")
        .allocated_storage(20)
        .master_username("app")
        .master_user_password(PASSWORD)
        .send()
        .await
        .unwrap();
    // RDS lower-cases identifiers; the adapter finds it by the spec's name.
    let i = rds.describe_instance("Adopted-DB").await.unwrap().unwrap();
    assert_eq!(i.identifier, "adopted-db");
    assert!(!i.managed_by_pgplan() && !i.deletion_protection);

    let e = rds
        .delete_instance("Adopted-DB", true, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::not_managed");
    assert_eq!(
        e.to_string(),
        "DB instance `adopted-db` was not created by pgplan (no `managed-by: pgplan` tag); pgplan will not delete it"
    );
    assert_eq!(
        rds.describe_instance("adopted-db")
            .await
            .unwrap()
            .unwrap()
            .status,
        "available"
    );
}

#[tokio::test]
async fn modifications_are_described_back_and_snapshots_are_listed() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;
    let mut want = settings("catalog");
    rds.create_instance(&want, PASSWORD).await.unwrap();
    rds.wait_available("catalog", WAIT, |_, _| {})
        .await
        .unwrap();

    // A snapshot before the change, as the planner orders it.
    let snap = rds
        .create_snapshot("catalog", "catalog-pgplan-1a2b3c4d")
        .await
        .unwrap();
    assert_eq!(
        (snap.identifier.as_str(), snap.instance_identifier.as_str()),
        ("catalog-pgplan-1a2b3c4d", "catalog")
    );
    let ready = rds
        .wait_snapshot_available("catalog-pgplan-1a2b3c4d", WAIT, |_, _| {})
        .await
        .unwrap();
    assert_eq!(ready.status, "available");
    // A resumed apply gets the same snapshot back.
    assert_eq!(
        rds.create_snapshot("catalog", "catalog-pgplan-1a2b3c4d")
            .await
            .unwrap(),
        ready
    );
    let listed = rds.describe_snapshots("catalog").await.unwrap();
    let manual: Vec<_> = listed
        .iter()
        .filter(|s| s.snapshot_type.as_deref() == Some("manual"))
        .collect();
    assert_eq!(manual, vec![&ready], "{listed:?}");
    assert_eq!(ready.snapshot_type.as_deref(), Some("manual"));
    assert_eq!(ready.region, "us-east-1");

    want.instance_class = "db.t3.small".into();
    want.allocated_storage = 50;
    let changes = rds.modify_instance(&want, true).await.unwrap();
    assert_eq!(
        changes,
        vec![
            "instance class db.t3.micro → db.t3.small".to_string(),
            "storage 20 → 50 GiB".to_string()
        ]
    );
    let after = rds
        .wait_available("catalog", WAIT, |_, _| {})
        .await
        .unwrap();
    assert_eq!(
        (after.instance_class.as_str(), after.allocated_storage),
        ("db.t3.small", 50)
    );
    let described = rds.describe_instance("catalog").await.unwrap().unwrap();
    assert_eq!(described, after);

    // Converged: nothing to send.
    assert!(rds.modify_instance(&want, true).await.unwrap().is_empty());

    // What RDS cannot do is refused before anything is sent.
    let mut shrink = want.clone();
    shrink.allocated_storage = 30;
    let e = rds.modify_instance(&shrink, true).await.unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::unsupported_change");
    assert_eq!(
        e.to_string(),
        "DB instance `catalog` cannot change: storage cannot shrink from 50 GiB to 30 GiB"
    );
    let mut unencrypted = want.clone();
    unencrypted.storage_encrypted = false;
    let e = rds.modify_instance(&unencrypted, true).await.unwrap_err();
    assert!(e.to_string().contains("storage encryption is on"), "{e}");
    assert_eq!(
        rds.describe_instance("catalog").await.unwrap().unwrap(),
        after,
        "refused changes sent nothing"
    );
}

#[tokio::test]
async fn an_engine_upgrade_and_multi_az_are_applied() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;
    let mut want = settings("search");
    want.deletion_protection = false;
    rds.create_instance(&want, PASSWORD).await.unwrap();
    want.engine_version = "16.1".into();
    want.multi_az = true;
    want.deletion_protection = true;
    let changes = rds.modify_instance(&want, true).await.unwrap();
    assert_eq!(
        changes,
        vec![
            "deletion protection false → true".to_string(),
            "multi-AZ false → true".to_string(),
            "engine 15.4 → 16.1".to_string(),
        ]
    );
    let i = rds.wait_available("search", WAIT, |_, _| {}).await.unwrap();
    assert_eq!(
        (i.engine_version.as_str(), i.multi_az, i.deletion_protection),
        ("16.1", true, true)
    );
}

#[tokio::test]
async fn an_account_without_the_instance_describes_none() {
    let account = Moto::shared().account();
    // Another account's instance of the same name is not seen.
    connect(&Moto::shared().account())
        .await
        .create_instance(&settings("backstage-prod"), PASSWORD)
        .await
        .unwrap();
    let rds = connect(&account).await;
    assert_eq!(rds.describe_instance("backstage-prod").await.unwrap(), None);
    assert!(rds
        .describe_snapshots("backstage-prod")
        .await
        .unwrap()
        .is_empty());
    assert_eq!(rds.describe_snapshot("nope").await.unwrap(), None);
    let state = rds.observe("backstage-prod").await.unwrap();
    assert!(state.instances.is_empty() && state.snapshots.is_empty());
}

#[tokio::test]
async fn waiting_for_a_missing_instance_is_not_found() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;
    let started = Instant::now();
    let e = rds
        .wait_available("ghost", WAIT, |_, _| {})
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "fails at once");
    assert_eq!(code(&e), "pgplan::aws::not_found");
    assert_eq!(
        e.to_string(),
        "DB instance `ghost` does not exist in us-east-1"
    );

    let e = rds
        .wait_snapshot_available("ghost-snap", WAIT, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "DB snapshot `ghost-snap` does not exist in us-east-1"
    );

    let e = rds
        .create_snapshot("ghost", "ghost-snap")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::not_found");
    let e = rds
        .modify_instance(&settings("ghost"), true)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::not_found");
    assert_eq!(
        rds.delete_instance("ghost", false, None).await.unwrap(),
        Deletion::AlreadyGone
    );
    // Waiting for a missing instance to be deleted is done at once.
    rds.wait_deleted("ghost", WAIT, |_, _| {}).await.unwrap();
}

#[tokio::test]
async fn a_wait_times_out_with_the_last_status_seen() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;
    let mut want = settings("stopped-one");
    want.deletion_protection = false;
    rds.create_instance(&want, PASSWORD).await.unwrap();
    account
        .rds_client()
        .stop_db_instance()
        .db_instance_identifier("stopped-one")
        .send()
        .await
        .unwrap();

    let mut polls = Vec::new();
    let started = Instant::now();
    let e = rds
        .wait_available("stopped-one", Duration::from_secs(2), |status, elapsed| {
            polls.push((status.to_string(), elapsed))
        })
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_eq!(code(&e), "pgplan::aws::timeout");
    assert_eq!(
        e.to_string(),
        "DB instance `stopped-one` did not become available within 2 s; last status: stopped"
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "bounded: {took:?}"
    );
    // Backoff: a few polls (0, 0.5, 1.25, 2 s), each reported.
    assert!(
        (3..=6).contains(&polls.len()),
        "polls with backoff: {polls:?}"
    );
    assert!(polls.iter().all(|(s, _)| s == "stopped"), "{polls:?}");
    assert!(polls
        .last()
        .is_some_and(|(_, at)| *at >= Duration::from_secs(2)));

    // A delete that was never sent is not waited for forever either; and a
    // protected instance that is not being deleted fails at once.
    rds.create_instance(&settings("protected-one"), PASSWORD)
        .await
        .unwrap();
    let e = rds
        .wait_deleted("protected-one", WAIT, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::failed_state");
    assert_eq!(
        e.to_string(),
        "DB instance `protected-one` is `available, deletion protection on` and will not become deleted by itself"
    );
}

#[tokio::test]
async fn aws_refusals_quote_aws() {
    let account = Moto::shared().account();
    let rds = connect(&account).await;

    let mut bad_network = settings("no-network");
    bad_network.db_subnet_group_name = Some("no-such-group".into());
    let e = rds
        .create_instance(&bad_network, PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::rejected");
    assert_eq!(e.aws_code(), Some("DBSubnetGroupNotFoundFault"));
    assert_eq!(
        e.to_string(),
        "AWS rejected CreateDBInstance for DB instance `no-network`: DBSubnetGroupNotFoundFault: Subnet Group no-such-group not found."
    );
    assert!(help(&e).contains("dbSubnetGroupName"), "{}", help(&e));

    let e = rds
        .create_instance(&settings("Not_Valid--id"), PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(e.aws_code(), Some("InvalidParameterValue"));
    assert!(
        e.to_string()
            .contains("The parameter DBInstanceIdentifier is not a valid identifier"),
        "{e}"
    );
    assert!(
        !format!("{e} {e:?}").contains(PASSWORD),
        "no password in errors"
    );

    // An empty password is refused here, naming the variable to set.
    let e = rds
        .create_instance(&settings("no-pass"), "")
        .await
        .unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::invalid");
    assert!(help(&e).contains("BACKSTAGE_DB_PASSWORD"), "{}", help(&e));
    assert_eq!(rds.describe_instance("no-pass").await.unwrap(), None);

    // Settings for another region never reach this region.
    let mut elsewhere = settings("elsewhere");
    elsewhere.region = "eu-west-1".into();
    let e = rds.create_instance(&elsewhere, PASSWORD).await.unwrap_err();
    assert!(e.to_string().contains("belongs in eu-west-1"), "{e}");
    assert_eq!(rds.describe_instance("elsewhere").await.unwrap(), None);
}

#[tokio::test]
async fn an_unreachable_endpoint_is_named_and_fails_quickly() {
    let account = Moto::shared().account();
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let rds = Rds::connect_with(ConnectOptions {
        endpoint_url: Some(endpoint.clone()),
        ..options(&account)
    })
    .await
    .expect("connecting sends nothing");
    let started = Instant::now();
    let e = rds.describe_instance("backstage-prod").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(code(&e), "pgplan::aws::unreachable");
    let RdsError::Unreachable {
        endpoint: named,
        action,
        ..
    } = &e
    else {
        panic!("{e:?}")
    };
    assert_eq!(
        (named.as_str(), action.as_str()),
        (endpoint.as_str(), "DescribeDBInstances")
    );
    assert!(
        e.to_string().starts_with(&format!(
            "the RDS endpoint {endpoint} is unreachable (DescribeDBInstances): "
        )),
        "{e}"
    );
    assert!(help(&e).contains("AWS_ENDPOINT_URL"));
    assert!(
        took < Duration::from_secs(10),
        "retries are bounded: {took:?}"
    );
}

#[test]
fn rds_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    // Never polled: this only proves apply can spawn them on tokio.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rds = rt
        .block_on(Rds::connect_with(ConnectOptions {
            region: Some("us-east-1".into()),
            endpoint_url: Some(format!("http://127.0.0.1:{}", closed_port())),
            credentials: Some(StaticCredentials {
                access_key_id: "AKIAEXAMPLE".into(),
                secret_access_key: "secret".into(),
                session_token: None,
            }),
            ..ConnectOptions::default()
        }))
        .unwrap();
    let s = settings("x");
    send(&rds.describe_instance("x"));
    send(&rds.create_instance(&s, PASSWORD));
    send(&rds.modify_instance(&s, true));
    send(&rds.wait_available("x", WAIT, |_, _| {}));
    send(&rds.delete_instance("x", false, None));
    send(&rds.wait_deleted("x", WAIT, |_, _| {}));
    send(&rds.create_snapshot("x", "y"));
    send(&rds.observe("x"));
}

// ---------------------------------------------------------------------------
// The standard AWS environment, in a child process with a clean environment.

const PROBE: &str = "PGPLAN_AWS_PROBE";

/// Run this test binary again, only [`standard_environment_probe`], with
/// exactly `env` (plus an empty HOME so no ~/.aws files are read).
fn probe(scenario: &str, env: &[(&str, &str)]) -> String {
    let home = tempfile::tempdir().expect("temp home");
    let out = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "aws::standard_environment_probe",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env_clear()
        .env(PROBE, scenario)
        .env("HOME", home.path())
        .env("AWS_CONFIG_FILE", home.path().join("config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.path().join("credentials"),
        )
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().copied())
        .output()
        .expect("run the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("PROBE ").map(|(_, r)| r))
        .map(str::to_string)
        .unwrap_or_else(|| {
            panic!(
                "the probe printed no result:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// In the child: connect through the standard chain and print one line.
/// In the parent (no PGPLAN_AWS_PROBE) there is nothing to do; the tests
/// below run it.
#[tokio::test]
async fn standard_environment_probe() {
    let Ok(scenario) = std::env::var(PROBE) else {
        return;
    };
    let region = std::env::var("PROBE_REGION").unwrap_or_default();
    let result = match Rds::connect(&region).await {
        Err(e) => Err(e),
        Ok(rds) if scenario == "describe" => rds
            .describe_instance("from-the-parent")
            .await
            .map(|i| format!("region={} instance={i:?}", rds.region())),
        Ok(rds) => Ok(format!("connected region={}", rds.region())),
    };
    match result {
        Ok(line) => println!("PROBE ok {line}"),
        Err(e) => println!(
            "PROBE {} | {} | {}",
            code(&e),
            e.to_string().replace('\n', " "),
            help(&e).replace('\n', " ")
        ),
    }
}

#[tokio::test]
async fn no_credentials_anywhere_names_what_to_set() {
    let line = probe(
        "connect",
        &[("AWS_REGION", "us-east-1"), ("PROBE_REGION", "us-east-1")],
    );
    let (code, rest) = line.split_once(" | ").unwrap();
    assert_eq!(code, "pgplan::aws::credentials", "{line}");
    assert!(rest.starts_with("no AWS credentials found"), "{line}");
    for name in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"] {
        assert!(rest.contains(name), "help names {name}: {line}");
    }
}

/// An instance-metadata endpoint that refuses every request, as IMDS does
/// for a caller it will not serve (hop limit, or no role).
fn refusing_imds() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    url
}

#[tokio::test]
async fn failing_instance_metadata_is_still_missing_credentials() {
    // Off EC2 the chain ends in instance metadata; whether IMDS is not
    // there (refused) or refuses to serve (403), the user must set
    // credentials.
    let refused = format!("http://127.0.0.1:{}", closed_port());
    let forbidden = refusing_imds();
    for (imds, detail) in [
        (&refused, "Connection refused"),
        (
            &forbidden,
            "IMDS is disabled or the caller has insufficient permissions",
        ),
    ] {
        let line = probe(
            "connect",
            &[
                ("AWS_REGION", "us-east-1"),
                ("PROBE_REGION", "us-east-1"),
                ("AWS_EC2_METADATA_DISABLED", "false"),
                ("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds),
            ],
        );
        let (code, rest) = line.split_once(" | ").unwrap();
        assert_eq!(code, "pgplan::aws::credentials", "{line}");
        assert!(rest.starts_with("no AWS credentials found: "), "{line}");
        assert!(rest.contains(detail), "{line}");
        assert!(rest.contains("AWS_ACCESS_KEY_ID"), "{line}");
    }
}

#[tokio::test]
async fn no_region_anywhere_is_an_error() {
    let line = probe(
        "connect",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAPROBE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ],
    );
    assert!(
        line.starts_with("pgplan::aws::region | no AWS region"),
        "{line}"
    );
    assert!(line.contains("AWS_REGION"), "{line}");
    // The spec's region is enough by itself.
    let line = probe(
        "connect",
        &[
            ("AWS_ACCESS_KEY_ID", "AKIAPROBE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("PROBE_REGION", "eu-central-1"),
        ],
    );
    assert_eq!(line, "ok connected region=eu-central-1");
}

#[tokio::test]
async fn aws_endpoint_url_is_honoured() {
    let account = Moto::shared().account();
    let mut want = settings("from-the-parent");
    want.deletion_protection = false;
    connect(&account)
        .await
        .create_instance(&want, PASSWORD)
        .await
        .unwrap();
    let env = account.env();
    let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    // Only the environment says where moto is and which region to use.
    let line = probe("describe", &env);
    assert!(
        line.starts_with("ok region=us-east-1 instance=Some("),
        "{line}"
    );
    assert!(line.contains("identifier: \"from-the-parent\""), "{line}");

    // And a dead endpoint from the environment is named in the error.
    let dead = format!("http://127.0.0.1:{}", closed_port());
    env.retain(|(k, _)| *k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL", &dead));
    let line = probe("describe", &env);
    assert!(
        line.starts_with(&format!(
            "pgplan::aws::unreachable | the RDS endpoint {dead} is unreachable (DescribeDBInstances)"
        )),
        "{line}"
    );
}

// ---------------------------------------------------------------------------
// IAM: a private moto that enforces it.

/// One raw moto request (IAM setup before enforcement is switched on).
fn moto_post(url: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = TcpStream::connect(host).expect("moto answers");
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw)
}

/// Form-encode for the IAM query API (RFC 3986 unreserved kept).
fn form(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Attach `policy` inline to the user that owns `account`'s access key.
fn put_user_policy(moto: &Moto, account: &MotoAccount, policy: &str) {
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/20260101/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=0",
        account.access_key_id
    );
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/x-www-form-urlencoded"),
    ];
    let (status, body) = moto_post(
        moto.url(),
        "/",
        &headers,
        "Action=GetUser&Version=2010-05-08",
    );
    assert_eq!(status, 200, "{body}");
    let user = body
        .split("<UserName>")
        .nth(1)
        .and_then(|r| r.split("</UserName>").next())
        .expect("GetUser names the user")
        .to_string();
    let (status, body) = moto_post(
        moto.url(),
        "/",
        &headers,
        &format!(
            "Action=PutUserPolicy&UserName={}&PolicyName=pgplan&PolicyDocument={}&Version=2010-05-08",
            form(&user),
            form(policy)
        ),
    );
    assert_eq!(status, 200, "{body}");
}

/// The first ```json block of docs/rds.md: the documented minimal policy.
fn documented_policy() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/rds.md"))
        .expect("docs/rds.md");
    let start = doc.find("```json\n").expect("a json block") + "```json\n".len();
    let end = doc[start..].find("```").expect("closed") + start;
    let policy = doc[start..end].to_string();
    serde_json::from_str::<serde_json::Value>(&policy).expect("the documented policy is JSON");
    policy
}

/// `policy` with `actions` removed from every statement.
fn without_actions(policy: &str, actions: &[&str]) -> String {
    let mut doc: serde_json::Value = serde_json::from_str(policy).unwrap();
    let mut removed = 0;
    for statement in doc["Statement"].as_array_mut().unwrap() {
        let list = statement["Action"].as_array_mut().unwrap();
        let before = list.len();
        list.retain(|a| !actions.contains(&a.as_str().unwrap_or_default()));
        removed += before - list.len();
    }
    assert_eq!(
        removed,
        actions.len(),
        "the documented policy has {actions:?}"
    );
    doc.to_string()
}

#[tokio::test]
async fn iam_denials_name_the_action_and_the_documented_policy_suffices() {
    let moto = Moto::start_own().expect("a private moto");
    let (nobody, operator, partial, wrong) = (
        moto.account(),
        moto.account(),
        moto.account(),
        moto.account(),
    );
    let policy = documented_policy();
    put_user_policy(&moto, &operator, &policy);
    let partial_policy =
        without_actions(&policy, &["rds:CreateDBSnapshot", "rds:DeleteDBInstance"]);
    put_user_policy(&moto, &partial, &partial_policy);
    // From here on moto checks every request's signature and IAM policy.
    let (status, body) = moto_post(moto.url(), "/moto-api/reset-auth", &[], "0");
    assert_eq!(status, 200, "{body}");

    // No policy: the first read is denied, naming the action.
    let rds = connect(&nobody).await;
    let e = rds.describe_instance("backstage-prod").await.unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::access_denied", "{e:?}");
    assert!(
        e.to_string().starts_with(
            "access denied: the caller may not call rds:DescribeDBInstances on DB instance `backstage-prod`: "
        ),
        "{e}"
    );
    assert!(help(&e).contains("rds:DescribeDBInstances"), "{}", help(&e));

    // A wrong secret: the credentials are rejected.
    let rds = Rds::connect_with(ConnectOptions {
        credentials: Some(StaticCredentials {
            access_key_id: wrong.access_key_id.clone(),
            secret_access_key: "not-the-secret".into(),
            session_token: None,
        }),
        ..options(&wrong)
    })
    .await
    .unwrap();
    let e = rds.describe_instance("backstage-prod").await.unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::credentials_rejected");
    assert_eq!(e.aws_code(), Some("SignatureDoesNotMatch"));

    // The documented policy: the whole life of an instance.
    let rds = connect(&operator).await;
    let mut want = settings("under-policy");
    rds.create_instance(&want, PASSWORD).await.unwrap();
    rds.wait_available("under-policy", WAIT, |_, _| {})
        .await
        .unwrap();
    rds.create_snapshot("under-policy", "under-policy-before")
        .await
        .unwrap();
    rds.wait_snapshot_available("under-policy-before", WAIT, |_, _| {})
        .await
        .unwrap();
    want.allocated_storage = 40;
    assert_eq!(rds.modify_instance(&want, true).await.unwrap().len(), 1);
    rds.observe("under-policy").await.unwrap();
    rds.delete_instance("under-policy", true, None)
        .await
        .unwrap();
    rds.wait_deleted("under-policy", WAIT, |_, _| {})
        .await
        .unwrap();

    // Without CreateDBSnapshot and DeleteDBInstance: the refused action is
    // the one named.
    let rds = connect(&partial).await;
    rds.create_instance(&settings("partial"), PASSWORD)
        .await
        .unwrap();
    // A protected instance is refused without sending DeleteDBInstance
    // (sent, it would have been denied).
    let e = rds
        .delete_instance("partial", false, None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), "pgplan::aws::deletion_protected", "{e}");
    let e = rds
        .delete_instance("partial", true, None)
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "access denied: the caller may not call rds:DeleteDBInstance on DB instance `partial`"
        ),
        "{e}"
    );
    let e = rds
        .create_snapshot("partial", "partial-snap")
        .await
        .unwrap_err();
    assert!(
        e.to_string().starts_with(
            "access denied: the caller may not call rds:CreateDBSnapshot on DB instance `partial`"
        ),
        "{e}"
    );
}
