//! Preflight: risks the live world shows before a byte moves, as findings
//! in the plan, each with a stable code (`pgplan::preflight::…`), a
//! severity (an error blocks apply; a warning is shown), the object it is
//! about and what to do. A finding the spec accepts (`preflight.accept`,
//! by code and object) is still listed, and no longer blocks.
//!
//! Part of the core: it reads the observed state and the spec, no IO.
//! docs/preflight.md lists every code.

use serde_json::Value;

use crate::observed::{labels, str_at, Index, ServerInventory, Session};
use crate::plan::{Finding, Severity};
use crate::spec::{Placement, Source};

/// A client connected to a database the plan moves whose pod is not the
/// source's and belongs to no listed consumer.
pub const UNLISTED_CLIENT: &str = "pgplan::preflight::unlisted-client";

/// Every code, for docs and the spec's `accept` list.
pub const CODES: &[&str] = &[
    UNLISTED_CLIENT,
    TARGET_OLDER_MAJOR,
    TARGET_NEWER_MAJOR,
    TARGET_CAPACITY,
    ROLE_ATTRIBUTES_DROPPED,
    LONG_TRANSACTION,
    PREPARED_TRANSACTION,
];

/// A transaction open on a moved database for longer than
/// [`LONG_TRANSACTION_SECONDS`].
pub const LONG_TRANSACTION: &str = "pgplan::preflight::long-transaction";

/// A prepared transaction on a moved database.
pub const PREPARED_TRANSACTION: &str = "pgplan::preflight::prepared-transaction";

/// How old an open transaction must be to be said.
pub const LONG_TRANSACTION_SECONDS: u64 = 60;

/// The target's storage against the data it must take (with room for the
/// WAL and index builds of the restore).
pub const TARGET_CAPACITY: &str = "pgplan::preflight::target-capacity";

/// A role the move copies has attributes only a superuser grants, and the
/// target has none to grant them (RDS).
pub const ROLE_ATTRIBUTES_DROPPED: &str = "pgplan::preflight::role-attributes-dropped";

/// What a restore writes besides the data: WAL up to `max_wal_size` (1 GiB
/// by default) before a checkpoint recycles it.
const WAL_ROOM: u64 = 1 << 30;

/// The short form of a code in the spec (`unlisted-client`).
pub fn short(code: &str) -> &str {
    code.strip_prefix("pgplan::preflight::").unwrap_or(code)
}

/// Addresses a session from inside the server's own pod comes from.
fn in_the_pod(address: &str) -> bool {
    matches!(address, "127.0.0.1" | "::1" | "")
}

/// The workload a pod belongs to, as `(kind, name)`: its controller, a
/// ReplicaSet read as the Deployment it is named after (`{deployment}-{pod-template-hash}`).
fn owner_of(pod: &Value) -> Option<(String, String)> {
    let owners = pod
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?;
    let owner = owners
        .iter()
        .find(|o| o.get("controller") == Some(&Value::Bool(true)))
        .or(owners.first())?;
    let kind = owner.get("kind")?.as_str()?;
    let name = owner.get("name")?.as_str()?;
    if kind == "ReplicaSet" {
        if let Some(hash) = labels(pod).get("pod-template-hash") {
            if let Some(d) = name.strip_suffix(&format!("-{hash}")) {
                return Some(("Deployment".into(), d.to_string()));
            }
        }
    }
    Some((kind.to_string(), name.to_string()))
}

/// Whether the spec accepts `code` for `object` (`Kind/name` or an address).
fn accepted(p: &Placement, code: &str, object: &str) -> bool {
    p.spec()
        .preflight
        .accept
        .iter()
        .any(|a| short(&a.code) == short(code) && a.object == object)
}

/// Sessions on the source server from clients the move does not stop:
/// they would go on writing while the data moves, and what they write
/// after the backup is lost.
pub fn unlisted_clients(
    p: &Placement,
    idx: &Index<'_>,
    source: &ServerInventory,
    moved: &[String],
) -> Vec<Finding> {
    let Source::Kubernetes(src) = &p.spec().source else {
        return Vec::new();
    };
    let source_kind = src.workload.kind.as_str();
    let source_name = source.locator.rsplit('/').next().unwrap_or_default();
    let consumers: Vec<(String, String, String)> = p
        .spec()
        .consumers
        .iter()
        .map(|c| {
            (
                c.kind.clone(),
                c.name.clone(),
                c.namespace.clone().unwrap_or_else(|| src.namespace.clone()),
            )
        })
        .collect();
    // Deployments a listed custom resource owns (an operator's workload).
    let owned_by_consumer = |ns: &str, kind: &str, name: &str| {
        idx.get(kind, ns, name).is_some_and(|w| {
            w.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|os| {
                    os.iter().any(|o| {
                        consumers.iter().any(|(ck, cn, cns)| {
                            cns == ns
                                && o.get("kind").and_then(Value::as_str) == Some(ck)
                                && o.get("name").and_then(Value::as_str) == Some(cn)
                        })
                    })
                })
        })
    };
    let pods: Vec<&Value> = idx
        .all()
        .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Pod"))
        .collect();
    let mut out: Vec<Finding> = Vec::new();
    for s in &source.sessions {
        if in_the_pod(&s.address) || !moved.contains(&s.database) {
            continue;
        }
        let pod = pods
            .iter()
            .find(|p| str_at(p, &["status", "podIP"]) == Some(s.address.as_str()));
        let (object, who) = match pod {
            Some(pod) => {
                let ns = str_at(pod, &["metadata", "namespace"]).unwrap_or("default");
                let name = str_at(pod, &["metadata", "name"]).unwrap_or("?");
                match owner_of(pod) {
                    Some((kind, owner)) => {
                        let listed = consumers
                            .iter()
                            .any(|(ck, cn, cns)| *ck == kind && *cn == owner && cns == ns)
                            || owned_by_consumer(ns, &kind, &owner);
                        let own = kind == source_kind && owner == source_name;
                        if listed || own {
                            continue;
                        }
                        (
                            format!("{kind}/{owner}"),
                            format!("pod {ns}/{name} ({kind} {owner})"),
                        )
                    }
                    None => (format!("Pod/{name}"), format!("pod {ns}/{name}")),
                }
            }
            None => (
                s.address.clone(),
                format!(
                    "a client at {} (no pod pgplan read has that address)",
                    s.address
                ),
            ),
        };
        if let Some(f) = out.iter_mut().find(|f| f.object == object) {
            if !f.message.contains(&format!("`{}`", s.database)) {
                f.message = f.message.replacen(
                    " is connected to ",
                    &format!(" is connected to `{}` and ", s.database),
                    1,
                );
            }
            continue;
        }
        out.push(unlisted(p, &object, &who, s));
    }
    out
}

fn unlisted(p: &Placement, object: &str, who: &str, s: &Session) -> Finding {
    let user = if s.user.is_empty() {
        String::new()
    } else {
        format!(" as `{}`", s.user)
    };
    let app = if s.application.is_empty() {
        String::new()
    } else {
        format!(" ({})", s.application)
    };
    Finding {
        code: UNLISTED_CLIENT.into(),
        severity: Severity::Error,
        placement: p.name().to_string(),
        object: object.to_string(),
        message: format!(
            "{who} is connected to `{}`{user}{app} and is not a listed consumer: it would go on writing while the data moves, and what it writes after the backup is lost",
            s.database
        ),
        help: format!(
            "list its workload under `consumers` (pgplan stops it around the move and starts it again), stop it, or accept the risk: `preflight: {{accept: [{{code: {}, object: {object}}}]}}`",
            short(UNLISTED_CLIENT)
        ),
        accepted: accepted(p, UNLISTED_CLIENT, object),
    }
}

/// The target runs an older PostgreSQL major version than the source.
pub const TARGET_OLDER_MAJOR: &str = "pgplan::preflight::target-older-major";

/// The target runs a newer PostgreSQL major version than the source.
pub const TARGET_NEWER_MAJOR: &str = "pgplan::preflight::target-newer-major";

/// The major version in a `server_version` or an RDS `engineVersion`
/// (`15.18` → 15, `9.6.24` → 9.6 is read as 9).
pub fn major_of_version(v: &str) -> Option<u32> {
    v.trim().split(['.', ' ']).next()?.parse().ok()
}

/// The major version an image reference names, when it names one: the tag's
/// leading number (`postgres:16-alpine`, `postgres:15.4`) or the repository's
/// (`registry.redhat.io/rhel9/postgresql-15`, `bitnami/postgresql:14`).
pub fn major_of_image(image: &str) -> Option<u32> {
    let without_digest = image.split('@').next()?;
    let last = without_digest.rsplit('/').next()?;
    let (repo, tag) = match last.split_once(':') {
        Some((r, t)) => (r, Some(t)),
        None => (last, None),
    };
    let leading = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(|c| c.is_ascii_digit()).collect();
        digits.parse().ok()
    };
    tag.and_then(leading).or_else(|| {
        repo.rsplit_once('-')
            .and_then(|(_, n)| leading(n))
            .filter(|_| repo.contains("postgres"))
    })
}

/// The target's major version against the source's: older is refused
/// (pg_restore into an older server fails on what it does not know), newer
/// is said (an upgrade: extensions and behaviour change).
pub fn major_versions(p: &Placement, source: &ServerInventory) -> Vec<Finding> {
    let Some(have) = major_of_version(&source.version) else {
        return Vec::new();
    };
    let (object, want, field) = match &p.spec().target {
        crate::spec::Target::Rds(r) => (
            format!("DBInstance/{}", r.instance_identifier),
            major_of_version(&r.engine_version),
            format!("engineVersion \"{}\"", r.engine_version),
        ),
        crate::spec::Target::Kubernetes(k) => {
            let Some(image) = &k.stateful_set.image else {
                return Vec::new();
            };
            (
                format!("StatefulSet/{}", k.stateful_set.name),
                major_of_image(image),
                format!("image {image}"),
            )
        }
    };
    let Some(want) = want else {
        return Vec::new();
    };
    let finding = |code: &str, severity: Severity, message: String, help: String| Finding {
        code: code.into(),
        severity,
        placement: p.name().to_string(),
        object: object.clone(),
        message,
        help,
        accepted: accepted(p, code, &object),
    };
    if want < have {
        vec![finding(
            TARGET_OLDER_MAJOR,
            Severity::Error,
            format!(
                "the target ({field}) is PostgreSQL {want}, older than the source's {have} ({}): a dump of a newer server does not restore reliably into an older one",
                source.version
            ),
            format!("choose PostgreSQL {have} or later for the target"),
        )]
    } else if want > have {
        vec![finding(
            TARGET_NEWER_MAJOR,
            Severity::Warning,
            format!(
                "the target ({field}) is PostgreSQL {want}, the source {have} ({}): the move is also a major upgrade",
                source.version
            ),
            format!(
                "read the release notes from {have} to {want} (removed features, changed defaults, extension versions the target offers) and test the application against {want}; or choose PostgreSQL {have}"
            ),
        )]
    } else {
        Vec::new()
    }
}

/// The room a restore of `data` bytes needs on the target: the data, a
/// fifth more (indexes are rebuilt, tables not yet vacuumed) and the WAL.
pub fn room_needed(data: u64) -> u64 {
    data.saturating_add(data / 5).saturating_add(WAL_ROOM)
}

/// The target's storage against the databases the plan copies: an error
/// when an RDS instance's `allocatedStorage` is smaller than the data (a
/// StatefulSet volume that small is refused by the planner already), a
/// warning when either leaves less than [`room_needed`].
pub fn capacity(p: &Placement, sizes: &[(String, u64)]) -> Vec<Finding> {
    let data: u64 = sizes.iter().map(|(_, b)| *b).sum();
    if data == 0 {
        return Vec::new();
    }
    let (object, field, have) = match &p.spec().target {
        crate::spec::Target::Rds(r) => (
            format!("DBInstance/{}", r.instance_identifier),
            format!("allocatedStorage {} GiB", r.allocated_storage),
            u64::from(r.allocated_storage) << 30,
        ),
        crate::spec::Target::Kubernetes(k) => {
            let Some(have) = p.model().target_storage_bytes else {
                return Vec::new();
            };
            (
                format!("StatefulSet/{}", k.stateful_set.name),
                format!("storage.size {}", k.stateful_set.storage.size),
                have,
            )
        }
    };
    let need = room_needed(data);
    let human = crate::quantity::human_bytes;
    let (severity, message) = if have < data {
        if matches!(p.spec().target, crate::spec::Target::Kubernetes(_)) {
            return Vec::new(); // pgplan::plan::too-small says so, located
        }
        (
            Severity::Error,
            format!(
                "the target ({field}) is smaller than the {} of data it must take",
                human(data)
            ),
        )
    } else if have < need {
        (
            Severity::Warning,
            format!(
                "the target ({field}) leaves {} beside the {} of data: the restore also writes WAL (up to max_wal_size, 1 GiB by default) and rebuilds every index, and may fill it",
                human(have - data),
                human(data)
            ),
        )
    } else {
        return Vec::new();
    };
    vec![Finding {
        code: TARGET_CAPACITY.into(),
        severity,
        placement: p.name().to_string(),
        accepted: accepted(p, TARGET_CAPACITY, &object),
        object,
        message,
        help: format!(
            "give the target at least {} (the data, a fifth more and 1 GiB of WAL), or accept the finding",
            human(need)
        ),
    }]
}

/// Roles the move copies to an RDS instance that are SUPERUSER,
/// REPLICATION or BYPASSRLS on the source: RDS lets no one grant these, so
/// pgplan creates them without (the master user `login` is the instance's
/// own; roles the target has already are left alone). One warning per role.
pub fn role_attributes_dropped(
    p: &Placement,
    source: &ServerInventory,
    target: Option<&ServerInventory>,
) -> Vec<Finding> {
    let crate::spec::Target::Rds(_) = &p.spec().target else {
        return Vec::new();
    };
    let login = p
        .spec()
        .credentials
        .target
        .as_ref()
        .map(|l| l.username.as_str());
    let on_target = |name: &str| target.is_some_and(|t| t.roles.iter().any(|r| r.name == name));
    source
        .roles
        .iter()
        .filter(|r| !r.name.starts_with("pg_") && Some(r.name.as_str()) != login)
        .filter(|r| !on_target(&r.name))
        .filter_map(|r| {
            let only: Vec<&str> = [
                (r.superuser, "SUPERUSER"),
                (r.replication, "REPLICATION"),
                (r.bypass_rls, "BYPASSRLS"),
            ]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| n)
            .collect();
            if only.is_empty() {
                return None;
            }
            let object = format!("Role/{}", r.name);
            Some(Finding {
                code: ROLE_ATTRIBUTES_DROPPED.into(),
                severity: Severity::Warning,
                placement: p.name().to_string(),
                accepted: accepted(p, ROLE_ATTRIBUTES_DROPPED, &object),
                message: format!(
                    "role {} is {} on the source; RDS lets no one grant that, so it is created on the instance without it, and what it does that needs it (reading every table, creating any extension, replication, bypassing row security) will fail there",
                    r.name,
                    only.join(", ")
                ),
                help: format!(
                    "after the move grant it what RDS offers instead (`GRANT rds_superuser TO {}`, `rds_replication`), or give its tasks to the master user; or accept the finding: `preflight: {{accept: [{{code: {}, object: {object}}}]}}`",
                    r.name,
                    short(ROLE_ATTRIBUTES_DROPPED)
                ),
                object,
            })
        })
        .collect()
}

/// Transactions on the databases the plan moves: a prepared one blocks
/// (it holds its locks until someone commits or rolls it back, pg_dump waits
/// for them, and the dump does not carry it); one open for a minute or more
/// is said, once per database with the oldest (it holds locks the dump may
/// wait for, and what it writes after the backup is lost).
pub fn transactions(p: &Placement, source: &ServerInventory, moved: &[String]) -> Vec<Finding> {
    let mut out = Vec::new();
    let minutes = |s: u64| {
        if s < 120 {
            format!("{s} s")
        } else {
            format!("{} min", s / 60)
        }
    };
    for db in moved {
        let here: Vec<&crate::observed::OpenTransaction> = source
            .transactions
            .iter()
            .filter(|t| &t.database == db)
            .collect();
        for t in here.iter().filter(|t| t.prepared.is_some()) {
            let gid = t.prepared.as_deref().unwrap_or_default();
            let object = format!("PreparedTransaction/{gid}");
            out.push(Finding {
                code: PREPARED_TRANSACTION.into(),
                severity: Severity::Error,
                placement: p.name().to_string(),
                accepted: accepted(p, PREPARED_TRANSACTION, &object),
                message: format!(
                    "prepared transaction `{gid}` on `{db}` (owner {}) has waited {} for its COMMIT PREPARED: it holds its locks until then, pg_dump waits for them, and the move does not carry it",
                    t.user,
                    minutes(t.age_seconds)
                ),
                help: format!(
                    "finish it first: `COMMIT PREPARED '{gid}'` or `ROLLBACK PREPARED '{gid}'` (the transaction manager that prepared it knows which), or accept the finding"
                ),
                object,
            });
        }
        let oldest = here
            .iter()
            .filter(|t| t.prepared.is_none() && t.age_seconds >= LONG_TRANSACTION_SECONDS)
            .max_by_key(|t| t.age_seconds);
        if let Some(t) = oldest {
            let object = format!("Database/{db}");
            let who = match (t.application.as_str(), t.address.as_str()) {
                ("", "") => t.user.clone(),
                (app, "") => format!("{} ({app})", t.user),
                ("", addr) => format!("{} from {addr}", t.user),
                (app, addr) => format!("{} ({app}) from {addr}", t.user),
            };
            out.push(Finding {
                code: LONG_TRANSACTION.into(),
                severity: Severity::Warning,
                placement: p.name().to_string(),
                accepted: accepted(p, LONG_TRANSACTION, &object),
                message: format!(
                    "a transaction of {who} on `{db}` has been open for {}: it may hold locks the dump waits for, and what it writes after the backup is lost",
                    minutes(t.age_seconds)
                ),
                help: format!(
                    "let it finish, or find it (`SELECT pid, usename, application_name, xact_start FROM pg_stat_activity WHERE datname = '{db}' ORDER BY xact_start`) and end it (`SELECT pg_terminate_backend(pid)`); or accept the finding"
                ),
                object,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{major_of_image, major_of_version};

    #[test]
    fn major_versions_are_read_from_versions_and_images() {
        assert_eq!(major_of_version("15.18"), Some(15));
        assert_eq!(major_of_version("16.4 (Debian)"), Some(16));
        assert_eq!(major_of_version("x"), None);
        assert_eq!(major_of_image("postgres:16-alpine"), Some(16));
        assert_eq!(
            major_of_image("docker.io/library/postgres:15.4@sha256:ab"),
            Some(15)
        );
        assert_eq!(
            major_of_image("registry.redhat.io/rhel9/postgresql-15"),
            Some(15)
        );
        assert_eq!(
            major_of_image("registry.redhat.io/rhel9/postgresql-15:latest"),
            Some(15)
        );
        assert_eq!(major_of_image("bitnami/postgresql:14"), Some(14));
        assert_eq!(major_of_image("postgres"), None);
        assert_eq!(major_of_image("postgres:latest"), None);
    }
}
