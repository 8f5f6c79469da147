//! Identities as types: a step's [`Address`], a server's [`Locator`], the
//! [`Journey`] a placement takes, an apply's [`RunId`] and [`LockId`] and the
//! lock's [`Holder`]. Each is written (Display, serde) exactly as the string
//! pgplan has always written, so plans, saved plans, journals and leases read
//! the same; what was read back out of those strings (the commit point, an
//! RDS instance id, a holder's pid) is a field here, set by whoever built the
//! value and recovered once, by `FromStr`, when a saved value is loaded.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Display + FromStr types are serialised as their string.
macro_rules! serde_as_string {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A string that is not one of the shapes a type accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not {what}")]
pub struct ParseError {
    pub text: String,
    pub what: &'static str,
}

fn bad(text: &str, what: &'static str) -> ParseError {
    ParseError {
        text: text.to_string(),
        what,
    }
}

/// Where a server (or an object) is: the join key between the inventory
/// (observe) and the plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Locator {
    /// `k8s/{namespace}/{kind}/{name}`, or `k8s/{kind}/{name}` when cluster-scoped
    /// (`namespace` empty).
    K8s {
        namespace: String,
        kind: String,
        name: String,
    },
    /// `rds/{region}/{instance}`.
    Rds { region: String, instance: String },
    /// `external/{host}:{port}`.
    External { host: String, port: u16 },
}

impl Locator {
    pub fn k8s(namespace: &str, kind: &str, name: &str) -> Self {
        Locator::K8s {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }
    pub fn rds(region: &str, instance: &str) -> Self {
        Locator::Rds {
            region: region.into(),
            instance: instance.into(),
        }
    }
    pub fn external(host: &str, port: u16) -> Self {
        Locator::External {
            host: host.into(),
            port,
        }
    }
    /// The RDS instance identifier, for an RDS locator.
    pub fn rds_instance(&self) -> Option<&str> {
        match self {
            Locator::Rds { instance, .. } => Some(instance),
            _ => None,
        }
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Locator::K8s {
                namespace,
                kind,
                name,
            } if namespace.is_empty() => write!(f, "k8s/{kind}/{name}"),
            Locator::K8s {
                namespace,
                kind,
                name,
            } => write!(f, "k8s/{namespace}/{kind}/{name}"),
            Locator::Rds { region, instance } => write!(f, "rds/{region}/{instance}"),
            Locator::External { host, port } => write!(f, "external/{host}:{port}"),
        }
    }
}

impl FromStr for Locator {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        const WHAT: &str = "a server locator (k8s/…, rds/…, external/…)";
        if let Some(rest) = s.strip_prefix("k8s/") {
            let parts: Vec<&str> = rest.split('/').collect();
            return match parts.as_slice() {
                [kind, name] => Ok(Locator::k8s("", kind, name)),
                [ns, kind, name] => Ok(Locator::k8s(ns, kind, name)),
                _ => Err(bad(s, WHAT)),
            };
        }
        if let Some(rest) = s.strip_prefix("rds/") {
            return match rest.split_once('/') {
                Some((region, instance)) if !instance.contains('/') => {
                    Ok(Locator::rds(region, instance))
                }
                _ => Err(bad(s, WHAT)),
            };
        }
        if let Some(rest) = s.strip_prefix("external/") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad(s, WHAT))?;
            let port = port.parse().map_err(|_| bad(s, WHAT))?;
            return Ok(Locator::external(host, port));
        }
        Err(bad(s, WHAT))
    }
}
serde_as_string!(Locator);

/// What a step does to the object its address names, when the object alone
/// does not say it (`{object}:{phase}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// A consumer is scaled to zero.
    Quiesce,
    /// A consumer is scaled back.
    Resume,
    /// A consumer is pointed at the new server: the commit point.
    Reconfigure,
    /// A volume's reclaim policy is set to Retain.
    Protect,
    /// A pod is restarted so its StatefulSet heals it.
    SelfHeal,
    /// An RDS instance is modified.
    Modify,
}

impl Phase {
    const ALL: [Phase; 6] = [
        Phase::Quiesce,
        Phase::Resume,
        Phase::Reconfigure,
        Phase::Protect,
        Phase::SelfHeal,
        Phase::Modify,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Quiesce => "quiesce",
            Phase::Resume => "resume",
            Phase::Reconfigure => "reconfigure",
            Phase::Protect => "protect",
            Phase::SelfHeal => "self-heal",
            Phase::Modify => "modify",
        }
    }
}

/// A step's address: unique in a plan, stable across plans of the same
/// change. Shapes: an object's locator (`k8s/ns/Kind/name`,
/// `rds/region/id`), a locator with a [`Phase`] (`k8s/…/name:reconfigure`),
/// a data step of a placement (`pg/{placement}/{database}/{step}`,
/// `pg/{placement}/{step}`), an RDS snapshot (`rds/{region}/{id}/snapshot/{name}`).
///
/// Equality, order and hash are those of the written form (the order of
/// plans and maps is unchanged); the phase is kept beside it.
#[derive(Debug, Clone)]
pub struct Address {
    text: String,
    phase: Option<Phase>,
}

impl Address {
    /// The step that creates, changes or deletes the object itself.
    pub fn of(locator: &Locator) -> Self {
        Address {
            text: locator.to_string(),
            phase: None,
        }
    }
    /// A step that does `phase` to the object.
    pub fn at(locator: &Locator, phase: Phase) -> Self {
        Address {
            text: format!("{locator}:{}", phase.as_str()),
            phase: Some(phase),
        }
    }
    /// A data step of one database of a placement.
    pub fn database(placement: &str, database: &str, step: &str) -> Self {
        Address {
            text: format!("pg/{placement}/{database}/{step}"),
            phase: None,
        }
    }
    /// A data step of a whole placement (`prepare`, `tune`, …).
    pub fn placement(placement: &str, step: &str) -> Self {
        Address {
            text: format!("pg/{placement}/{step}"),
            phase: None,
        }
    }
    /// A snapshot of an RDS instance.
    pub fn rds_snapshot(region: &str, instance: &str, snapshot: &str) -> Self {
        Address {
            text: format!("rds/{region}/{instance}/snapshot/{snapshot}"),
            phase: None,
        }
    }
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn phase(&self) -> Option<Phase> {
        self.phase
    }
}

impl Address {
    /// Read a written address back: the phase is recovered for the object
    /// shapes (`k8s/`, `rds/`), whose names cannot hold a `:`.
    fn read(s: &str) -> Address {
        let phase = if s.starts_with("k8s/") || s.starts_with("rds/") {
            s.rsplit_once(':')
                .and_then(|(_, p)| Phase::ALL.into_iter().find(|x| x.as_str() == p))
        } else {
            None
        };
        Address {
            text: s.to_string(),
            phase,
        }
    }
}

impl FromStr for Address {
    type Err = ParseError;
    /// Any non-empty string is an address.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        if s.is_empty() {
            return Err(bad(s, "a step address"));
        }
        Ok(Address::read(s))
    }
}
serde_as_string!(Address);

/// For tests and saved text: the same reading as `FromStr`.
impl From<&str> for Address {
    fn from(s: &str) -> Self {
        Address::read(s)
    }
}
impl From<String> for Address {
    fn from(s: String) -> Self {
        Address::read(&s)
    }
}
impl From<Address> for String {
    fn from(a: Address) -> Self {
        a.text
    }
}

impl From<&Locator> for Address {
    fn from(l: &Locator) -> Self {
        Address::of(l)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
impl std::ops::Deref for Address {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}
impl Borrow<str> for Address {
    fn borrow(&self) -> &str {
        &self.text
    }
}
impl AsRef<str> for Address {
    fn as_ref(&self) -> &str {
        &self.text
    }
}
impl PartialEq for Address {
    fn eq(&self, o: &Self) -> bool {
        self.text == o.text
    }
}
impl Eq for Address {}
impl std::hash::Hash for Address {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.text.hash(h)
    }
}
impl PartialOrd for Address {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Address {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.text.cmp(&o.text)
    }
}
impl PartialEq<str> for Address {
    fn eq(&self, o: &str) -> bool {
        self.text == o
    }
}
impl PartialEq<&str> for Address {
    fn eq(&self, o: &&str) -> bool {
        self.text == *o
    }
}
impl PartialEq<String> for Address {
    fn eq(&self, o: &String) -> bool {
        &self.text == o
    }
}
impl PartialEq<Address> for String {
    fn eq(&self, o: &Address) -> bool {
        *self == o.text
    }
}
impl PartialEq<Address> for &str {
    fn eq(&self, o: &Address) -> bool {
        *self == o.text
    }
}

/// What kind of change a placement's plan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Journey {
    DeploymentToStatefulset,
    StatefulsetToStatefulset,
    ToRds,
    Day2,
    /// Not planned: an apply of the placement is unfinished.
    Unfinished,
    /// No changes.
    None,
}

impl Journey {
    const ALL: [Journey; 6] = [
        Journey::DeploymentToStatefulset,
        Journey::StatefulsetToStatefulset,
        Journey::ToRds,
        Journey::Day2,
        Journey::Unfinished,
        Journey::None,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Journey::DeploymentToStatefulset => "deployment-to-statefulset",
            Journey::StatefulsetToStatefulset => "statefulset-to-statefulset",
            Journey::ToRds => "to-rds",
            Journey::Day2 => "day-2",
            Journey::Unfinished => "unfinished",
            Journey::None => "none",
        }
    }
    /// How people name it.
    pub fn label(self) -> &'static str {
        match self {
            Journey::DeploymentToStatefulset => "Deployment → StatefulSet",
            Journey::StatefulsetToStatefulset => "StatefulSet → StatefulSet",
            Journey::ToRds => "Kubernetes → RDS",
            Journey::Day2 => "day-2 changes",
            Journey::Unfinished => "not planned: an apply is unfinished",
            Journey::None => "no changes",
        }
    }
}

impl fmt::Display for Journey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl FromStr for Journey {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Journey::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| bad(s, "a journey"))
    }
}
serde_as_string!(Journey);

/// Who holds a lock: the host and process of an apply.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
}

/// A lock ID: `host:pid:nonce`, unique per apply process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LockId {
    pub holder: Holder,
    pub nonce: String,
}

impl LockId {
    pub fn new(host: &str, pid: u32, nonce: u32) -> Self {
        LockId {
            holder: Holder {
                host: host.into(),
                pid,
            },
            nonce: format!("{nonce:08x}"),
        }
    }
    /// The run this lock belongs to (one lock ID per apply, so the same
    /// text today; a separate type so nothing takes one for the other).
    pub fn run(&self) -> RunId {
        RunId(self.to_string())
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.holder.host, self.holder.pid, self.nonce)
    }
}
impl FromStr for LockId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        const WHAT: &str = "a lock ID (host:pid:nonce)";
        let mut parts = s.splitn(3, ':');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(host), Some(pid), Some(nonce)) if !host.is_empty() => Ok(LockId {
                holder: Holder {
                    host: host.into(),
                    pid: pid.parse().map_err(|_| bad(s, WHAT))?,
                },
                nonce: nonce.into(),
            }),
            _ => Err(bad(s, WHAT)),
        }
    }
}
serde_as_string!(LockId);

/// One apply run: what its journal `begin` record, events and backup
/// directories are named by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(String);

impl RunId {
    /// The run an apply holding the lock `id` is (the same text today).
    pub fn of_lock(id: &str) -> Self {
        RunId(id.to_string())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The run as a file or directory name (no `:`).
    pub fn file_name(&self) -> String {
        self.0.replace(':', "-")
    }
}
impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl FromStr for RunId {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(RunId(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_reads_back_as_written() {
        for s in [
            "k8s/team/Deployment/postgres",
            "k8s/PersistentVolume/pv-1",
            "rds/eu-west-1/db-1",
            "external/db.example.com:5432",
        ] {
            let l: Locator = s.parse().unwrap();
            assert_eq!(l.to_string(), s);
            assert_eq!(Address::of(&l).as_str(), s);
        }
        assert_eq!(
            "rds/eu-west-1/db-1"
                .parse::<Locator>()
                .unwrap()
                .rds_instance(),
            Some("db-1")
        );
        assert!("k8s/a/b/c/d".parse::<Locator>().is_err());
        assert!("pg/x".parse::<Locator>().is_err());
        let l = Locator::k8s("ns", "Deployment", "api");
        let a = Address::at(&l, Phase::Reconfigure);
        assert_eq!(a.as_str(), "k8s/ns/Deployment/api:reconfigure");
        let back: Address = a.as_str().parse().unwrap();
        assert_eq!(back.phase(), Some(Phase::Reconfigure));
        assert_eq!(back, a);
        // A database may be named like a phase: a data step has none.
        let d = Address::database("p", "x:reconfigure", "backup");
        assert_eq!(d.as_str().parse::<Address>().unwrap().phase(), None);
        let j = serde_json::to_string(&a).unwrap();
        assert_eq!(j, "\"k8s/ns/Deployment/api:reconfigure\"");
        let a2: Address = serde_json::from_str(&j).unwrap();
        assert_eq!(a2.phase(), Some(Phase::Reconfigure));
    }

    #[test]
    fn lock_ids_journeys_and_runs() {
        let id: LockId = "host-1:42:0000beef".parse().unwrap();
        assert_eq!(id.holder.host, "host-1");
        assert_eq!(id.holder.pid, 42);
        assert_eq!(id.to_string(), "host-1:42:0000beef");
        assert_eq!(LockId::new("h", 7, 0xbeef).to_string(), "h:7:0000beef");
        assert_eq!(id.run().file_name(), "host-1-42-0000beef");
        assert!("nohost".parse::<LockId>().is_err());
        assert!("h:notapid:x".parse::<LockId>().is_err());
        for j in Journey::ALL {
            assert_eq!(j.as_str().parse::<Journey>().unwrap(), j);
        }
        assert!("sideways".parse::<Journey>().is_err());
    }
}
