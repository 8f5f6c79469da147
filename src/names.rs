//! Naming rules of the systems pgplan writes to: Kubernetes object names,
//! RDS identifiers and PostgreSQL identifiers. Each check returns why a name
//! is refused, in words a user can act on.

/// A DNS-1123 label: Namespaces, Services, StatefulSets, placement names.
pub fn dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "`{name}` is {} characters; at most 63 are allowed",
            name.len()
        ));
    }
    label_chars(name)
}

/// A DNS-1123 subdomain: most other object names (PVs, Secrets, Deployments).
pub fn dns_subdomain(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a name cannot be empty".into());
    }
    if name.len() > 253 {
        return Err(format!(
            "`{name}` is {} characters; at most 253 are allowed",
            name.len()
        ));
    }
    for part in name.split('.') {
        if part.is_empty() {
            return Err(format!("`{name}` has an empty part between dots"));
        }
        label_chars(part).map_err(|_| subdomain_rule(name))?;
    }
    Ok(())
}

fn subdomain_rule(name: &str) -> String {
    format!(
        "`{name}` is not a valid Kubernetes name: use lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
    )
}

fn label_chars(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !name.chars().all(ok_char)
        || !name.chars().next().is_some_and(alnum)
        || !name.chars().last().is_some_and(alnum)
    {
        return Err(format!(
            "`{name}` is not a valid Kubernetes name: use lower-case letters, digits and '-', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// An RDS DB instance identifier: 1–63 letters, digits or hyphens, starting
/// with a letter, no trailing hyphen and no two hyphens in a row.
pub fn rds_identifier(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 63 {
        return Err(format!("`{id}` must be 1 to 63 characters long"));
    }
    if !id.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err(format!("`{id}` must start with a letter"));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "`{id}` may contain only letters, digits and hyphens"
        ));
    }
    if id.ends_with('-') || id.contains("--") {
        return Err(format!(
            "`{id}` cannot end with a hyphen or contain two hyphens in a row"
        ));
    }
    Ok(())
}

/// An AWS region name such as `us-east-1` or `us-gov-west-1`.
pub fn aws_region(region: &str) -> Result<(), String> {
    let parts: Vec<&str> = region.split('-').collect();
    let ok = parts.len() >= 3
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts[1..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{region}` is not an AWS region name such as `us-east-1`"
        ))
    }
}

/// A PostgreSQL identifier pgplan can pass to the tools without quoting
/// surprises (database, role and table names it creates or matches).
pub fn pg_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!("`{name}` must be 1 to 63 bytes long"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '$'))
    {
        return Err(format!(
            "`{name}` may contain only letters, digits, '_', '-' and '$'"
        ));
    }
    Ok(())
}

/// The claim a StatefulSet's controller makes for pod `ordinal` from the
/// volumeClaimTemplate `template`: the one naming rule the planner, the
/// adapter and apply share.
pub fn claim_name(template: &str, statefulset: &str, ordinal: impl std::fmt::Display) -> String {
    format!("{template}-{statefulset}-{ordinal}")
}

/// The backup CronJob of a StatefulSet target, and its claim.
pub fn backup_object_name(statefulset: &str) -> String {
    format!("{statefulset}-backup")
}

/// A database name as PostgreSQL itself allows it: 1 to 63 bytes
/// (NAMEDATALEN − 1) and no NUL. Names read from a server are held to this
/// before they are written into anything that runs, such as the backup
/// CronJob's script (which quotes them, whatever else they hold).
pub fn pg_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 63 {
        return Err(format!(
            "the database name `{}` must be 1 to 63 bytes long",
            name.escape_debug()
        ));
    }
    if name.contains('\0') {
        return Err(format!(
            "the database name `{}` contains a NUL byte",
            name.escape_debug()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names() {
        assert!(dns_label("postgres-0").is_ok());
        assert!(dns_label("Postgres").is_err());
        assert!(dns_label("-x").is_err());
        assert!(dns_label(&"a".repeat(64)).is_err());
        assert!(dns_subdomain("postgres.pv-0").is_ok());
        assert!(dns_subdomain("a..b").is_err());
    }

    #[test]
    fn claim_names_follow_the_statefulset_controller() {
        assert_eq!(
            claim_name("postgres-storage", "postgres", 0),
            "postgres-storage-postgres-0"
        );
    }

    #[test]
    fn postgres_database_names() {
        assert!(pg_database_name("a b;$(x)").is_ok());
        assert!(pg_database_name("").is_err());
        assert!(pg_database_name(&"d".repeat(64)).is_err());
        assert!(pg_database_name("a\0b").is_err());
    }

    #[test]
    fn rds_names() {
        assert!(rds_identifier("backstage-prod").is_ok());
        assert!(rds_identifier("1db").is_err());
        assert!(rds_identifier("db--x").is_err());
        assert!(rds_identifier("db-").is_err());
        assert!(rds_identifier("db_x").is_err());
        assert!(aws_region("us-east-1").is_ok());
        assert!(aws_region("us-gov-west-1").is_ok());
        assert!(aws_region("useast1").is_err());
    }
}
