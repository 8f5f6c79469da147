//! Preparing a target server for restores: the roles that own or are
//! granted the data, and the empty databases, with their owners. Only what
//! is missing is created, so a rerun changes nothing; existing roles and
//! databases are never altered.
//!
//! RDS has no SUPERUSER: there roles are created without it
//! (`strip_superuser`), and every role pgplan creates, and every owner of a
//! database it creates, is granted to the connecting master user, which
//! needs the membership to create databases owned by them and for
//! `pg_restore` to restore ownership (`ALTER … OWNER TO`).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::contents::ident;
use super::{PgError, Runner};
use crate::observed::Role;

/// What [`prepare_target`] created.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prepared {
    pub roles: Vec<String>,
    /// `(group, member)` memberships granted.
    pub grants: Vec<(String, String)>,
    pub databases: Vec<String>,
}

impl Prepared {
    /// Whether nothing was missing.
    pub fn is_empty(&self) -> bool {
        self.roles.is_empty() && self.grants.is_empty() && self.databases.is_empty()
    }
}

#[derive(Deserialize)]
struct Existing {
    me: String,
    superuser: bool,
    roles: BTreeSet<String>,
    /// `(member, group)`.
    memberships: BTreeSet<(String, String)>,
    databases: BTreeSet<String>,
}

const EXISTING_SQL: &str = r#"SELECT json_build_object(
  'me', current_user,
  'superuser', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
  'roles', (SELECT coalesce(json_agg(rolname), '[]') FROM pg_roles),
  'memberships', (SELECT coalesce(json_agg(json_build_array(m.rolname, g.rolname)), '[]')
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
    let mut sql = format!("CREATE ROLE {}", ident(&role.name));
    let flag = |on: bool, yes: &str, no: &str| format!(" {}", if on { yes } else { no });
    sql.push_str(&flag(
        role.superuser && !strip_superuser,
        "SUPERUSER",
        "NOSUPERUSER",
    ));
    sql.push_str(&flag(role.login, "LOGIN", "NOLOGIN"));
    sql.push_str(&flag(role.create_db, "CREATEDB", "NOCREATEDB"));
    sql.push_str(&flag(role.create_role, "CREATEROLE", "NOCREATEROLE"));
    sql.push_str(";\n");
    sql
}

/// Creates the missing `roles` (attributes copied; no SUPERUSER when
/// `strip_superuser`), their missing memberships, and the missing
/// `databases` (`(name, owner)`, from `template0`, so they are empty).
/// Roles get no password: the source's cannot be read back, and consumers
/// connect with the credentials the spec gives.
pub async fn prepare_target(
    runner: &Runner<'_>,
    roles: &[Role],
    databases: &[(String, String)],
    strip_superuser: bool,
) -> Result<Prepared, PgError> {
    let before = existing(runner).await?;
    let mut done = Prepared::default();
    let mut sql = String::new();
    let mut known = before.roles.clone();
    for role in roles {
        if known.insert(role.name.clone()) {
            sql.push_str(&create_role(role, strip_superuser));
            done.roles.push(role.name.clone());
        }
    }
    for role in roles.iter().filter(|r| done.roles.contains(&r.name)) {
        for group in &role.member_of {
            if known.contains(group)
                && !before
                    .memberships
                    .contains(&(role.name.clone(), group.clone()))
            {
                sql.push_str(&format!(
                    "GRANT {} TO {};\n",
                    ident(group),
                    ident(&role.name)
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
            if role != before.me
                && known.contains(role)
                && !granted
                && !before
                    .memberships
                    .contains(&(before.me.clone(), role.to_string()))
            {
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
        runner.script("postgres", &sql).await?;
    }
    Ok(done)
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
            member_of: vec![],
        };
        assert_eq!(
            create_role(&role, false),
            "CREATE ROLE \"app\" SUPERUSER LOGIN NOCREATEDB CREATEROLE;\n"
        );
        assert_eq!(
            create_role(&role, true),
            "CREATE ROLE \"app\" NOSUPERUSER LOGIN NOCREATEDB CREATEROLE;\n"
        );
    }
}
