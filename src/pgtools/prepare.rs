//! Preparing a target server for restores: the roles that own or are
//! granted the data, with their attributes, settings, passwords and
//! memberships, and the empty databases, with their owners.
//!
//! Missing roles are created; every role the plan lists (roles the target
//! did not have when the plan was made, so on a fresh server also those its
//! image made from the same settings) is then given the source's
//! attributes, settings and password, so it logs in as before. Memberships
//! are granted (WITH ADMIN OPTION where the source has it) and never
//! revoked; databases are created only when missing. A rerun changes
//! nothing more. Roles the target already had when the plan was made are
//! not in the list and never altered.
//!
//! RDS has no SUPERUSER: there roles are created without it (and without
//! REPLICATION and BYPASSRLS, which only a superuser grants), and every role
//! pgplan creates, and every owner of a database it creates, is granted to
//! the connecting master user, which needs the membership to create
//! databases owned by them and for `pg_restore` to restore ownership
//! (`ALTER … OWNER TO`).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::contents::ident;
use super::roles::{self, Verifiers};
use super::{PgError, Runner};
use crate::observed::Role;

/// What [`prepare_target`] created or set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Prepared {
    /// Roles created (a rollback may drop them).
    pub roles: Vec<String>,
    /// Roles that existed already and were given the source's attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aligned: Vec<String>,
    /// A role of the list pgplan is connected as, left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_alone: Option<String>,
    /// Roles given a password: the source's verifier or the spec's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passwords: Vec<String>,
    /// `(group, member)` memberships granted.
    pub grants: Vec<(String, String)>,
    pub databases: Vec<String>,
    /// Databases that existed already (the image may have made them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub existing_databases: Vec<String>,
}

impl Prepared {
    /// Whether nothing was missing.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.grants.is_empty() && self.databases.is_empty()
    }
}

/// Where each role's password comes from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passwords<'a> {
    /// The source's verifiers (read at apply, never stored in a plan).
    pub verifiers: Option<&'a Verifiers>,
    /// Passwords the spec gives, by role (they win over the source's).
    pub given: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Passwords<'a> {
    /// What `role` gets: the spec's password, else the source's verifier.
    pub fn of(&self, role: &str) -> Option<Given<'a>> {
        if let Some(p) = self.given.and_then(|g| g.get(role)) {
            return Some(Given::Plain(p));
        }
        self.verifiers.and_then(|v| v.of(role)).map(Given::Verifier)
    }
}

/// A password to set.
#[derive(Debug, Clone, Copy)]
pub enum Given<'a> {
    Verifier(&'a str),
    Plain(&'a str),
}

#[derive(Deserialize)]
struct Existing {
    me: String,
    superuser: bool,
    roles: BTreeSet<String>,
    /// `(member, group, admin option)`.
    memberships: BTreeSet<(String, String, bool)>,
    databases: BTreeSet<String>,
}

const EXISTING_SQL: &str = r#"SELECT json_build_object(
  'me', current_user,
  'superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
  'roles', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles),
  'memberships', (SELECT coalesce(json_agg(json_build_array(m.rolname, g.rolname, a.admin_option)), '[]')
                  FROM pg_auth_members a JOIN pg_roles m ON m.oid = a.member
                  JOIN pg_roles g ON g.oid = a.roleid),
  'databases', (SELECT coalesce(json_agg(datname), '[]') FROM pg_database))"#;

async fn existing(runner: &Runner<'_>) -> Result<Existing, PgError> {
    let text = runner.query("postgres", EXISTING_SQL).await?;
    serde_json::from_str(text.trim()).map_err(|e| PgError::Output {
        server: runner.server(),
        command: "the role and database query".into(),
        message: e.to_string(),
    })
}

fn create_role(role: &Role, strip_superuser: bool) -> String {
    format!(
        "CREATE ROLE {} WITH {};\n",
        ident(&role.name),
        stripped(role, strip_superuser).attributes()
    )
}

/// The role as it can exist on the target: without what only a superuser
/// grants, where pgplan has none.
fn stripped(role: &Role, strip_superuser: bool) -> Role {
    let mut r = role.clone();
    if strip_superuser {
        r.superuser = false;
        r.replication = false;
        r.bypass_rls = false;
    }
    r
}

/// Creates the missing `roles` (no SUPERUSER, REPLICATION or BYPASSRLS when
/// `strip_superuser`), gives every one of them the source's attributes,
/// settings and the password `passwords` has for it, grants their missing
/// memberships, and creates the missing `databases` (`(name, owner)`, from
/// `template0`, so they are empty).
pub async fn prepare_target(
    runner: &Runner<'_>,
    roles: &[Role],
    databases: &[(String, String)],
    strip_superuser: bool,
) -> Result<Prepared, PgError> {
    prepare_target_with(
        runner,
        roles,
        databases,
        strip_superuser,
        Passwords::default(),
    )
    .await
}

/// [`prepare_target`], the roles given the passwords `passwords` has.
pub async fn prepare_target_with(
    runner: &Runner<'_>,
    roles: &[Role],
    databases: &[(String, String)],
    strip_superuser: bool,
    passwords: Passwords<'_>,
) -> Result<Prepared, PgError> {
    let before = existing(runner).await?;
    let mut done = Prepared::default();
    let mut sql = String::new();
    let mut secrets: Vec<String> = Vec::new();
    let mut known = before.roles.clone();
    for role in roles {
        if known.insert(role.name.clone()) {
            sql.push_str(&create_role(role, strip_superuser));
            done.roles.push(role.name.clone());
        } else {
            done.aligned.push(role.name.clone());
        }
    }
    // The role pgplan is connected as is given the source's attributes
    // only on a server where it is a superuser that stays one: anything
    // else could take away what the rest of the script needs (and on RDS
    // its password is the master password).
    let keep_me = |role: &Role| {
        role.name == before.me && (strip_superuser || !before.superuser || !role.superuser)
    };
    if let Some(me) = roles.iter().find(|r| keep_me(r)) {
        done.aligned.retain(|r| *r != me.name);
        done.left_alone = Some(me.name.clone());
    }
    for role in roles.iter().filter(|r| !keep_me(r)) {
        let password = match passwords.of(&role.name) {
            Some(Given::Verifier(v)) => Some(v.to_string()),
            Some(Given::Plain(p)) => Some(roles::password_to_send(p)?),
            None => None,
        };
        if let Some(p) = &password {
            secrets.push(p.clone());
            done.passwords.push(role.name.clone());
        }
        sql.push_str(&roles::alter_sql(
            &stripped(role, strip_superuser),
            password.as_deref(),
        ));
    }
    for role in roles {
        for group in &role.member_of {
            let admin = role.admin_of.contains(group);
            let have = |a: bool| {
                before
                    .memberships
                    .contains(&(role.name.clone(), group.clone(), a))
            };
            // Already there (with the admin option when it needs one).
            if have(true) || (have(false) && !admin) {
                continue;
            }
            if known.contains(group) {
                sql.push_str(&format!(
                    "GRANT {} TO {}{};\n",
                    ident(group),
                    ident(&role.name),
                    if admin { " WITH ADMIN OPTION" } else { "" }
                ));
                done.grants.push((group.clone(), role.name.clone()));
            }
        }
    }
    // Without SUPERUSER, the connecting user must be a member of a role to
    // create databases it owns and to give objects to it.
    if strip_superuser || !before.superuser {
        let mut needed: BTreeSet<&str> = done.roles.iter().map(String::as_str).collect();
        needed.extend(
            databases
                .iter()
                .filter(|(name, _)| !before.databases.contains(name))
                .map(|(_, owner)| owner.as_str()),
        );
        for role in needed {
            let granted = done
                .grants
                .iter()
                .any(|(g, m)| g == role && *m == before.me);
            let member = before
                .memberships
                .iter()
                .any(|(m, g, _)| *m == before.me && g == role);
            if role != before.me && known.contains(role) && !granted && !member {
                sql.push_str(&format!(
                    "GRANT {} TO {};\n",
                    ident(role),
                    ident(&before.me)
                ));
                done.grants.push((role.to_string(), before.me.clone()));
            }
        }
    }
    for (name, owner) in databases {
        if before.databases.contains(name) {
            done.existing_databases.push(name.clone());
            continue;
        }
        if !known.contains(owner) {
            return Err(PgError::Refused {
                server: runner.server(),
                message: format!("database {name} is to be owned by role {owner}, which exists neither on the target nor among the roles to create"),
                help: "the plan creates the owners of the databases it restores; re-plan against the live target".into(),
            });
        }
        sql.push_str(&format!(
            "CREATE DATABASE {} OWNER {} TEMPLATE template0;\n",
            ident(name),
            ident(owner)
        ));
        done.databases.push(name.clone());
    }
    if !sql.is_empty() {
        let script = format!("{}{sql}", roles::QUIET_LOG);
        runner
            .script("postgres", &script)
            .await
            .map_err(|e| without(e, &secrets))?;
    }
    Ok(done)
}

/// An error of a script that set passwords, with any of them taken out of
/// its text (the server quotes no statement, but a message is not trusted
/// to hold none).
fn without(e: PgError, secrets: &[String]) -> PgError {
    let text = e.to_string();
    if !secrets.iter().any(|s| text.contains(s.as_str())) {
        return e;
    }
    let r = crate::redact::Redactor::new(secrets.iter().cloned());
    PgError::Refused {
        server: String::from("the target"),
        message: r.text(&text),
        help:
            "setting the roles on the target failed; the message above has the passwords taken out"
                .into(),
    }
}

/// Drops databases (their sessions too), then roles, that a prepare
/// created: its compensation on a server that outlives the rollback.
/// What was dropped, in order (roles as `role {name}`).
pub async fn drop_prepared(
    r: &Runner<'_>,
    databases: &[String],
    roles: &[String],
) -> Result<Vec<String>, PgError> {
    let mut dropped = Vec::new();
    for db in databases {
        r.query(
            "postgres",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(db)),
        )
        .await?;
        dropped.push(db.clone());
    }
    for role in roles {
        r.query("postgres", &format!("DROP ROLE IF EXISTS {}", ident(role)))
            .await?;
        dropped.push(format!("role {role}"));
    }
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_keep_their_attributes_but_superuser_can_be_stripped() {
        let role = Role {
            name: "app".into(),
            superuser: true,
            login: true,
            create_db: false,
            create_role: true,
            replication: true,
            ..Role::default()
        };
        assert_eq!(
            create_role(&role, false),
            "CREATE ROLE \"app\" WITH SUPERUSER LOGIN NOCREATEDB CREATEROLE INHERIT REPLICATION NOBYPASSRLS CONNECTION LIMIT -1;\n"
        );
        assert_eq!(
            create_role(&role, true),
            "CREATE ROLE \"app\" WITH NOSUPERUSER LOGIN NOCREATEDB CREATEROLE INHERIT NOREPLICATION NOBYPASSRLS CONNECTION LIMIT -1;\n"
        );
    }
}
