//! What a server holds: version, roles, databases with sizes, and per
//! database the tables with exact row counts, sequences, extensions and
//! every `%knex_migrations_lock` table with whether it is locked. Each query
//! returns one JSON document, so parsing does not depend on psql's layout.

use serde::Deserialize;

use super::{PgError, Runner};
use crate::observed::{
    DatabaseInventory, Extension, KnexLock, Role, Sequence, ServerInventory, Session, Table,
};

/// The server's inventory as one JSON document. `{password}` is the
/// expression for a role's password kind: read from `pg_authid` where the
/// login may (a superuser), `'unknown'` elsewhere. The verifier itself
/// never leaves the server here.
const SERVER_SQL: &str = r#"
select json_build_object(
  'version', current_setting('server_version'),
  'roles', (select coalesce(json_agg(json_build_object(
      'name', r.rolname, 'superuser', r.rolsuper, 'login', r.rolcanlogin,
      'createDb', r.rolcreatedb, 'createRole', r.rolcreaterole,
      'inherit', r.rolinherit, 'replication', r.rolreplication, 'bypassRls', r.rolbypassrls,
      'connectionLimit', r.rolconnlimit, 'validUntil', {valid_until},
      'config', coalesce(to_json(r.rolconfig), '[]'::json),
      'password', {password},
      'memberOf', (select coalesce(json_agg(b.rolname order by b.rolname), '[]'::json)
                   from pg_auth_members m join pg_roles b on b.oid = m.roleid where m.member = r.oid),
      'adminOf', (select coalesce(json_agg(b.rolname order by b.rolname), '[]'::json)
                  from pg_auth_members m join pg_roles b on b.oid = m.roleid
                  where m.member = r.oid and m.admin_option))
      order by r.rolname), '[]'::json)
    from pg_roles r where r.rolname !~ '^pg_' and r.rolname !~ '^rds'),
  'databases', (select coalesce(json_agg(json_build_object(
      'name', d.datname, 'owner', pg_get_userbyid(d.datdba),
      'encoding', pg_encoding_to_char(d.encoding), 'sizeBytes', pg_database_size(d.datname))
      order by d.datname), '[]'::json)
    from pg_database d where d.datallowconn and not d.datistemplate),
  'sessions', (select coalesce(json_agg(json_build_object(
      'address', host(a.client_addr), 'database', a.datname, 'user', coalesce(a.usename, ''),
      'application', coalesce(a.application_name, ''))
      order by host(a.client_addr), a.datname, a.pid), '[]'::json)
    from pg_stat_activity a
    where a.backend_type = 'client backend' and a.pid <> pg_backend_pid()
      and a.client_addr is not null and a.datname is not null),
  'transactions', (select coalesce(json_agg(x.t order by x.age desc), '[]'::json) from (
      select json_build_object('database', a.datname, 'user', coalesce(a.usename, ''),
          'application', coalesce(a.application_name, ''), 'address', coalesce(host(a.client_addr), ''),
          'ageSeconds', floor(extract(epoch from now() - a.xact_start))::bigint) as t,
        now() - a.xact_start as age
      from pg_stat_activity a
      where a.backend_type = 'client backend' and a.pid <> pg_backend_pid()
        and a.datname is not null and a.xact_start < now() - interval '{transactions_from} seconds'
      union all
      select json_build_object('database', p.database, 'user', p.owner,
          'ageSeconds', floor(extract(epoch from now() - p.prepared))::bigint, 'prepared', p.gid),
        now() - p.prepared
      from pg_prepared_xacts p) x)
)"#;

/// A role's password kind, from `pg_authid` (superusers only).
const PASSWORD_KIND: &str = "(select case when a.rolpassword is null then 'none' \
    when a.rolpassword like 'SCRAM-SHA-256$%' then 'scram-sha-256' \
    when a.rolpassword like 'md5%' then 'md5' else 'unknown' end \
    from pg_authid a where a.oid = r.oid)";

/// The inventory script: one query or the other, by whether `pg_authid`
/// may be read (a query naming it fails without the privilege even where
/// it would not be evaluated).
fn server_script() -> String {
    format!(
        "SELECT has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS authid \\gset\n\\if :authid\n{};\n\\else\n{};\n\\endif\n",
        SERVER_SQL
            .replace("{password}", PASSWORD_KIND)
            .replace("{valid_until}", super::roles::VALID_UNTIL_SQL)
            .replace("{transactions_from}", &crate::observed::TRANSACTIONS_FROM.to_string())
            .trim(),
        SERVER_SQL
            .replace("{password}", "'unknown'")
            .replace("{valid_until}", super::roles::VALID_UNTIL_SQL)
            .replace("{transactions_from}", &crate::observed::TRANSACTIONS_FROM.to_string())
            .trim()
    )
}

const DATABASE_SQL: &str = r#"
with t as (
  select n.nspname as schema, c.relname as name
  from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p') and not c.relispartition
    and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname !~ '^pg_toast'
)
select json_build_object(
  'tables', (select coalesce(json_agg(json_build_object('schema', schema, 'name', name,
      'rows', (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', schema, name), false, true, '')))[1]::text::bigint)
      order by schema, name), '[]'::json) from t),
  'sequences', (select coalesce(json_agg(json_build_object('schema', schemaname, 'name', sequencename,
      'lastValue', coalesce(last_value, 0)) order by schemaname, sequencename), '[]'::json) from pg_sequences),
  'extensions', (select coalesce(json_agg(json_build_object('name', extname, 'version', extversion) order by extname), '[]'::json)
      from pg_extension where extname <> 'plpgsql'),
  'knexLocks', (select coalesce(json_agg(json_build_object('schema', schema, 'table', name,
      'locked', (xpath('/row/l/text()', query_to_xml(format(
          'select exists(select 1 from %I.%I where is_locked <> 0) as l', schema, name), false, true, '')))[1]::text::boolean)
      order by schema, name), '[]'::json)
    from t where name like '%knex_migrations_lock')
)"#;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServerRow {
    version: String,
    roles: Vec<Role>,
    databases: Vec<DbRow>,
    #[serde(default)]
    sessions: Vec<Session>,
    #[serde(default)]
    transactions: Vec<crate::observed::OpenTransaction>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DbRow {
    name: String,
    owner: String,
    encoding: String,
    size_bytes: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DbDetail {
    tables: Vec<Table>,
    sequences: Vec<Sequence>,
    extensions: Vec<Extension>,
    knex_locks: Vec<KnexLock>,
}

fn parse<T: for<'de> Deserialize<'de>>(
    runner: &Runner<'_>,
    what: &str,
    text: &str,
) -> Result<T, PgError> {
    serde_json::from_str(text.trim()).map_err(|e| PgError::Output {
        server: runner.server(),
        command: what.into(),
        message: e.to_string(),
    })
}

/// Inventory a server: all databases are listed with their sizes; those
/// `wanted` says yes to are looked into (tables, sequences, locks).
pub async fn server(
    runner: &Runner<'_>,
    locator: &str,
    wanted: &dyn Fn(&str) -> bool,
) -> Result<ServerInventory, PgError> {
    let row: ServerRow = parse(
        runner,
        "the server inventory query",
        &runner.script("postgres", &server_script()).await?,
    )?;
    let mut databases = Vec::with_capacity(row.databases.len());
    for d in row.databases {
        let mut inv = DatabaseInventory {
            name: d.name,
            owner: d.owner,
            encoding: d.encoding,
            size_bytes: d.size_bytes,
            extensions: Vec::new(),
            tables: Vec::new(),
            sequences: Vec::new(),
            knex_locks: Vec::new(),
        };
        if wanted(&inv.name) {
            let detail: DbDetail = parse(
                runner,
                "the database inventory query",
                &runner.query(&inv.name, DATABASE_SQL).await?,
            )?;
            inv.tables = detail.tables;
            inv.sequences = detail.sequences;
            inv.extensions = detail.extensions;
            inv.knex_locks = detail.knex_locks;
        }
        databases.push(inv);
    }
    Ok(ServerInventory {
        locator: locator.to_string(),
        // "15.18 (Debian 15.18-0+deb12u1)" → "15.18"
        version: row
            .version
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        roles: row.roles,
        databases,
        sessions: row.sessions,
        transactions: row.transactions,
    })
}
