//! The data path against real PostgreSQL: backup (streamed, hashed, listed,
//! measured in the dump's snapshot) → prepare → tuned restore → verify, with
//! the tools on this machine (two LocalPostgres servers) and inside pods of
//! the simulated cluster (seed 002's healthcare database). Failures are
//! provoked for real: a changed row, a corrupted archive, a conflicting
//! object on the target.

use std::path::Path;
use std::sync::Mutex;

use k8s_openapi::api::apps::v1::StatefulSet;
use kube::api::PostParams;
use kube::Api;
use pgplan::cluster::Cluster;
use pgplan::observed::Role;
use pgplan::pgtools::tune::wal_level;
use pgplan::pgtools::{
    backup, make_durable, no_progress, prepare_target, release_knex_locks, restore,
    tune_for_loading, untune, verify, verify_archive, verify_in_sessions, BackupOptions, ConnInfo,
    LoadTuning, Manifest, Method, Mismatch, PgError, Phase, Progress, RestoreOptions, Runner,
};
use pgplan::plan::VerifyChecks;
use pgplan::spec::{DumpFormat, SqlProbe};
use serde_json::json;

use crate::support::sim::scenario::healthcare;
use crate::support::{LocalPostgres, Scenario, SimCluster};

const DB: &str = "backstage_plugin_auth";

/// A database with what a real one has: an owner that is not the
/// superuser, a granted group, enums (hashed by label column by column, and
/// as text inside a row with a domain and an array), domains, arrays, jsonb,
/// a geometric column (hashed as text), identity and serial columns, a
/// standalone sequence, a partitioned table, indexes, and knex lock tables
/// left locked.
const SCHEMA: &str = "
SET ROLE backstage;
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE DOMAIN positive AS int CHECK (VALUE > 0);
CREATE TABLE signing_keys (kid text PRIMARY KEY, key jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT '2026-01-29 10:00:00+00',
    state mood NOT NULL DEFAULT 'calm');
CREATE TABLE sessions (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, user_ref text,
    expires_at timestamptz, mood mood, weight positive, tags text[], score numeric(10,3),
    ratio float8, active bool, token uuid);
CREATE INDEX sessions_user_ref ON sessions (user_ref);
CREATE TABLE locations (id serial PRIMARY KEY, spot point, note text);
CREATE TABLE knex_migrations (id serial PRIMARY KEY, name varchar(255), batch int,
    migration_time timestamptz);
CREATE TABLE knex_migrations_lock (index serial PRIMARY KEY, is_locked int);
CREATE TABLE backstage_backend_tasks__knex_migrations_lock (index serial PRIMARY KEY, is_locked int);
CREATE TABLE other_knex_migrations_lock (index serial PRIMARY KEY, is_locked int);
CREATE TABLE events (id int, at date, payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE SEQUENCE invoice_numbers START 1000;
CREATE SEQUENCE unused_numbers;
INSERT INTO signing_keys (kid, key) VALUES ('k1', '{\"alg\": \"ES256\"}'), ('k2', '{\"alg\": \"RS256\"}'),
    ('k3', '{\"alg\": \"EdDSA\", \"n\": [1, 2.5, null]}');
INSERT INTO sessions (user_ref, expires_at, mood, weight, tags, score, ratio, active, token)
    SELECT 'user:' || (i % 97), '2026-02-01 00:00:00+00'::timestamptz + i * interval '1 minute',
           (CASE WHEN i % 2 = 0 THEN 'calm' ELSE 'busy' END)::mood, 1 + i % 50,
           ARRAY['t' || (i % 5), 'x'], i / 7.0, i / 3.0, i % 3 = 0,
           md5(i::text)::uuid
    FROM generate_series(1, 20000) i;
INSERT INTO locations (spot, note) SELECT point(i, i / 2.0), 'spot ' || i FROM generate_series(1, 200) i;
INSERT INTO knex_migrations (name, batch, migration_time)
    SELECT 'm' || i, 1, '2026-01-01'::timestamptz FROM generate_series(1, 4) i;
INSERT INTO knex_migrations_lock (is_locked) VALUES (1);
INSERT INTO backstage_backend_tasks__knex_migrations_lock (is_locked) VALUES (1);
INSERT INTO other_knex_migrations_lock (is_locked) VALUES (0);
INSERT INTO events SELECT i, '2025-06-01'::date + i, 'e' || i FROM generate_series(1, 400) i;
SELECT setval('invoice_numbers', 1234);
GRANT SELECT ON signing_keys TO auditors;
RESET ROLE;
";

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

fn roles() -> Vec<Role> {
    vec![
        Role {
            name: "auditors".into(),
            superuser: false,
            login: false,
            create_db: false,
            create_role: false,
            member_of: vec![],
            ..Role::default()
        },
        Role {
            name: "backstage".into(),
            superuser: false,
            login: true,
            create_db: true,
            create_role: false,
            member_of: vec!["auditors".into()],
            ..Role::default()
        },
    ]
}

fn source() -> LocalPostgres {
    let pg = LocalPostgres::start();
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE auditors NOLOGIN; CREATE ROLE backstage LOGIN CREATEDB; \
             GRANT auditors TO backstage; CREATE DATABASE {DB} OWNER backstage;"
        ),
    );
    pg.psql(DB, SCHEMA);
    pg
}

fn custom() -> BackupOptions {
    BackupOptions {
        format: DumpFormat::Custom,
        directory_when_local: false,
        jobs: 2,
        compression: None,
    }
}

fn all_checks() -> VerifyChecks {
    VerifyChecks {
        row_counts: true,
        checksums: true,
        sequences: true,
        sql: vec![SqlProbe {
            name: "signing keys".into(),
            database: DB.into(),
            query: "SELECT count(*) FROM signing_keys".into(),
            expect: "3".into(),
        }],
    }
}

/// Progress events, recorded.
#[derive(Default)]
struct Recorded(Mutex<Vec<Progress>>);

impl Recorded {
    fn record(&self) -> impl Fn(&Progress) + Send + Sync + '_ {
        |p: &Progress| self.0.lock().unwrap().push(p.clone())
    }

    fn last_bytes(&self, phase: Phase) -> Option<u64> {
        self.0.lock().unwrap().iter().rev().find_map(|p| match p {
            Progress::Bytes {
                phase: ph, done, ..
            } if *ph == phase => Some(*done),
            _ => None,
        })
    }

    fn tables(&self, phase: Phase) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|p| match p {
                Progress::Tables {
                    phase: ph, table, ..
                } if *ph == phase => Some(table.clone()),
                _ => None,
            })
            .collect()
    }
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A source, its backup, and a second server restored from it.
struct Restored {
    source: LocalPostgres,
    target: LocalPostgres,
    _dir: tempfile::TempDir,
    manifest_path: std::path::PathBuf,
    manifest: Manifest,
}

async fn restored(format: DumpFormat) -> Restored {
    let source = source();
    let target = LocalPostgres::start();
    let dir = tempfile::tempdir().unwrap();
    let options = BackupOptions {
        format,
        directory_when_local: false,
        jobs: 2,
        compression: None,
    };
    let (paths, manifest) = backup(
        &local(&source),
        dir.path(),
        "auth",
        DB,
        &options,
        &no_progress,
    )
    .await
    .unwrap();
    let prepared = prepare_target(
        &local(&target),
        &roles(),
        &[(DB.to_string(), "backstage".to_string())],
        false,
    )
    .await
    .unwrap();
    assert_eq!(prepared.databases, [DB]);
    restore(
        &local(&target),
        &paths.manifest,
        &RestoreOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    Restored {
        source,
        target,
        _dir: dir,
        manifest_path: paths.manifest,
        manifest,
    }
}

#[tokio::test]
async fn backup_prepare_restore_verify_reproduces_rows_checksums_and_sequences() {
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let events = Recorded::default();
    let record = events.record();
    let (paths, manifest) = backup(&local(&source), dir.path(), "auth", DB, &custom(), &record)
        .await
        .unwrap();

    // The archive and its manifest, where the design puts them.
    assert_eq!(
        paths.archive,
        dir.path().join("auth").join(format!("{DB}.dump"))
    );
    assert_eq!(
        paths.manifest,
        dir.path().join("auth").join(format!("{DB}.manifest.json"))
    );
    assert_eq!(Manifest::read(&paths.manifest).unwrap(), manifest);
    assert_eq!(manifest.format, DumpFormat::Custom);
    assert_eq!(manifest.owner, "backstage");
    assert_eq!(
        manifest.bytes,
        std::fs::metadata(&paths.archive).unwrap().len()
    );
    assert_eq!(manifest.sha256, sha256_of(&paths.archive));
    assert!(manifest
        .server_version
        .starts_with(&format!("{}.", crate::support::pg::major_version())));
    assert!(manifest.pg_dump_version.starts_with("pg_dump (PostgreSQL)"));
    // Tables, constraints, indexes, data, sequences, ACLs, types…
    assert!(
        manifest.toc_entries > 30,
        "{} entries",
        manifest.toc_entries
    );
    let rows: Vec<(String, u64, Method)> = manifest
        .tables
        .iter()
        .map(|t| (t.qualified(), t.rows, t.method))
        .collect();
    assert_eq!(
        rows,
        [
            (
                "public.backstage_backend_tasks__knex_migrations_lock".into(),
                1,
                Method::Columns
            ),
            ("public.events_2025".into(), 213, Method::Columns),
            ("public.events_2026".into(), 187, Method::Columns),
            ("public.knex_migrations".into(), 4, Method::Columns),
            ("public.knex_migrations_lock".into(), 1, Method::Columns),
            ("public.locations".into(), 200, Method::Text),
            (
                "public.other_knex_migrations_lock".into(),
                1,
                Method::Columns
            ),
            // An enum inside a row that also has a domain and an array.
            ("public.sessions".into(), 20000, Method::Text),
            ("public.signing_keys".into(), 3, Method::Columns),
        ]
    );
    assert!(manifest.tables.iter().all(|t| t.checksum.is_some()));
    let seq = |name: &str| {
        manifest
            .sequences
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("sequence {name} in the manifest"))
            .last_value
    };
    assert_eq!(seq("invoice_numbers"), Some(1234));
    assert_eq!(seq("unused_numbers"), None);
    assert_eq!(seq("sessions_id_seq"), Some(20000));
    assert_eq!(seq("locations_id_seq"), Some(200));

    // Progress: the streamed bytes, then every table measured.
    assert_eq!(events.last_bytes(Phase::Dump), Some(manifest.bytes));
    assert_eq!(events.last_bytes(Phase::ReadBack), Some(manifest.bytes));
    assert_eq!(events.tables(Phase::SourceChecksums).len(), 9);

    // An existing backup re-checks.
    assert_eq!(
        verify_archive(&paths.manifest, &local(&source), &no_progress)
            .await
            .unwrap(),
        manifest
    );

    let target = LocalPostgres::start();
    // A real target has a history of its own: its OIDs are not the
    // source's, so the restored enum labels get other OIDs (which is why an
    // enum is never hashed by its OID).
    target.psql(
        "postgres",
        "CREATE TYPE history AS ENUM ('a', 'b', 'c'); DROP TYPE history",
    );
    let t = local(&target);
    prepare_target(
        &t,
        &roles(),
        &[(DB.to_string(), "backstage".to_string())],
        false,
    )
    .await
    .unwrap();
    tune_for_loading(&t, &LoadTuning::default()).await.unwrap();
    restore(
        &t,
        &paths.manifest,
        &RestoreOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    untune(&t).await.unwrap();
    // The plan's order: restore, release the copied knex locks, verify.
    let released = release_knex_locks(
        &t,
        DB,
        &[
            "public.knex_migrations_lock".to_string(),
            "public.backstage_backend_tasks__knex_migrations_lock".to_string(),
        ],
    )
    .await
    .unwrap();
    assert_eq!(released.len(), 2);
    let checked = Recorded::default();
    let record = checked.record();
    let verified = verify(&t, &manifest, &all_checks(), &record).await.unwrap();
    assert_eq!(verified.tables, 9);
    assert_eq!(verified.rows, manifest.rows());
    assert_eq!(verified.sequences, manifest.sequences.len() as u64);
    assert_eq!(verified.probes, 1);
    assert_eq!(checked.tables(Phase::TargetChecksums).len(), 9);

    // Ownership and grants came along.
    assert_eq!(
        target.psql(
            DB,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'sessions'"
        ),
        "backstage"
    );
    assert_eq!(
        target.psql(
            DB,
            "SELECT has_table_privilege('auditors', 'signing_keys', 'SELECT')"
        ),
        "t"
    );
    assert_eq!(target.psql(DB, "SELECT nextval('invoice_numbers')"), "1235");
}

/// The manifest describes the archive even when something writes to the
/// source during the backup: both read the same exported snapshot.
#[tokio::test]
async fn writes_during_the_backup_do_not_split_the_archive_from_its_manifest() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let source = source();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written) = (stop.clone(), written.clone());
        let (socket, port) = (source.socket_dir().to_path_buf(), source.port());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                crate::support::pg::run_psql(
                    &socket,
                    port,
                    "postgres",
                    DB,
                    "INSERT INTO sessions (user_ref) SELECT 'live' FROM generate_series(1, 50); \
                     UPDATE signing_keys SET key = key || '{\"seen\": 1}' WHERE kid = 'k1'; \
                     SELECT nextval('invoice_numbers');",
                )
                .unwrap();
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (paths, manifest) = backup(
        &local(&source),
        dir.path(),
        "auth",
        DB,
        &BackupOptions {
            format: DumpFormat::Directory,
            ..BackupOptions::default()
        },
        &no_progress,
    )
    .await
    .unwrap();
    let during = written.load(Ordering::Relaxed);
    while written.load(Ordering::Relaxed) < during + 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let sessions = |m: &Manifest| m.tables.iter().find(|t| t.name == "sessions").unwrap().rows;
    let now: u64 = source
        .psql(DB, "SELECT count(*) FROM sessions")
        .parse()
        .unwrap();
    assert!(
        sessions(&manifest) > 20000,
        "writes before the backup are in it"
    );
    assert!(
        now > sessions(&manifest),
        "writes after the snapshot are not"
    );

    let target = LocalPostgres::start();
    let t = local(&target);
    prepare_target(
        &t,
        &roles(),
        &[(DB.to_string(), "backstage".to_string())],
        false,
    )
    .await
    .unwrap();
    restore(
        &t,
        &paths.manifest,
        &RestoreOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    verify(&t, &manifest, &all_checks(), &no_progress)
        .await
        .unwrap();
    // The source has moved on: it no longer matches its backup.
    let moved = mismatches(
        verify(&local(&source), &manifest, &all_checks(), &no_progress)
            .await
            .unwrap_err(),
    );
    assert!(moved.contains(&Mismatch::RowCount {
        table: "public.sessions".into(),
        expected: sessions(&manifest),
        actual: now
    }));
}

#[tokio::test]
async fn a_directory_archive_dumped_in_parallel_round_trips() {
    let r = restored(DumpFormat::Directory).await;
    assert_eq!(r.manifest.format, DumpFormat::Directory);
    let archive = r.manifest.archive_path(&r.manifest_path);
    assert!(archive.is_dir());
    assert!(archive.join("toc.dat").is_file());
    // Hash of the sha256sum listing of the files.
    let mut names: Vec<String> = std::fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let listing: String = names
        .iter()
        .map(|n| format!("{}  {n}\n", sha256_of(&archive.join(n))))
        .collect();
    use sha2::Digest;
    assert_eq!(
        r.manifest.sha256,
        hex::encode(sha2::Sha256::digest(listing.as_bytes()))
    );
    // Three sessions share the tables out.
    let verified = verify_in_sessions(
        &local(&r.target),
        &r.manifest,
        &all_checks(),
        3,
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(verified.rows, 20000 + 3 + 200 + 4 + 3 + 400);
    verify_archive(&r.manifest_path, &local(&r.source), &no_progress)
        .await
        .unwrap();
}

fn mismatches(e: PgError) -> Vec<Mismatch> {
    match e {
        PgError::Verify(f) => {
            assert_eq!(f.database, DB);
            f.mismatches
        }
        other => panic!("expected a verification failure, got {other}"),
    }
}

#[tokio::test]
async fn a_changed_target_fails_verify_naming_each_table_and_sequence() {
    let r = restored(DumpFormat::Custom).await;
    let t = local(&r.target);
    // One changed value: same row count, different checksum.
    r.target.psql(
        DB,
        "UPDATE sessions SET score = score + 0.001 WHERE id = 777",
    );
    let found = mismatches(
        verify(&t, &r.manifest, &all_checks(), &no_progress)
            .await
            .unwrap_err(),
    );
    assert_eq!(
        found,
        [Mismatch::Checksum {
            table: "public.sessions".into()
        }]
    );
    // A text-hashed table too, and a row gone, a sequence moved, a probe off.
    r.target.psql(
        DB,
        "UPDATE locations SET spot = point(0, 0) WHERE id = 1; \
         DELETE FROM signing_keys WHERE kid = 'k2'; SELECT setval('invoice_numbers', 1200); \
         SELECT setval('sessions_id_seq', 30000);",
    );
    let err = verify(&t, &r.manifest, &all_checks(), &no_progress)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("table public.signing_keys has 2 rows, the backup 3"),
        "{text}"
    );
    let found = mismatches(err);
    assert_eq!(
        found,
        [
            Mismatch::Checksum {
                table: "public.locations".into()
            },
            Mismatch::Checksum {
                table: "public.sessions".into()
            },
            Mismatch::RowCount {
                table: "public.signing_keys".into(),
                expected: 3,
                actual: 2
            },
            // sessions_id_seq moved ahead: a gap, not an error.
            Mismatch::Sequence {
                sequence: "public.invoice_numbers".into(),
                expected: Some(1234),
                actual: Some(1200)
            },
            Mismatch::Probe {
                name: "signing keys".into(),
                database: DB.into(),
                expected: "3".into(),
                actual: "2".into()
            },
        ]
    );
    // Row counts alone miss the changed values but not the missing row.
    let counts_only = VerifyChecks {
        row_counts: true,
        checksums: false,
        sequences: false,
        sql: vec![],
    };
    assert_eq!(
        mismatches(
            verify(&t, &r.manifest, &counts_only, &no_progress)
                .await
                .unwrap_err()
        ),
        [Mismatch::RowCount {
            table: "public.signing_keys".into(),
            expected: 3,
            actual: 2
        }]
    );
    // The source itself still matches its backup (one session).
    verify_in_sessions(
        &local(&r.source),
        &r.manifest,
        &all_checks(),
        1,
        &no_progress,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_corrupted_archive_fails_the_checks_and_is_never_restored() {
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let s = local(&source);
    let (paths, manifest) = backup(&s, dir.path(), "auth", DB, &custom(), &no_progress)
        .await
        .unwrap();
    let original = std::fs::read(&paths.archive).unwrap();

    // A flipped byte in the data: the sha256 no longer matches.
    let mut damaged = original.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 0xff;
    std::fs::write(&paths.archive, &damaged).unwrap();
    let err = verify_archive(&paths.manifest, &s, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Archive { .. }), "{err}");
    assert!(
        err.to_string().contains("checksum mismatch on re-read"),
        "{err}"
    );

    // Restoring from it is refused before anything reaches the target.
    let target = LocalPostgres::start();
    let t = local(&target);
    prepare_target(
        &t,
        &roles(),
        &[(DB.to_string(), "backstage".to_string())],
        false,
    )
    .await
    .unwrap();
    let err = restore(
        &t,
        &paths.manifest,
        &RestoreOptions::default(),
        &no_progress,
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert_eq!(
        target.psql(
            DB,
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    // A damaged header that the manifest agrees with (a bad dump recorded as
    // such): pg_restore cannot read it.
    let mut garbled = original.clone();
    garbled[..5].copy_from_slice(b"XXXXX");
    std::fs::write(&paths.archive, &garbled).unwrap();
    let recorded = Manifest {
        sha256: sha256_of(&paths.archive),
        ..manifest.clone()
    };
    recorded.write(&paths.manifest).unwrap();
    let err = verify_archive(&paths.manifest, &s, &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Archive { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("`pg_restore --list` cannot read it"),
        "{err}"
    );

    // A missing archive, and a missing manifest.
    std::fs::remove_file(&paths.archive).unwrap();
    let err = verify_archive(&paths.manifest, &s, &no_progress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("the archive is missing"), "{err}");
    std::fs::remove_file(&paths.manifest).unwrap();
    let err = verify_archive(&paths.manifest, &s, &no_progress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("manifest cannot be read"), "{err}");
}

#[tokio::test]
async fn a_restore_into_a_conflicting_target_fails_naming_the_entry() {
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let (paths, _) = backup(
        &local(&source),
        dir.path(),
        "auth",
        DB,
        &custom(),
        &no_progress,
    )
    .await
    .unwrap();
    let target = LocalPostgres::start();
    let t = local(&target);
    prepare_target(
        &t,
        &roles(),
        &[(DB.to_string(), "backstage".to_string())],
        false,
    )
    .await
    .unwrap();
    // Someone already made a table of that name in the target database.
    target.psql(DB, "CREATE TABLE signing_keys (kid text PRIMARY KEY)");
    let err = restore(
        &t,
        &paths.manifest,
        &RestoreOptions {
            jobs: 1,
            ..RestoreOptions::default()
        },
        &no_progress,
    )
    .await
    .unwrap_err();
    match &err {
        PgError::Restore {
            database,
            entry,
            message,
            ..
        } => {
            assert_eq!(database, DB);
            assert_eq!(entry.as_deref(), Some("TABLE public.signing_keys"));
            assert!(message.contains("already exists"), "{message}");
        }
        other => panic!("expected a restore failure, got {other}"),
    }
    assert!(
        err.to_string().starts_with(&format!(
            "restore of {DB} into 127.0.0.1:{} failed at TABLE public.signing_keys: ",
            target.port()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn a_row_the_target_rejects_fails_at_its_table_data() {
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let (paths, _) = backup(
        &local(&source),
        dir.path(),
        "auth",
        DB,
        &custom(),
        &no_progress,
    )
    .await
    .unwrap();
    let target = LocalPostgres::start();
    let t = local(&target);
    prepare_target(
        &t,
        &roles(),
        &[(DB.to_string(), "backstage".to_string())],
        false,
    )
    .await
    .unwrap();
    // The target refuses any new signing key: the data, not the table, fails.
    target.psql(
        DB,
        "CREATE FUNCTION public.refuse() RETURNS event_trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() \
           WHERE object_identity = 'public.signing_keys' AND command_tag = 'CREATE TABLE') THEN \
           ALTER TABLE public.signing_keys ADD CONSTRAINT no_keys CHECK (kid IS NULL) NOT VALID; \
         END IF; END $$; \
         CREATE EVENT TRIGGER refuse ON ddl_command_end EXECUTE FUNCTION public.refuse();",
    );
    let err = restore(
        &t,
        &paths.manifest,
        &RestoreOptions::default(),
        &no_progress,
    )
    .await
    .unwrap_err();
    let PgError::Restore { entry, message, .. } = &err else {
        panic!("expected a restore failure, got {err}");
    };
    assert_eq!(entry.as_deref(), Some("TABLE DATA public.signing_keys"));
    assert!(message.contains("no_keys"), "{message}");
}

#[tokio::test]
async fn prepare_creates_only_what_is_missing_and_reruns_change_nothing() {
    let target = LocalPostgres::start();
    let t = local(&target);
    target.psql("postgres", "CREATE ROLE auditors NOLOGIN");
    let roles = roles();
    let dbs = [
        (DB.to_string(), "backstage".to_string()),
        (
            "backstage_plugin_search".to_string(),
            "auditors".to_string(),
        ),
    ];
    let first = prepare_target(&t, &roles, &dbs, false).await.unwrap();
    assert_eq!(first.roles, ["backstage"]);
    assert_eq!(
        first.grants,
        [("auditors".to_string(), "backstage".to_string())]
    );
    assert_eq!(first.databases, [DB, "backstage_plugin_search"]);
    assert_eq!(
        target.query(
            "postgres",
            "SELECT rolname, rolsuper, rolcanlogin, rolcreatedb FROM pg_roles \
             WHERE rolname IN ('backstage', 'auditors') ORDER BY 1"
        ),
        [
            ["auditors", "f", "f", "f"].map(String::from).to_vec(),
            ["backstage", "f", "t", "t"].map(String::from).to_vec(),
        ]
    );
    assert_eq!(
        target.psql(
            "postgres",
            "SELECT string_agg(datname || ':' || pg_get_userbyid(datdba), ',' ORDER BY datname) \
             FROM pg_database WHERE datname LIKE 'backstage%'"
        ),
        format!("{DB}:backstage,backstage_plugin_search:auditors")
    );
    let second = prepare_target(&t, &roles, &dbs, false).await.unwrap();
    assert!(second.is_empty(), "{second:?}");

    // For RDS: no SUPERUSER, and the connecting user is made a member of
    // what it creates so it can hand objects to them.
    let admin = Role {
        name: "platform_admin".into(),
        superuser: true,
        login: true,
        create_db: false,
        create_role: false,
        member_of: vec![],
        ..Role::default()
    };
    let rds = prepare_target(&t, &[admin], &[], true).await.unwrap();
    assert_eq!(rds.roles, ["platform_admin"]);
    assert_eq!(
        rds.grants,
        [("platform_admin".to_string(), target.superuser().to_string())]
    );
    assert_eq!(
        target.psql(
            "postgres",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'platform_admin'"
        ),
        "f"
    );
    assert_eq!(
        target.psql(
            "postgres",
            "SELECT pg_has_role(current_user, 'platform_admin', 'MEMBER') \
             AND EXISTS (SELECT 1 FROM pg_auth_members WHERE roleid = 'platform_admin'::regrole \
                         AND member = current_user::regrole)"
        ),
        "t"
    );
    // A database whose owner is nowhere is refused, not created.
    let err = prepare_target(&t, &[], &[("orphan".into(), "nobody_here".into())], false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nobody_here"), "{err}");
}

#[tokio::test]
async fn knex_unlock_releases_exactly_the_locked_tables() {
    let source = source();
    let s = local(&source);
    let tables = [
        "public.knex_migrations_lock".to_string(),
        "public.backstage_backend_tasks__knex_migrations_lock".to_string(),
        "public.other_knex_migrations_lock".to_string(),
    ];
    let released = release_knex_locks(&s, DB, &tables).await.unwrap();
    assert_eq!(released, tables[..2]);
    assert_eq!(
        source.psql(
            DB,
            "SELECT (SELECT is_locked FROM knex_migrations_lock) || ',' || \
             (SELECT is_locked FROM backstage_backend_tasks__knex_migrations_lock) || ',' || \
             (SELECT count(*) FROM knex_migrations_lock)"
        ),
        "0,0,1"
    );
    assert!(release_knex_locks(&s, DB, &tables)
        .await
        .unwrap()
        .is_empty());
    let err = release_knex_locks(&s, DB, &["public.sessions".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Refused { .. }), "{err}");
    assert_eq!(source.psql(DB, "SELECT count(*) FROM sessions"), "20000");
}

/// Minimal WAL on a real server: it waits for a restart, then a parallel
/// restore into the restarted server writes a fraction of the WAL it writes
/// otherwise; untune waits for another restart, after which the server is on
/// its own settings.
#[tokio::test]
async fn minimal_wal_takes_a_restart_and_skips_the_restores_wal() {
    let source = LocalPostgres::start();
    source.psql("postgres", "CREATE DATABASE bulk; ");
    source.psql(
        "bulk",
        "CREATE TABLE items (id bigint PRIMARY KEY, body text); \
         INSERT INTO items SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, 100000) i; \
         CREATE INDEX ON items (body);",
    );
    let work = tempfile::tempdir().unwrap();
    let (paths, manifest) = backup(
        &local(&source),
        work.path(),
        "wal",
        "bulk",
        &BackupOptions::default(),
        &no_progress,
    )
    .await
    .unwrap();
    // WAL bytes a restore writes into a fresh database on `pg`.
    async fn restore_wal(pg: &LocalPostgres, archive: &std::path::Path, owner: &str) -> u64 {
        let r = local(pg);
        prepare_target(&r, &[], &[("bulk".to_string(), owner.to_string())], false)
            .await
            .unwrap();
        let lsn = pg.psql("postgres", "SELECT pg_current_wal_insert_lsn()");
        let options = RestoreOptions {
            jobs: 2,
            ..RestoreOptions::default()
        };
        restore(&r, archive, &options, &no_progress).await.unwrap();
        pg.psql(
            "postgres",
            &format!("SELECT pg_current_wal_insert_lsn() - '{lsn}'::pg_lsn"),
        )
        .parse::<f64>()
        .unwrap() as u64
    }
    let plain = LocalPostgres::start();
    let full = restore_wal(&plain, &paths.manifest, &manifest.owner).await;

    let mut pg = LocalPostgres::start();
    let minimal = LoadTuning {
        minimal_wal: true,
        ..LoadTuning::default()
    };
    let pending = tune_for_loading(&local(&pg), &minimal).await.unwrap();
    assert!(
        pending.contains(&"wal_level".to_string())
            && pending.contains(&"max_wal_senders".to_string()),
        "{pending:?}"
    );
    assert_eq!(pg.psql("postgres", "SHOW wal_level"), "replica");
    pg.restart();
    let r = local(&pg);
    assert_eq!(wal_level(&r).await.unwrap(), "minimal");
    assert!(
        tune_for_loading(&r, &minimal).await.unwrap().is_empty(),
        "idempotent"
    );
    let skipped = restore_wal(&pg, &paths.manifest, &manifest.owner).await;
    assert!(
        skipped * 4 < full,
        "minimal WAL wrote {skipped} bytes of WAL, the plain server {full}"
    );
    assert_eq!(pg.psql("bulk", "SELECT count(*) FROM items"), "100000");

    let pending = untune(&r).await.unwrap();
    assert!(pending.contains(&"wal_level".to_string()), "{pending:?}");
    pg.restart();
    let r = local(&pg);
    assert_eq!(wal_level(&r).await.unwrap(), "replica");
    assert!(untune(&r).await.unwrap().is_empty());
    make_durable(&r, true).await.unwrap();
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'"
        ),
        "0"
    );
    let checks = VerifyChecks {
        row_counts: true,
        checksums: true,
        sequences: true,
        sql: vec![],
    };
    verify(&r, &manifest, &checks, &no_progress).await.unwrap();
}

#[tokio::test]
async fn tuning_for_loading_is_taken_back() {
    let pg = LocalPostgres::start();
    let r = local(&pg);
    let auto = "SELECT coalesce(string_agg(name || '=' || setting, ',' ORDER BY name), '') \
                FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'";
    tune_for_loading(&r, &LoadTuning::default()).await.unwrap();
    let pending = tune_for_loading(&r, &LoadTuning::default()).await.unwrap();
    assert!(pending.is_empty(), "a reload is enough: {pending:?}");
    assert_eq!(
        pg.psql("postgres", auto),
        "autovacuum=off,checkpoint_timeout=30min,fsync=off,full_page_writes=off,\
         maintenance_work_mem=256MB,max_wal_size=2GB,synchronous_commit=off"
    );
    assert_eq!(pg.psql("postgres", "SHOW synchronous_commit"), "off");
    untune(&r).await.unwrap();
    assert!(untune(&r).await.unwrap().is_empty());
    make_durable(&r, false).await.unwrap();
    assert_eq!(pg.psql("postgres", auto), "");
    assert_eq!(pg.psql("postgres", "SHOW synchronous_commit"), "on");
    assert_eq!(pg.psql("postgres", "SHOW autovacuum"), "on");

    // Not for a server without a superuser (RDS).
    pg.psql(
        "postgres",
        "CREATE ROLE master LOGIN PASSWORD 'pw' CREATEDB CREATEROLE",
    );
    let rds = Runner::Local {
        conn: ConnInfo {
            user: "master".into(),
            password: Some("pw".into()),
            ..match local(&pg) {
                Runner::Local { conn } => conn,
                Runner::Pod { .. } => unreachable!(),
            }
        },
    };
    let err = tune_for_loading(&rds, &LoadTuning::default())
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Refused { .. }), "{err}");
}

/// Seed 002 end to end on the simulated cluster: the tools run in the pods
/// (exec), the archive streams out of the Deployment's pod and into a
/// StatefulSet's, and the patients arrive in order.
#[tokio::test]
async fn pods_back_up_and_restore_healthcare_through_exec() {
    healthcare_through_exec(SimCluster::with_scenario(Scenario::Healthcare)).await;
}

/// The same through a kubelet that speaks only `v4.channel.k8s.io` (before
/// Kubernetes 1.30), which cannot be told that stdin has ended without
/// losing the exit status: the archive listed and uploaded, the measuring
/// sessions and the scripts all end with their status.
#[tokio::test]
async fn pods_back_up_and_restore_healthcare_through_exec_v4() {
    healthcare_through_exec(SimCluster::with_scenario_v4(Scenario::Healthcare)).await;
}

async fn healthcare_through_exec(c: SimCluster) {
    let ns = healthcare::NAMESPACE;
    crate::support::sim::install_crypto_provider();
    let cluster = Cluster::connect(Some(c.kubeconfig_path()), None)
        .await
        .unwrap();
    let source_pod = c.pod_names(ns, "app=postgres").remove(0);
    let source = Runner::Pod {
        cluster: &cluster,
        namespace: ns.into(),
        pod: source_pod.clone(),
        container: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let events = Recorded::default();
    let record = events.record();
    let (paths, manifest) = backup(
        &source,
        dir.path(),
        "healthcare",
        healthcare::DATABASE,
        // Directory archives cannot stream out of a pod: custom is used.
        &BackupOptions {
            format: DumpFormat::Directory,
            ..BackupOptions::default()
        },
        &record,
    )
    .await
    .unwrap();
    assert_eq!(manifest.format, DumpFormat::Custom);
    assert_eq!(manifest.owner, healthcare::USER);
    assert_eq!(manifest.sha256, sha256_of(&paths.archive));
    let patients = manifest
        .tables
        .iter()
        .find(|t| t.name == "patients")
        .unwrap();
    assert_eq!(patients.rows, 3);
    assert_eq!(events.last_bytes(Phase::Dump), Some(manifest.bytes));

    // A fresh StatefulSet pgplan would create: the image makes the owner.
    let sets: Api<StatefulSet> = Api::namespaced(c.client().await, ns);
    let target: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "target"},
        "spec": {"serviceName": "target", "replicas": 1,
            "selector": {"matchLabels": {"app": "target"}},
            "template": {"metadata": {"labels": {"app": "target"}}, "spec": {"containers": [
                {"name": "postgres", "image": "postgres:15", "env": [
                    {"name": "POSTGRES_USER", "value": healthcare::USER},
                    {"name": "POSTGRES_PASSWORD", "value": "other"}]}]}}}}))
    .unwrap();
    sets.create(&PostParams::default(), &target).await.unwrap();
    c.wait_until_async(
        std::time::Duration::from_secs(60),
        "target-0 is ready",
        |c| c.pod_ready(ns, "target-0"),
    )
    .await;
    let t = Runner::Pod {
        cluster: &cluster,
        namespace: ns.into(),
        pod: "target-0".into(),
        container: None,
    };
    verify_archive(&paths.manifest, &t, &no_progress)
        .await
        .unwrap();
    let prepared = prepare_target(
        &t,
        &[Role {
            name: healthcare::USER.into(),
            superuser: true,
            login: true,
            create_db: true,
            create_role: true,
            member_of: vec![],
            ..Role::default()
        }],
        &[(healthcare::DATABASE.into(), healthcare::USER.into())],
        false,
    )
    .await
    .unwrap();
    assert!(prepared.roles.is_empty());
    assert_eq!(prepared.databases, [healthcare::DATABASE]);
    tune_for_loading(&t, &LoadTuning::default()).await.unwrap();
    let uploads = Recorded::default();
    let record = uploads.record();
    let restored = restore(
        &t,
        &paths.manifest,
        &RestoreOptions {
            run_id: "it-pods".into(),
            ..RestoreOptions::default()
        },
        &record,
    )
    .await
    .unwrap();
    assert_eq!(restored.uploaded, manifest.bytes);
    assert_eq!(uploads.last_bytes(Phase::Upload), Some(manifest.bytes));
    untune(&t).await.unwrap();
    let verified = verify(
        &t,
        &manifest,
        &VerifyChecks {
            row_counts: true,
            checksums: true,
            sequences: true,
            sql: vec![SqlProbe {
                name: "patients".into(),
                database: healthcare::DATABASE.into(),
                query: "SELECT string_agg(name, ',' ORDER BY registered_at) FROM patients".into(),
                expect: "Alice,Bob,Ibrahim".into(),
            }],
        },
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(verified.rows, 3);

    let names: Vec<String> = c
        .query(
            ns,
            "target-0",
            healthcare::DATABASE,
            "SELECT name FROM patients ORDER BY registered_at",
        )
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(names, healthcare::PATIENTS);
    assert_eq!(
        c.psql(
            ns,
            "target-0",
            healthcare::DATABASE,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'patients'"
        ),
        healthcare::USER
    );
    // The copy in the pod is gone.
    let leftover = t
        .output(&[
            "sh".to_string(),
            "-c".into(),
            "ls -d \"${TMPDIR:-/tmp}\"/pgplan-restore-* 2>/dev/null | wc -l".into(),
        ])
        .await
        .unwrap();
    assert_eq!(leftover.trim(), "0");
    // And the source still matches its backup.
    verify(
        &source,
        &manifest,
        &VerifyChecks {
            row_counts: true,
            checksums: true,
            sequences: true,
            sql: vec![],
        },
        &no_progress,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failed_backup_leaves_no_archive_and_no_manifest() {
    let source = source();
    let dir = tempfile::tempdir().unwrap();
    let s = local(&source);
    let err = backup(&s, dir.path(), "auth", "nope", &custom(), &no_progress)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"nope\" does not exist"), "{err}");
    let left: Vec<_> = std::fs::read_dir(dir.path().join("auth"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let err = backup(&s, dir.path(), "auth", "../escape", &custom(), &no_progress)
        .await
        .unwrap_err();
    assert!(matches!(err, PgError::Refused { .. }), "{err}");
}

/// Megabytes out of a pod and back in: more than the exec client's 1 MiB
/// buffers. `pg_restore --list` reads only the archive's table of contents
/// and exits with most of its stdin unread; the exec must still end, with
/// the exit status (it hung, before: feeding a stdin nobody read, or
/// waiting for the end of a stream that broke).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_database_backs_up_through_exec() {
    large_backup_through_exec(SimCluster::with_scenario(Scenario::Healthcare)).await;
}

/// The same over v4: megabytes of archive to `pg_restore --list`, which
/// exits having read only its table of contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_database_backs_up_through_exec_v4() {
    large_backup_through_exec(SimCluster::with_scenario_v4(Scenario::Healthcare)).await;
}

async fn large_backup_through_exec(c: SimCluster) {
    let ns = healthcare::NAMESPACE;
    crate::support::sim::install_crypto_provider();
    let source_pod = c.pod_names(ns, "app=postgres").remove(0);
    c.psql(
        ns,
        &source_pod,
        healthcare::DATABASE,
        "CREATE TABLE visits (id bigserial PRIMARY KEY, patient_id int NOT NULL, notes text NOT NULL); \
         INSERT INTO visits (patient_id, notes) \
           SELECT 1 + g % 3, md5(g::text) || md5((g * 3)::text) || md5((g * 7)::text) \
           FROM generate_series(1, 200000) g",
    );
    let cluster = Cluster::connect(Some(c.kubeconfig_path()), None)
        .await
        .unwrap();
    let source = Runner::Pod {
        cluster: &cluster,
        namespace: ns.into(),
        pod: source_pod.clone(),
        container: None,
    };
    let dir = tempfile::tempdir().unwrap();
    let (paths, manifest) = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        backup(
            &source,
            dir.path(),
            "healthcare",
            healthcare::DATABASE,
            &BackupOptions::default(),
            &no_progress,
        ),
    )
    .await
    .expect("the backup finishes")
    .unwrap();
    assert_eq!(manifest.sha256, sha256_of(&paths.archive));
    let visits = manifest.tables.iter().find(|t| t.name == "visits").unwrap();
    assert_eq!(visits.rows, 200_000);
    assert!(manifest.bytes > 4 << 20, "{} bytes", manifest.bytes);
}
