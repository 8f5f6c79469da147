//! The cluster network as pods see it: one loopback address per pod and the names that resolve
//! inside pods.
//!
//! Each simulated cluster holds a block of loopback addresses, `127.B.0.0/16`, claimed with an
//! advisory lock on a file in a machine-wide directory (so clusters in other test processes and
//! other runs on the machine never share one); the lock goes with the process. Node `i` gives
//! its pods addresses from `127.B.(64·i + k).j`. Linux routes all of 127/8 to the loopback
//! device, so a server in a pod listens on its pod's address at its container port (5432 in
//! every pod at once), as on a real pod network.
//!
//! Names resolve through a hosts file per pod (see the sandbox), written from the store:
//! Services (`svc`, `svc.ns`, `svc.ns.svc`, `svc.ns.svc.cluster.local`, the short forms only in
//! the Service's own namespace) → the addresses of the Ready pods their selector matches (a
//! ClusterIP Service resolves to its endpoints' addresses too: there is no kube-proxy), pods of
//! a headless Service's subdomain (`hostname.subdomain…`), the pod's own name, and names a test
//! adds for what lives outside the cluster (a fake RDS endpoint). The machine running pgplan
//! resolves none of them.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::controllers::pod_ready;
use super::kinds;
use super::obj;
use super::store::Store;

/// A claimed block of loopback addresses, held while this value lives.
#[derive(Debug)]
pub struct AddressBlock {
    second: u8,
    _lock: File,
}

fn lock_dir() -> PathBuf {
    PathBuf::from("/tmp/pgplan-sim-addresses")
}

impl AddressBlock {
    /// Claims the first free block (`127.2.0.0/16` … `127.254.0.0/16`).
    pub fn claim() -> io::Result<AddressBlock> {
        let dir = lock_dir();
        std::fs::create_dir_all(&dir)?;
        for second in 2..=254u8 {
            let f = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(dir.join(format!("127.{second}")))?;
            // SAFETY: flock on a file descriptor this function owns.
            let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if r == 0 {
                return Ok(AddressBlock { second, _lock: f });
            }
        }
        Err(io::Error::other(
            "every simulated-cluster address block (127.2–127.254) is in use",
        ))
    }

    /// The address of the `n`-th pod started on node `node`.
    pub fn pod_address(&self, node: usize, n: u32) -> Ipv4Addr {
        let third = (node as u32 % 4) * 64 + (n / 250) % 64;
        Ipv4Addr::new(127, self.second, third as u8, (n % 250 + 2) as u8)
    }

    /// An address of this block that no pod gets, for a server "outside the cluster" (a fake
    /// RDS endpoint) that pods reach by a name only they resolve.
    pub fn outside_address(&self) -> Ipv4Addr {
        Ipv4Addr::new(127, self.second, 255, 254)
    }

    /// Node `i`'s pod CIDR.
    pub fn node_cidr(&self, node: usize) -> String {
        format!("127.{}.{}.0/18", self.second, (node % 4) * 64)
    }
}

/// Names a test adds for all pods (what lives outside the cluster, such as a fake RDS
/// endpoint).
#[derive(Debug, Default)]
pub struct ExtraHosts(Mutex<BTreeMap<String, Ipv4Addr>>);

impl ExtraHosts {
    pub fn add(&self, name: &str, addr: Ipv4Addr) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_string(), addr);
    }

    fn all(&self) -> Vec<(String, Ipv4Addr)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }
}

/// One name → addresses record, with the namespace whose pods also see its short forms.
struct Record {
    namespace: String,
    /// From the most qualified to the shortest that only the namespace's own pods see.
    names: Vec<String>,
    /// How many of `names` (from the front) every pod sees.
    global: usize,
    addrs: Vec<String>,
}

fn qualified(base: &str, ns: &str) -> (Vec<String>, usize) {
    (
        vec![
            format!("{base}.{ns}.svc.cluster.local"),
            format!("{base}.{ns}.svc"),
            format!("{base}.{ns}"),
            base.to_string(),
        ],
        3,
    )
}

/// Every record the store implies now.
fn records(store: &Store) -> Vec<Record> {
    let pods = store.list(&kinds::POD, None);
    let ready: Vec<&Value> = pods
        .iter()
        .map(|p| &**p)
        .filter(|p| {
            !obj::is_deleting(p) && pod_ready(p) && obj::str_at(p, "/status/podIP").is_some()
        })
        .collect();
    let mut out = Vec::new();
    for svc in store.list(&kinds::SERVICE, None) {
        let ns = obj::namespace(&svc);
        // A Service's selector is a plain map (no expressions); without one it has no
        // endpoints the controller manages.
        let sel = obj::string_map(svc.pointer("/spec/selector"));
        if sel.is_empty() {
            continue;
        }
        let backing: Vec<&Value> = ready
            .iter()
            .copied()
            .filter(|p| {
                let labels = obj::labels(p);
                obj::namespace(p) == ns && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect();
        let (names, global) = qualified(obj::name(&svc), ns);
        out.push(Record {
            namespace: ns.to_string(),
            names,
            global,
            addrs: backing
                .iter()
                .filter_map(|p| obj::str_at(p, "/status/podIP").map(str::to_string))
                .collect(),
        });
        let headless = obj::str_at(&svc, "/spec/clusterIP") == Some("None");
        if headless {
            for p in &backing {
                if obj::str_at(p, "/spec/subdomain") != Some(obj::name(&svc)) {
                    continue;
                }
                let host = obj::str_at(p, "/spec/hostname").unwrap_or(obj::name(p));
                let (names, _) = qualified(&format!("{host}.{}", obj::name(&svc)), ns);
                out.push(Record {
                    namespace: ns.to_string(),
                    names,
                    global: 3,
                    addrs: obj::str_at(p, "/status/podIP")
                        .map(|a| vec![a.to_string()])
                        .unwrap_or_default(),
                });
            }
        }
    }
    out
}

/// The hosts file of a pod named `pod` (hostname `hostname`) at `addr` in `ns`.
fn hosts_for(
    records: &[Record],
    extra: &[(String, Ipv4Addr)],
    ns: &str,
    hostname: &str,
    addr: &str,
) -> String {
    let mut text = String::from(
        "# Kubernetes-managed hosts file (the simulated kubelet's).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    text.push_str(&format!("{addr}\t{hostname}\n"));
    for r in records {
        let names: Vec<&str> = r
            .names
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < r.global || r.namespace == ns)
            .map(|(_, n)| n.as_str())
            .collect();
        for a in &r.addrs {
            text.push_str(&format!("{a}\t{}\n", names.join(" ")));
        }
    }
    for (name, a) in extra {
        text.push_str(&format!("{a}\t{name}\n"));
    }
    text
}

/// The source-address shim (`netshim.c`), built once per machine and source text with the
/// machine's C compiler into the address-lock directory; `None` when there is no compiler
/// (containers' connections then come from 127.0.0.1).
pub fn netshim() -> Option<&'static Path> {
    static SHIM: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SHIM.get_or_init(|| {
        const SOURCE: &str = include_str!("netshim.c");
        let hash = SOURCE.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        let dir = lock_dir();
        std::fs::create_dir_all(&dir).ok()?;
        let so = dir.join(format!("netshim-{hash:016x}.so"));
        if so.exists() {
            return Some(so);
        }
        let src = dir.join(format!("netshim-{hash:016x}-{}.c", std::process::id()));
        let tmp = dir.join(format!("netshim-{hash:016x}-{}.so", std::process::id()));
        std::fs::write(&src, SOURCE).ok()?;
        let built = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-O2", "-o"])
            .arg(&tmp)
            .arg(&src)
            .arg("-ldl")
            .output()
            .ok()
            .filter(|o| o.status.success());
        let _ = std::fs::remove_file(&src);
        built?;
        std::fs::rename(&tmp, &so).ok()?;
        Some(so)
    })
    .as_deref()
}

/// A pod's view of the network, to write into its `etc` directory.
pub struct PodNetwork<'a> {
    pub dir: &'a Path,
    pub namespace: &'a str,
    pub hostname: &'a str,
    pub addr: &'a str,
}

/// Writes every pod's hosts file (those that changed), each by rename so a reader never sees a
/// half-written one.
pub fn write_hosts(store: &Store, extra: &ExtraHosts, pods: &[PodNetwork<'_>]) {
    if pods.is_empty() {
        return;
    }
    let records = records(store);
    let extra = extra.all();
    for p in pods {
        let text = hosts_for(&records, &extra, p.namespace, p.hostname, p.addr);
        let path = p.dir.join("hosts");
        if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
            continue;
        }
        let tmp = p.dir.join(".hosts.new");
        if std::fs::write(&tmp, &text).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
}

/// The `etc` directory of a new pod: an empty hosts file until the first write, its hostname
/// and a resolv.conf with the cluster's search path (and no name server: names resolve from
/// the hosts file only).
pub fn init_pod_etc(dir: &Path, namespace: &str, hostname: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("hostname"), format!("{hostname}\n"))?;
    std::fs::write(
        dir.join("resolv.conf"),
        format!(
            "search {namespace}.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        ),
    )?;
    if !dir.join("hosts").exists() {
        std::fs::write(dir.join("hosts"), "127.0.0.1\tlocalhost\n")?;
    }
    if let Some(shim) = netshim() {
        std::fs::copy(shim, dir.join("netshim.so"))?;
    }
    Ok(())
}
