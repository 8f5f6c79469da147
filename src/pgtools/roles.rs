//! Roles on their way from the source to the target: what `pg_dump` does
//! not carry (it dumps one database; roles are the server's), carried here.
//!
//! - **Password verifiers** are read from the source's `pg_authid` at apply
//!   time only, by the backup step (the source may be gone by the time the
//!   target is prepared), and kept beside the archive in
//!   `{database}.roles.json`, mode 0600, as `pg_dumpall --roles-only` would
//!   keep them. They are set on the target as they are (`ALTER ROLE …
//!   PASSWORD 'SCRAM-SHA-256$…'`: the server stores a verifier it is given
//!   unchanged), so the role logs in with the same password. They never go
//!   into a plan, a snapshot, a journal or any output, and every one read
//!   is registered with the log redactor.
//! - A password the spec gives (`credentials.roles.NAME.password: ${VAR}`)
//!   is hashed here into a SCRAM-SHA-256 verifier (as psql's `\password`
//!   does), so the plain text never reaches the server's statement log.
//! - Attributes (LOGIN, CREATEDB, …, CONNECTION LIMIT, VALID UNTIL),
//!   `ALTER ROLE … SET` settings and memberships (WITH ADMIN OPTION) come
//!   from the plan, which observed them.
//! - Per-object grants and default privileges (`ALTER DEFAULT PRIVILEGES`)
//!   are in the dump; [`PRIVILEGES_SQL`] lists them so verify can compare.
//!   Database-level properties (`ALTER DATABASE … SET`, `GRANT CONNECT ON
//!   DATABASE`, per-database role settings, the database's comment) are
//!   dumped only with `--create`, which pgplan does not use: they are not
//!   carried (docs/data-path.md).
//!
//! Verification ([`check_roles`]) reads the target back: every role's
//! attributes, settings and memberships; its verifier, where the target
//! lets pgplan read `pg_authid`, compared with the source's in memory; and
//! for a password the spec gives, a real login over TCP with it (after a
//! login with a wrong one has been refused, so a server that does not ask
//! for passwords is not taken for proof).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::contents::ident;
use super::mismatch::Mismatch;
use super::{PgError, Runner};
use crate::observed::Role;

/// The source's password verifiers, by role. Never printed: `Debug` shows
/// only how many there are.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verifiers {
    /// Whether the source let pgplan read `pg_authid` at all.
    pub readable: bool,
    #[serde(default)]
    verifiers: BTreeMap<String, String>,
    /// The source's roles when the verifiers were read (for recreating them
    /// on a source whose data was in its pod, when a move rolls back).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Role>,
}

impl std::fmt::Debug for Verifiers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Verifiers {{ readable: {}, {} verifier(s), {} role(s) }}",
            self.readable,
            self.verifiers.len(),
            self.roles.len()
        )
    }
}

impl Verifiers {
    /// A role's verifier, if it has one (and it could be read).
    pub fn of(&self, role: &str) -> Option<&str> {
        self.verifiers.get(role).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.verifiers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.verifiers.is_empty()
    }

    fn remember_as_secrets(&self) {
        for v in self.verifiers.values() {
            crate::logging::redact_also(v);
        }
    }
}

/// The file format of `{database}.roles.json`.
const ROLES_VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RolesFile {
    roles_version: u32,
    #[serde(flatten)]
    verifiers: Verifiers,
}

/// Reads every role's verifier from `pg_authid` where the login may (a
/// superuser: the in-pod tools always are); elsewhere (RDS, a login without
/// the privilege) the result says it was not readable.
pub async fn read_verifiers(runner: &Runner<'_>) -> Result<Verifiers, PgError> {
    let script = "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS authid \\gset\n\
        \\if :authid\n\
        SELECT json_build_object('readable', true, 'verifiers', (SELECT coalesce(json_object_agg(rolname, rolpassword), '{}') \
          FROM pg_authid WHERE rolpassword IS NOT NULL AND rolname !~ '^pg_'));\n\
        \\else\n\
        SELECT json_build_object('readable', false);\n\
        \\endif\n";
    let out = runner.script("postgres", script).await?;
    // The error says nothing of the text: it holds the verifiers.
    let v: Verifiers = serde_json::from_str(out.trim()).map_err(|e| PgError::Output {
        server: runner.server(),
        command: "the password verifier query".into(),
        message: format!("not the JSON expected (at column {})", e.column()),
    })?;
    v.remember_as_secrets();
    Ok(v)
}

/// Writes the verifiers durably to `path`, readable by this user only
/// (mode 0600 whatever the umask).
pub fn write_verifiers(path: &Path, v: &Verifiers) -> Result<(), PgError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bytes = verifiers_bytes(path, v)?;
    let tmp = super::archive::with_suffix(path, ".tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| PgError::io("create", &tmp, e))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| PgError::io("write", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| PgError::io("rename into place", path, e))?;
    super::archive::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads what [`write_verifiers`] wrote.
pub fn read_verifiers_file(path: &Path) -> Result<Verifiers, PgError> {
    let bytes = std::fs::read(path).map_err(|e| PgError::io("read", path, e))?;
    parse_verifiers(&bytes, path)
}

/// The roles file's contents, as written beside an archive.
pub fn verifiers_bytes(path: &Path, v: &Verifiers) -> Result<Vec<u8>, PgError> {
    let file = RolesFile {
        roles_version: ROLES_VERSION,
        verifiers: v.clone(),
    };
    serde_json::to_vec(&file).map_err(|e| PgError::io("write", path, std::io::Error::other(e)))
}

/// A roles file's bytes (read from `path`, for messages); every password
/// verifier in it becomes a secret no log line may show.
pub fn parse_verifiers(bytes: &[u8], path: &Path) -> Result<Verifiers, PgError> {
    let file: RolesFile = serde_json::from_slice(bytes).map_err(|e| {
        PgError::archive(
            path,
            format!("the roles file does not read (at column {})", e.column()),
        )
    })?;
    if file.roles_version != ROLES_VERSION {
        return Err(PgError::archive(
            path,
            format!(
                "roles file version {} is not supported (this pgplan reads {ROLES_VERSION})",
                file.roles_version
            ),
        ));
    }
    file.verifiers.remember_as_secrets();
    Ok(file.verifiers)
}

// ---- SCRAM-SHA-256 verifiers (RFC 5802, RFC 7677), as PostgreSQL stores them.

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// PBKDF2-HMAC-SHA-256, one block (SCRAM's `Hi()`).
fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac_sha256(password, &first);
    let mut out = u;
    for _ in 1..iterations {
        u = hmac_sha256(password, &u);
        for (o, b) in out.iter_mut().zip(u) {
            *o ^= b;
        }
    }
    out
}

/// PostgreSQL's iteration count (`scram_iterations`' default).
pub const SCRAM_ITERATIONS: u32 = 4096;

/// The verifier PostgreSQL would store for `password` with this salt:
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
pub fn scram_verifier(password: &str, salt: &[u8], iterations: u32) -> String {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let salted = salted_password(password.as_bytes(), salt, iterations);
    let client_key = hmac_sha256(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = hmac_sha256(&salted, b"Server Key");
    format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        b64(salt),
        b64(&stored_key),
        b64(&server_key)
    )
}

/// Sixteen random bytes from the kernel.
fn random_salt() -> Result<[u8; 16], PgError> {
    use std::io::Read;
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| PgError::io("read", Path::new("/dev/urandom"), e))?;
    Ok(salt)
}

/// What to send as a role's password: a verifier of a password the spec
/// gives. Passwords with characters outside printable ASCII are sent as
/// they are and hashed by the server, which normalises them (SASLprep)
/// first.
pub fn password_to_send(plain: &str) -> Result<String, PgError> {
    if plain.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        let v = scram_verifier(plain, &random_salt()?, SCRAM_ITERATIONS);
        crate::logging::redact_also(&v);
        Ok(v)
    } else {
        Ok(plain.to_string())
    }
}

// ---- Preparing roles on the target.

/// A string literal.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Settings whose value is a list that `ALTER ROLE … SET` takes as
/// separate literals (PostgreSQL's `GUC_LIST_QUOTE`, as pg_dumpall treats them).
const LIST_SETTINGS: &[&str] = &[
    "search_path",
    "temp_tablespaces",
    "session_preload_libraries",
    "local_preload_libraries",
    "shared_preload_libraries",
];

/// Splits a list setting's value as the server prints it (`"$user", public`).
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out.retain(|s| !s.is_empty());
    out
}

/// `ALTER ROLE role SET …` for one `name=value` of `rolconfig`.
pub(crate) fn set_sql(role: &str, setting: &str) -> Option<String> {
    let (name, value) = setting.split_once('=')?;
    let value = if LIST_SETTINGS.contains(&name) {
        split_list(value)
            .iter()
            .map(|v| literal(v))
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        literal(value)
    };
    Some(format!(
        "ALTER ROLE {} SET {} = {value};\n",
        ident(role),
        ident(name)
    ))
}

/// Statements that keep a script's statements out of the server's log
/// (they may carry verifiers), where the login may change that (a
/// superuser); elsewhere they do nothing.
pub(crate) const QUIET_LOG: &str = "DO $pgplan$ BEGIN \
    SET log_statement = 'none'; SET log_min_duration_statement = -1; \
    SET log_min_error_statement = 'panic'; \
    EXCEPTION WHEN insufficient_privilege THEN NULL; END $pgplan$;\n";

/// `ALTER ROLE` giving `role` its attributes and, with `password`, that
/// password (a verifier, or text the server hashes).
pub(crate) fn alter_sql(role: &Role, password: Option<&str>) -> String {
    let mut sql = format!(
        "ALTER ROLE {} WITH {}",
        ident(&role.name),
        role.attributes()
    );
    if let Some(p) = password {
        sql.push_str(&format!(" PASSWORD {}", literal(p)));
    }
    sql.push_str(";\n");
    for setting in &role.config {
        if let Some(s) = set_sql(&role.name, setting) {
            sql.push_str(&s);
        }
    }
    sql
}

// ---- Reading roles back and checking them.

/// `r.rolvaliduntil` as text that means the same instant on every server
/// (JSON's timestamps follow the session's time zone): UTC, or
/// `infinity`.
pub(crate) const VALID_UNTIL_SQL: &str = "CASE WHEN r.rolvaliduntil IS NULL THEN NULL \
    WHEN NOT isfinite(r.rolvaliduntil) THEN r.rolvaliduntil::text \
    ELSE to_char(r.rolvaliduntil AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') END";

/// A role as the target has it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Live {
    name: String,
    attributes: Role,
    verifier: Option<String>,
}

/// The roles `names` on the target with their attributes and memberships
/// (and verifiers, where `pg_authid` may be read).
async fn live_roles(
    runner: &Runner<'_>,
    names: &[&str],
) -> Result<(bool, BTreeMap<String, Live>), PgError> {
    if names.is_empty() {
        return Ok((false, BTreeMap::new()));
    }
    let list = names
        .iter()
        .map(|n| literal(n))
        .collect::<Vec<_>>()
        .join(", ");
    let one = |verifier: &str| {
        format!(
            "SELECT json_build_object('readable', {readable}, 'roles', (SELECT coalesce(json_agg(json_build_object(\
            'name', r.rolname, 'verifier', {verifier}, 'attributes', json_build_object(\
            'name', r.rolname, 'superuser', r.rolsuper, 'login', r.rolcanlogin, \
            'createDb', r.rolcreatedb, 'createRole', r.rolcreaterole, 'inherit', r.rolinherit, \
            'replication', r.rolreplication, 'bypassRls', r.rolbypassrls, \
            'connectionLimit', r.rolconnlimit, 'validUntil', {valid_until}, \
            'config', coalesce(to_json(r.rolconfig), '[]'::json), \
            'memberOf', (SELECT coalesce(json_agg(b.rolname ORDER BY b.rolname), '[]'::json) \
               FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = r.oid), \
            'adminOf', (SELECT coalesce(json_agg(b.rolname ORDER BY b.rolname), '[]'::json) \
               FROM pg_auth_members m JOIN pg_roles b ON b.oid = m.roleid \
               WHERE m.member = r.oid AND m.admin_option)))), '[]'::json) \
            FROM pg_roles r WHERE r.rolname IN ({list})))",
            readable = if verifier == "NULL" { "false" } else { "true" },
            valid_until = VALID_UNTIL_SQL,
        )
    };
    let script = format!(
        "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS authid \\gset\n\\if :authid\n{};\n\\else\n{};\n\\endif\n",
        one("(SELECT a.rolpassword FROM pg_authid a WHERE a.oid = r.oid)"),
        one("NULL")
    );
    #[derive(Deserialize)]
    struct Out {
        readable: bool,
        roles: Vec<Live>,
    }
    let text = runner.script("postgres", &script).await?;
    let out: Out = serde_json::from_str(text.trim()).map_err(|e| PgError::Output {
        server: runner.server(),
        command: "the role query".into(),
        message: format!("not the JSON expected (at column {})", e.column()),
    })?;
    for r in &out.roles {
        if let Some(v) = &r.verifier {
            crate::logging::redact_also(v);
        }
    }
    Ok((
        out.readable,
        out.roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
    ))
}

/// The password a role is expected to have on the target.
#[derive(Clone, Copy)]
pub enum Expected<'a> {
    /// The source's verifier, set as it is.
    Verifier(&'a str),
    /// A password the spec gives (plain text, for a login).
    Given(&'a str),
    /// None is carried: the role had none, or it could not be read.
    Nothing,
}

/// One role to check.
pub struct RoleCheck<'a> {
    pub role: &'a Role,
    pub password: Expected<'a>,
}

/// What [`check_roles`] established, for the step's report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolesChecked {
    /// Roles whose attributes, settings and memberships match.
    pub roles: Vec<String>,
    /// Verifiers found identical to the source's.
    pub same_password: Vec<String>,
    /// Roles that logged in over TCP with the password the spec gives.
    pub logged_in: Vec<String>,
    /// Facts a reviewer should know: what could not be checked, and why.
    pub notes: Vec<String>,
}

/// Memberships as `group` or `group (admin)`, sorted.
fn memberships(r: &Role) -> Vec<String> {
    let admin: BTreeSet<&str> = r.admin_of.iter().map(String::as_str).collect();
    let mut out: Vec<String> = r
        .member_of
        .iter()
        .map(|g| {
            if admin.contains(g.as_str()) {
                format!("{g} (admin)")
            } else {
                g.clone()
            }
        })
        .collect();
    out.sort();
    out
}

/// A settings list normalised for comparison.
fn settings(r: &Role) -> Vec<String> {
    let mut s = r.config.clone();
    s.sort();
    s
}

/// Checks `checks` against the target: attributes, settings, memberships
/// and passwords (see the module's comment). A login is made to `database`.
pub async fn check_roles(
    runner: &Runner<'_>,
    database: &str,
    checks: &[RoleCheck<'_>],
) -> Result<(RolesChecked, Vec<Mismatch>), PgError> {
    let names: Vec<&str> = checks.iter().map(|c| c.role.name.as_str()).collect();
    let (readable, live) = live_roles(runner, &names).await?;
    let mut done = RolesChecked::default();
    let mut bad = Vec::new();
    let mut unreadable = Vec::new();
    for c in checks {
        let want = c.role;
        let Some(got) = live.get(&want.name) else {
            bad.push(Mismatch::RoleMissing {
                role: want.name.clone(),
            });
            continue;
        };
        let before = bad.len();
        let (a, b) = (want.attributes(), got.attributes.attributes());
        if a != b {
            bad.push(Mismatch::RoleAttributes {
                role: want.name.clone(),
                expected: a,
                actual: b,
            });
        }
        if settings(want) != settings(&got.attributes) {
            bad.push(Mismatch::RoleSettings {
                role: want.name.clone(),
                expected: settings(want),
                actual: settings(&got.attributes),
            });
        }
        if memberships(want) != memberships(&got.attributes) {
            bad.push(Mismatch::RoleMemberships {
                role: want.name.clone(),
                expected: memberships(want),
                actual: memberships(&got.attributes),
            });
        }
        if bad.len() == before {
            done.roles.push(want.name.clone());
        }
        match c.password {
            Expected::Verifier(v) if readable => {
                if got.verifier.as_deref() == Some(v) {
                    done.same_password.push(want.name.clone());
                } else {
                    bad.push(Mismatch::RolePassword {
                        role: want.name.clone(),
                    });
                }
            }
            Expected::Verifier(_) => unreadable.push(want.name.clone()),
            Expected::Given(plain) => match login(runner, &want.name, plain, database).await? {
                Login::In => done.logged_in.push(want.name.clone()),
                Login::Refused(error) => bad.push(Mismatch::RoleLogin {
                    role: want.name.clone(),
                    error,
                }),
                Login::Unchecked => done.notes.push(format!(
                    "{} lets {} in over TCP without checking its password, so a login proves nothing there",
                    runner.server(),
                    want.name
                )),
            },
            Expected::Nothing => {}
        }
    }
    if !unreadable.is_empty() {
        done.notes.push(format!(
            "the passwords of {} were set from the source's verifiers; {} does not let pgplan read them back (no access to pg_authid)",
            unreadable.join(", "),
            runner.server()
        ));
    }
    Ok((done, bad))
}

enum Login {
    In,
    Refused(String),
    /// A wrong password got in too: the server does not check passwords.
    Unchecked,
}

/// Logs in as `role` over TCP (never the local socket, where trust is
/// usual): a wrong password first, which must be refused, then `password`.
async fn login(
    runner: &Runner<'_>,
    role: &str,
    password: &str,
    database: &str,
) -> Result<Login, PgError> {
    let wrong = format!("pgplan-not-the-password-{}", hex::encode(random_salt()?));
    if try_login(runner, role, &wrong, database).await?.is_ok() {
        return Ok(Login::Unchecked);
    }
    Ok(match try_login(runner, role, password, database).await? {
        Ok(()) => Login::In,
        Err(e) => Login::Refused(e),
    })
}

/// One login; `Err(message)` when the server refused it.
async fn try_login(
    runner: &Runner<'_>,
    role: &str,
    password: &str,
    database: &str,
) -> Result<Result<(), String>, PgError> {
    let outcome = match runner {
        Runner::Pod { .. } => {
            // Over the pod's loopback (a tools pod's server is elsewhere:
            // PGPLAN_REMOTE, PGHOST), the password on stdin (never in the
            // command line, which the API server may log).
            let argv: Vec<String> = [
                "sh",
                "-c",
                "PGPASSWORD=$(cat); export PGPASSWORD; h=127.0.0.1; [ -n \"$PGPLAN_REMOTE\" ] && h=$PGHOST; exec psql -X -q -A -t -w -h \"$h\" -U \"$1\" -d \"$2\" -c 'SELECT 1'",
                "pgplan",
                role,
                database,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            runner
                .run(
                    &argv,
                    super::Stdin::Sized(password.as_bytes(), password.len() as u64),
                    &mut tokio::io::sink(),
                )
                .await?
        }
        Runner::Local { conn } => {
            let as_role = Runner::Local {
                conn: super::ConnInfo {
                    user: role.to_string(),
                    password: Some(password.to_string()),
                    ..conn.clone()
                },
            };
            let argv: Vec<String> = [
                "psql", "-X", "-q", "-A", "-t", "-w", "-d", database, "-c", "SELECT 1",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            as_role
                .run(&argv, super::Stdin::none(), &mut tokio::io::sink())
                .await?
        }
    };
    if outcome.code == 0 {
        return Ok(Ok(()));
    }
    let stderr = crate::logging::redacted(outcome.stderr.trim());
    Ok(Err(match super::ConnectProblem::of(&stderr) {
        Some(p) => format!("{} ({stderr})", p.what()),
        None => stderr,
    }))
}

// ---- Grants and default privileges.

/// The privileges a database's objects carry, one line each, sorted: the
/// default privileges (`ALTER DEFAULT PRIVILEGES`) and the explicit grants
/// on relations, schemas (but `public`, whose default differs between major
/// versions) and routines, each ACL's items sorted.
pub(crate) const PRIVILEGES_SQL: &str = r#"SELECT json_build_object(
  'defaultPrivileges', (SELECT coalesce(json_agg(x ORDER BY x), '[]'::json) FROM (
     SELECT format('for %s in %s on %s: %s', pg_get_userbyid(d.defaclrole),
            coalesce(n.nspname, '(all schemas)'),
            CASE d.defaclobjtype WHEN 'r' THEN 'tables' WHEN 'S' THEN 'sequences'
              WHEN 'f' THEN 'functions' WHEN 'T' THEN 'types' WHEN 'n' THEN 'schemas'
              ELSE d.defaclobjtype::text END,
            (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(d.defaclacl) a)) AS x
     FROM pg_default_acl d LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace) s),
  'grants', (SELECT coalesce(json_agg(x ORDER BY x), '[]'::json) FROM (
     SELECT format('%s %I.%I: %s', CASE c.relkind WHEN 'S' THEN 'sequence' WHEN 'v' THEN 'view'
              WHEN 'm' THEN 'materialized view' ELSE 'table' END, n.nspname, c.relname,
            (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(c.relacl) a)) AS x
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relacl IS NOT NULL AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
        AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
     UNION ALL
     SELECT format('schema %I: %s', n.nspname,
            (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(n.nspacl) a))
       FROM pg_namespace n
      WHERE n.nspacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
        AND n.nspname !~ '^pg_'
     UNION ALL
     SELECT format('routine %I.%I(%s): %s', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid),
            (SELECT string_agg(a::text, ',' ORDER BY a::text) FROM unnest(p.proacl) a))
       FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
      WHERE p.proacl IS NOT NULL AND n.nspname NOT IN ('pg_catalog', 'information_schema')
        AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                        AND d.objid = p.oid AND d.deptype = 'e')) s))"#;

/// A database's privileges, as [`PRIVILEGES_SQL`] lists them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Privileges {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_privileges: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grants: Vec<String>,
}

impl Privileges {
    pub fn parse(server: &str, text: &str) -> Result<Privileges, PgError> {
        serde_json::from_str(text.trim()).map_err(|e| PgError::Output {
            server: server.to_string(),
            command: "the privileges query".into(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's test vector: user "user", password "pencil".
    #[test]
    fn scram_keys_match_the_rfc() {
        use base64::Engine;
        let salt = base64::engine::general_purpose::STANDARD
            .decode("W22ZaJ0SNY7soEsUEjb6gQ==")
            .unwrap();
        let salted = salted_password(b"pencil", &salt, 4096);
        let client_key = hmac_sha256(&salted, b"Client Key");
        let server_key = hmac_sha256(&salted, b"Server Key");
        // ServerSignature of the RFC's exchange, from its AuthMessage.
        let auth = "n=user,r=rOprNGfwEbeRWgbNEkqO,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let signature = hmac_sha256(&server_key, auth.as_bytes());
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
        // ClientProof = ClientKey XOR HMAC(StoredKey, AuthMessage).
        let stored = Sha256::digest(client_key);
        let client_sig = hmac_sha256(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(client_sig)
            .map(|(a, b)| a ^ b)
            .collect();
        assert_eq!(
            base64::engine::general_purpose::STANDARD.encode(proof),
            "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(scram_verifier("pencil", &salt, 4096)
            .starts_with("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"));
    }

    #[test]
    fn list_settings_are_split_into_literals() {
        assert_eq!(
            set_sql("app", "search_path=\"$user\", app, \"odd,name\"").unwrap(),
            "ALTER ROLE \"app\" SET \"search_path\" = '$user', 'app', 'odd,name';\n"
        );
        assert_eq!(
            set_sql("app", "statement_timeout=5s").unwrap(),
            "ALTER ROLE \"app\" SET \"statement_timeout\" = '5s';\n"
        );
    }

    #[test]
    fn verifiers_are_never_debug_printed() {
        let mut v = Verifiers {
            readable: true,
            ..Verifiers::default()
        };
        v.verifiers
            .insert("app".into(), "SCRAM-SHA-256$4096:c2FsdA==$a:b".into());
        let shown = format!("{v:?}");
        assert!(!shown.contains("SCRAM"), "{shown}");
        assert!(shown.contains("1 verifier"), "{shown}");
    }

    #[test]
    fn attributes_are_spelled_as_create_role_takes_them() {
        let r = Role {
            name: "ro".into(),
            login: true,
            connection_limit: 3,
            valid_until: Some("2030-01-01T00:00:00+00:00".into()),
            config: vec!["work_mem=8MB".into()],
            ..Role::default()
        };
        assert_eq!(
            alter_sql(&r, Some("SCRAM-SHA-256$x")),
            "ALTER ROLE \"ro\" WITH NOSUPERUSER LOGIN NOCREATEDB NOCREATEROLE INHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT 3 VALID UNTIL '2030-01-01T00:00:00+00:00' PASSWORD 'SCRAM-SHA-256$x';\nALTER ROLE \"ro\" SET \"work_mem\" = '8MB';\n"
        );
    }
}
