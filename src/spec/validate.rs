//! Checks the type system cannot express: names, sizes, identifiers, globs,
//! and contradictions between sections. Every finding points at the field.

use crate::names;
use crate::quantity;
use crate::spec::check::did_you_mean;
use crate::spec::env::references;
use crate::spec::error::{SourceFile, SpecError};
use crate::spec::types::*;
use crate::yaml::{path_string, Node, PathSeg};

/// The parts of a placement that were read. A document with structural
/// errors still has its well-formed parts checked: a part left out is not
/// checked, nor is anything compared with it, and a part in `peers_only`
/// is checked but not compared with (it holds a `${VAR}` that is unset).
#[derive(Debug, Default)]
pub struct Parts<'p> {
    pub name: Option<&'p str>,
    pub source: Option<&'p Source>,
    pub target: Option<&'p Target>,
    pub credentials: Option<&'p Credentials>,
    pub databases: Option<&'p [String]>,
    /// (position in the list, consumer): those that were read.
    pub consumers: Vec<(usize, &'p Consumer)>,
    pub verify: Option<&'p Verify>,
    pub backup: Option<&'p Backup>,
    pub cleanup: Option<&'p Cleanup>,
    pub environments: Vec<&'p str>,
    /// Sections (`target`, `databases`, `credentials`) not to compare
    /// other sections with.
    pub not_compared: Vec<&'static str>,
}

impl<'p> Parts<'p> {
    /// Every part of a document that read as a whole.
    pub fn of(doc: &'p PlacementDoc) -> Self {
        let s = &doc.spec;
        Parts {
            name: Some(&doc.metadata.name),
            source: Some(&s.source),
            target: Some(&s.target),
            credentials: Some(&s.credentials),
            databases: Some(&s.databases),
            consumers: s.consumers.iter().enumerate().collect(),
            verify: Some(&s.verify),
            backup: Some(&s.backup),
            cleanup: Some(&s.cleanup),
            environments: s.environments.keys().map(String::as_str).collect(),
            not_compared: Vec::new(),
        }
    }
    fn peer<T>(&self, section: &str, part: Option<T>) -> Option<T> {
        part.filter(|_| !self.not_compared.contains(&section))
    }
}

/// Collects findings for one placement document.
pub struct Validator<'a> {
    file: &'a SourceFile,
    node: &'a Node,
    pub errors: Vec<SpecError>,
}

fn p(parts: &[&str]) -> Vec<PathSeg> {
    parts
        .iter()
        .map(|s| match s.parse::<usize>() {
            Ok(i) => PathSeg::Index(i),
            Err(_) => PathSeg::Key((*s).to_string()),
        })
        .collect()
}

impl<'a> Validator<'a> {
    pub fn new(file: &'a SourceFile, node: &'a Node) -> Self {
        Validator {
            file,
            node,
            errors: Vec::new(),
        }
    }

    fn err(
        &mut self,
        path: &[PathSeg],
        code: &'static str,
        message: String,
        help: impl Into<String>,
    ) {
        let span = self.node.span_at(path);
        self.errors.push(
            SpecError::new(self.file, code, message, span)
                .help(help)
                .label(path_string(path)),
        );
    }

    fn check<F>(
        &mut self,
        path: &[PathSeg],
        code: &'static str,
        result: Result<(), String>,
        help: F,
    ) where
        F: FnOnce() -> String,
    {
        if let Err(why) = result {
            self.err(path, code, why, help());
        }
    }

    pub fn placement(&mut self, doc: &PlacementDoc) {
        self.parts(&Parts::of(doc));
    }

    /// Checks the parts given, and what can be compared between them.
    pub fn parts(&mut self, parts: &Parts<'_>) {
        if let Some(name) = parts.name {
            self.check(
                &p(&["metadata", "name"]),
                "pgplan::spec::name",
                names::dns_label(name),
                || "placement names are DNS labels: lower-case letters, digits and '-'".into(),
            );
        }
        let target = parts.peer("target", parts.target);
        let databases = parts.peer("databases", parts.databases);
        let credentials = parts.peer("credentials", parts.credentials);
        if let Some(source) = parts.source {
            self.source(source);
        }
        if let Some(t) = parts.target {
            self.target(t, credentials);
        }
        if let Some(c) = parts.credentials {
            self.credentials(c);
        }
        if let Some(d) = parts.databases {
            self.databases(d);
        }
        self.consumers(&parts.consumers, target, parts.source);
        if let Some(v) = parts.verify {
            self.verify(v, target, databases);
        }
        if let Some(b) = parts.backup {
            self.backup(b, target);
        }
        if let Some(c) = parts.cleanup {
            self.cleanup(c, target);
        }
        for env in &parts.environments {
            self.check(
                &p(&["spec", "environments", env]),
                "pgplan::spec::name",
                names::dns_label(env),
                || "environment names are DNS labels such as `dev`, `staging`, `prod`".into(),
            );
        }
    }

    fn source(&mut self, source: &Source) {
        match source {
            Source::Kubernetes(k) => {
                self.check(
                    &p(&["spec", "source", "kubernetes", "namespace"]),
                    "pgplan::spec::name",
                    names::dns_label(&k.namespace),
                    || "namespaces are DNS labels".into(),
                );
                let w = &k.workload;
                let wp = p(&["spec", "source", "kubernetes", "workload"]);
                match (&w.name, &w.selector) {
                    (Some(_), Some(_)) => self.err(
                        &wp,
                        "pgplan::spec::contradiction",
                        "the source workload has both `name` and `selector`".into(),
                        "give one: `name` picks the workload directly, `selector` finds it by labels",
                    ),
                    (None, None) => self.err(
                        &wp,
                        "pgplan::spec::missing-field",
                        "the source workload needs `name` or `selector`".into(),
                        "add `name: postgres` (or a `selector` of labels)",
                    ),
                    (Some(n), None) => {
                        let mut np = wp.clone();
                        np.push(PathSeg::Key("name".into()));
                        self.check(&np, "pgplan::spec::name", names::dns_subdomain(n), || {
                            "use the workload's name as `kubectl get` shows it".into()
                        });
                    }
                    (None, Some(sel)) if sel.is_empty() => self.err(
                        &wp,
                        "pgplan::spec::value",
                        "an empty selector would match every workload".into(),
                        "add at least one label, e.g. `app: postgres`",
                    ),
                    (None, Some(_)) => {}
                }
            }
            Source::External(e) => {
                self.external("source", "external", e);
            }
        }
    }

    fn external(&mut self, section: &str, key: &str, e: &ExternalServer) {
        if e.host.trim().is_empty() {
            self.err(
                &p(&["spec", section, key, "host"]),
                "pgplan::spec::value",
                "the host is empty".into(),
                "give the server's DNS name or address",
            );
        }
        if e.port == 0 {
            self.err(
                &p(&["spec", section, key, "port"]),
                "pgplan::spec::range",
                "port 0 is not a server port".into(),
                "PostgreSQL listens on 5432 by default",
            );
        }
        self.tls(&p(&["spec", section, key, "tls"]), &e.tls);
        if let Some(c) = &e.connect {
            self.connect(&p(&["spec", section, key, "connect"]), c);
        }
    }

    fn connect(&mut self, path: &[PathSeg], c: &Connect) {
        let at = |f: &str| {
            let mut v = path.to_vec();
            v.push(PathSeg::Key(f.into()));
            v
        };
        if c.host.trim().is_empty() {
            self.err(
                &at("host"),
                "pgplan::spec::value",
                "the host is empty".into(),
                "give the local address of the tunnel or port-forward, e.g. `127.0.0.1`",
            );
        }
        if c.port == 0 {
            self.err(
                &at("port"),
                "pgplan::spec::range",
                "port 0 is not a server port".into(),
                "give the local port of the tunnel or port-forward",
            );
        }
    }

    fn tls(&mut self, path: &[PathSeg], tls: &Tls) {
        if let Some(ca) = &tls.ca_file {
            if ca.trim().is_empty() {
                let mut cp = path.to_vec();
                cp.push(PathSeg::Key("caFile".into()));
                self.err(
                    &cp,
                    "pgplan::spec::value",
                    "`caFile` is empty".into(),
                    "give the path of the CA bundle (PEM)",
                );
            }
        }
    }

    fn target(&mut self, target: &Target, credentials: Option<&Credentials>) {
        match target {
            Target::Kubernetes(k) => {
                let base = ["spec", "target", "kubernetes"];
                if let Some(ns) = &k.namespace {
                    self.check(
                        &p(&[&base[..], &["namespace"]].concat()),
                        "pgplan::spec::name",
                        names::dns_label(ns),
                        || "namespaces are DNS labels".into(),
                    );
                }
                let sts = &k.stateful_set;
                let sp = |f: &[&str]| p(&[&base[..], &["statefulSet"], f].concat());
                self.check(
                    &sp(&["name"]),
                    "pgplan::spec::name",
                    names::dns_label(&sts.name),
                    || {
                        "StatefulSet names are DNS labels (pods are named `{name}-{ordinal}`)"
                            .into()
                    },
                );
                if let Some(svc) = &sts.service_name {
                    self.check(
                        &sp(&["serviceName"]),
                        "pgplan::spec::name",
                        names::dns_label(svc),
                        || "Service names are DNS labels".into(),
                    );
                }
                if sts.replicas == 0 {
                    self.err(
                        &sp(&["replicas"]),
                        "pgplan::spec::contradiction",
                        "a target with 0 replicas cannot receive the data".into(),
                        "use at least 1 replica",
                    );
                }
                if sts.replicas > 1 {
                    // Every replica would be its own writable server behind
                    // the one Service: the restore fills ordinal 0 only, and
                    // writes balanced onto the others are lost to the
                    // application. Refused until standbys exist.
                    self.err(
                        &sp(&["replicas"]),
                        "pgplan::spec::replicas-without-standbys",
                        format!(
                            "{} replicas would be {} independent, writable servers behind one Service: \
                             the restore fills `{}-0` only, and the writes clients send to the others \
                             are lost to the application",
                            sts.replicas, sts.replicas, sts.name
                        ),
                        "use `replicas: 1`: pgplan does not set up streaming replication (standbys) yet",
                    );
                }
                if let Some(img) = &sts.image {
                    if img.trim().is_empty() || img.contains(char::is_whitespace) {
                        self.err(
                            &sp(&["image"]),
                            "pgplan::spec::value",
                            format!("`{img}` is not an image reference"),
                            "write e.g. `postgres:15`",
                        );
                    }
                }
                let st = &sts.storage;
                match quantity::parse_bytes(&st.size) {
                    Ok(0) => self.err(
                        &sp(&["storage", "size"]),
                        "pgplan::spec::quantity",
                        "the volume size is zero".into(),
                        "give a size such as `5Gi`",
                    ),
                    Ok(_) => {}
                    Err(why) => self.err(
                        &sp(&["storage", "size"]),
                        "pgplan::spec::quantity",
                        why,
                        "write a Kubernetes quantity such as `5Gi` or `500Mi`",
                    ),
                }
                if let Some(class) = &st.storage_class_name {
                    self.check(
                        &sp(&["storage", "storageClassName"]),
                        "pgplan::spec::name",
                        names::dns_subdomain(class),
                        || "StorageClass names are DNS subdomains".into(),
                    );
                }
                self.check(&sp(&["storage", "volumeClaimTemplate"]), "pgplan::spec::name", names::dns_label(&st.volume_claim_template), || {
                    "the template name starts every PVC name: `{template}-{statefulset}-{ordinal}`".into()
                });
                for (i, mode) in st.access_modes.iter().enumerate() {
                    if ![
                        "ReadWriteOnce",
                        "ReadOnlyMany",
                        "ReadWriteMany",
                        "ReadWriteOncePod",
                    ]
                    .contains(&mode.as_str())
                    {
                        let idx = i.to_string();
                        self.err(
                            &sp(&["storage", "accessModes", &idx]),
                            "pgplan::spec::enum",
                            format!("`{mode}` is not an access mode"),
                            "use ReadWriteOnce, ReadOnlyMany, ReadWriteMany or ReadWriteOncePod",
                        );
                    }
                }
                if !st.mount_path.starts_with('/') {
                    self.err(
                        &sp(&["storage", "mountPath"]),
                        "pgplan::spec::value",
                        format!("`{}` is not an absolute path", st.mount_path),
                        "mount paths start with `/`",
                    );
                }
                // Only against a replica count that is itself valid: a wrong
                // count is one error, not also one per static volume.
                if sts.replicas == 1
                    && !st.static_volumes.is_empty()
                    && st.static_volumes.len() != sts.replicas as usize
                {
                    self.err(
                        &sp(&["storage", "staticVolumes"]),
                        "pgplan::spec::contradiction",
                        format!(
                            "{} static volumes for {} replicas",
                            st.static_volumes.len(),
                            sts.replicas
                        ),
                        "list one static volume per replica, in ordinal order",
                    );
                }
                let mut seen_paths: Vec<(&str, &str)> = Vec::new();
                for (i, v) in st.static_volumes.iter().enumerate() {
                    let idx = i.to_string();
                    if let Some(n) = &v.name {
                        self.check(
                            &sp(&["storage", "staticVolumes", &idx, "name"]),
                            "pgplan::spec::name",
                            names::dns_subdomain(n),
                            || "PV names are DNS subdomains".into(),
                        );
                    }
                    self.check(
                        &sp(&["storage", "staticVolumes", &idx, "node"]),
                        "pgplan::spec::name",
                        names::dns_subdomain(&v.node),
                        || "use the node's `kubernetes.io/hostname` label".into(),
                    );
                    if !v.path.starts_with('/') {
                        self.err(
                            &sp(&["storage", "staticVolumes", &idx, "path"]),
                            "pgplan::spec::value",
                            format!("`{}` is not an absolute path", v.path),
                            "local volume paths start with `/`",
                        );
                    }
                    if seen_paths.contains(&(v.node.as_str(), v.path.as_str())) {
                        self.err(
                            &sp(&["storage", "staticVolumes", &idx, "path"]),
                            "pgplan::spec::contradiction",
                            format!("two static volumes use {}:{}", v.node, v.path),
                            "each replica needs its own directory",
                        );
                    }
                    seen_paths.push((&v.node, &v.path));
                }
            }
            Target::Rds(r) => {
                let rp = |f: &str| p(&["spec", "target", "rds", f]);
                self.check(
                    &rp("region"),
                    "pgplan::spec::rds",
                    names::aws_region(&r.region),
                    || "write the region code, e.g. `us-east-1`".into(),
                );
                self.check(
                    &rp("instanceIdentifier"),
                    "pgplan::spec::rds",
                    names::rds_identifier(&r.instance_identifier),
                    || {
                        "RDS identifiers: 1-63 letters, digits or hyphens, starting with a letter"
                            .into()
                    },
                );
                let v = &r.engine_version;
                if !v
                    .split('.')
                    .all(|x| !x.is_empty() && x.chars().all(|c| c.is_ascii_digit()))
                    || v.split('.').count() > 2
                {
                    self.err(
                        &rp("engineVersion"),
                        "pgplan::spec::rds",
                        format!("`{v}` is not a PostgreSQL engine version"),
                        "write e.g. `15.4` or `16`",
                    );
                }
                let c = &r.instance_class;
                let parts: Vec<&str> = c.split('.').collect();
                if parts.len() != 3
                    || parts[0] != "db"
                    || parts[1].is_empty()
                    || parts[2].is_empty()
                {
                    self.err(
                        &rp("instanceClass"),
                        "pgplan::spec::rds",
                        format!("`{c}` is not a DB instance class"),
                        "write e.g. `db.t3.medium`",
                    );
                }
                if !(20..=65536).contains(&r.allocated_storage) {
                    self.err(
                        &rp("allocatedStorage"),
                        "pgplan::spec::range",
                        format!(
                            "{} GiB is outside RDS for PostgreSQL's 20 to 65536 GiB",
                            r.allocated_storage
                        ),
                        "allocate at least 20 GiB",
                    );
                }
                self.tls(&rp("tls"), &r.tls);
                if r.tls.mode == SslMode::Disable {
                    self.err(
                        &p(&["spec", "target", "rds", "tls", "mode"]),
                        "pgplan::spec::contradiction",
                        "TLS cannot be disabled towards RDS".into(),
                        "use `require` or, better, `verify-full` with `caFile`",
                    );
                }
                if credentials.is_some_and(|c| c.target.is_none()) {
                    self.err(&p(&["spec", "target", "rds"]), "pgplan::spec::missing-field", "an RDS target needs `credentials.target` (the master user)".into(), "add `credentials: {target: {username: postgres, password: ${RDS_MASTER_PASSWORD}}}`");
                }
                if let Some(c) = &r.connect {
                    self.connect(&p(&["spec", "target", "rds", "connect"]), c);
                }
            }
        }
    }

    fn credentials(&mut self, credentials: &Credentials) {
        for (role, secret) in &credentials.roles {
            let whole_ref = matches!(references(&secret.password), Ok(r) if r.len() == 1 && r[0].0 == (0..secret.password.len()));
            if !whole_ref {
                self.err(
                    &p(&["spec", "credentials", "roles", role, "password"]),
                    "pgplan::spec::literal-secret",
                    "passwords must be an environment reference, not a literal".into(),
                    "write `password: ${SOME_VAR}` and export SOME_VAR; literal passwords would end up in plans and pull requests",
                );
            }
        }
        for (side, login) in [
            ("source", &credentials.source),
            ("target", &credentials.target),
        ] {
            let Some(login) = login else { continue };
            let pw = p(&["spec", "credentials", side, "password"]);
            let whole_ref = matches!(references(&login.password), Ok(r) if r.len() == 1 && r[0].0 == (0..login.password.len()));
            if !whole_ref {
                self.err(
                    &pw,
                    "pgplan::spec::literal-secret",
                    "passwords must be an environment reference, not a literal".into(),
                    "write `password: ${SOME_VAR}` and export SOME_VAR; literal passwords would end up in plans and pull requests",
                );
            }
            if login.username.trim().is_empty() {
                self.err(
                    &p(&["spec", "credentials", side, "username"]),
                    "pgplan::spec::value",
                    "the user name is empty".into(),
                    "give the login role's name",
                );
            }
        }
    }

    fn databases(&mut self, databases: &[String]) {
        if databases.is_empty() {
            self.err(
                &p(&["spec", "databases"]),
                "pgplan::spec::value",
                "no databases are listed".into(),
                "list names or globs, e.g. `- healthcare` or `- backstage_plugin_*`",
            );
        }
        let (_, glob_errors) = super::DatabaseSelector::compile(databases);
        let mut seen = std::collections::HashSet::with_capacity(databases.len());
        for (i, d) in databases.iter().enumerate() {
            let path = p(&["spec", "databases", &i.to_string()]);
            let literal: String = d
                .chars()
                .filter(|c| !matches!(c, '*' | '?' | '[' | ']' | '!'))
                .collect();
            if let Some((_, e)) = glob_errors.iter().find(|(at, _)| *at == i) {
                self.err(
                    &path,
                    "pgplan::spec::glob",
                    format!("`{d}` is not a valid glob: {}", e.msg),
                    "use `*` and `?` wildcards, e.g. `backstage_plugin_*`",
                );
            } else if !literal.is_empty() {
                if let Err(why) = names::pg_name(&literal) {
                    self.err(
                        &path,
                        "pgplan::spec::name",
                        why,
                        "database names are PostgreSQL identifiers",
                    );
                }
            }
            if !seen.insert(d.as_str()) {
                self.err(
                    &path,
                    "pgplan::spec::duplicate",
                    format!("`{d}` is listed twice"),
                    "remove the duplicate",
                );
            }
        }
    }

    fn consumers(
        &mut self,
        consumers: &[(usize, &Consumer)],
        target: Option<&Target>,
        source: Option<&Source>,
    ) {
        // A consumer is one object (kind, namespace, name): listed twice, it
        // would be stopped and pointed at the target twice.
        // Without a source that read, a consumer's default namespace is unknown.
        let default_ns = source.map(|s| match s {
            Source::Kubernetes(k) => k.namespace.as_str(),
            Source::External(_) => "default",
        });
        if let Some(default_ns) = default_ns {
            let mut seen: Vec<(&str, &str, &str, usize)> = Vec::with_capacity(consumers.len());
            for &(i, c) in consumers {
                let ns = c.namespace.as_deref().unwrap_or(default_ns);
                match seen
                    .iter()
                    .find(|(k, n, m, _)| (*k, *n, *m) == (c.kind.as_str(), ns, c.name.as_str()))
                {
                    Some(&(_, _, _, first)) => {
                        let at = p(&["spec", "consumers", &i.to_string(), "name"]);
                        let first_at = self.node.span_at(&p(&[
                            "spec",
                            "consumers",
                            &first.to_string(),
                            "name",
                        ]));
                        let span = self.node.span_at(&at);
                        self.errors.push(
                            SpecError::new(
                                self.file,
                                "pgplan::spec::duplicate",
                                format!("the consumer {} {ns}/{} is listed twice", c.kind, c.name),
                                span,
                            )
                            .label(path_string(&at))
                            .related(first_at, "first listed here")
                            .help("list each consumer once; merge the two entries' settings"),
                        );
                    }
                    None => seen.push((c.kind.as_str(), ns, c.name.as_str(), i)),
                }
            }
        }
        for &(i, c) in consumers {
            let idx = i.to_string();
            let cp = |f: &str| p(&["spec", "consumers", &idx, f]);
            let builtin = matches!(c.kind.as_str(), "Deployment" | "StatefulSet");
            // `Deploymnet` is a typo, not a custom resource; a kind of
            // another API group (`DeploymentConfig`) is not.
            let typo = if !builtin && matches!(c.api_version.as_deref(), None | Some("apps/v1")) {
                did_you_mean(&c.kind, ["Deployment", "StatefulSet"].into_iter())
            } else {
                None
            };
            if let Some(kind) = typo {
                self.err(
                    &cp("kind"),
                    "pgplan::spec::value",
                    format!("`{}` is not a kind pgplan knows", c.kind),
                    format!("did you mean `{kind}`? (a custom resource's kind also needs its `apiVersion`)"),
                );
            }
            // What is said of a custom resource is not said of a typo.
            let custom = !builtin && typo.is_none();
            let camel = c
                .kind
                .chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_uppercase());
            if typo.is_none() && !camel {
                self.err(
                    &cp("kind"),
                    "pgplan::spec::value",
                    format!("`{}` is not a Kubernetes kind", c.kind),
                    "kinds are CamelCase, e.g. `Deployment` or `Backstage`",
                );
            }
            if custom && c.api_version.is_none() {
                self.err(
                    &cp("kind"),
                    "pgplan::spec::missing-field",
                    format!("the custom resource kind `{}` needs `apiVersion`", c.kind),
                    "add e.g. `apiVersion: rhdh.redhat.com/v1alpha3`",
                );
            }
            if let Some(av) = &c.api_version {
                let group_version = av
                    .split_once('/')
                    .is_some_and(|(g, v)| !g.is_empty() && !v.is_empty());
                if !group_version && av != "v1" {
                    self.err(
                        &cp("apiVersion"),
                        "pgplan::spec::value",
                        format!("`{av}` is not a group/version"),
                        "write e.g. `apps/v1` or `rhdh.redhat.com/v1alpha3`",
                    );
                }
            }
            self.check(
                &cp("name"),
                "pgplan::spec::name",
                names::dns_subdomain(&c.name),
                || "use the object's name as `kubectl get` shows it".into(),
            );
            if let Some(ns) = &c.namespace {
                self.check(
                    &cp("namespace"),
                    "pgplan::spec::name",
                    names::dns_label(ns),
                    || "namespaces are DNS labels".into(),
                );
            }
            if custom && c.quiesce && c.replicas_field().is_none() {
                // A custom resource has no generic scale; say so rather than guess.
                self.err(
                    &cp("quiesce"),
                    "pgplan::spec::contradiction",
                    format!("pgplan does not know how to scale a `{}` to zero", c.kind),
                    "set `replicasField` (e.g. `spec.replicas`), or `quiesce: false`",
                );
            }
            if builtin && c.replicas_field.is_some() {
                self.err(
                    &cp("replicasField"),
                    "pgplan::spec::contradiction",
                    format!("a {} is scaled through its scale subresource", c.kind),
                    "remove `replicasField`",
                );
            }
            let Some(r) = &c.reconfigure else { continue };
            let rp = |f: &str| p(&["spec", "consumers", &idx, "reconfigure", f]);
            if let Some(name) = &r.connection_secret {
                self.check(
                    &rp("connectionSecret"),
                    "pgplan::spec::name",
                    names::dns_subdomain(name),
                    || "Secret names are DNS subdomains".into(),
                );
            }
            if let Some(ca) = &r.ca_secret {
                self.check(
                    &rp("caSecret"),
                    "pgplan::spec::name",
                    names::dns_subdomain(&ca.name),
                    || "Secret names are DNS subdomains".into(),
                );
                let has_ca = match target {
                    Some(Target::Rds(t)) => Some(t.tls.ca_file.is_some()),
                    Some(Target::Kubernetes(_)) => Some(false),
                    None => None,
                };
                if has_ca == Some(false) {
                    self.err(
                        &rp("caSecret"),
                        "pgplan::spec::contradiction",
                        "a CA Secret needs a CA certificate, and the target has no `tls.caFile`"
                            .into(),
                        "set `target.rds.tls.caFile`, or remove `caSecret`",
                    );
                }
            }
            if builtin && r.merge_patch.is_some() {
                self.err(&rp("mergePatch"), "pgplan::spec::contradiction", format!("`mergePatch` is for custom resources; `{}` consumers take `env` and `connectionSecret`", c.kind), "move the settings to `env`");
            }
            if custom && !r.env.is_empty() {
                self.err(
                    &rp("env"),
                    "pgplan::spec::contradiction",
                    format!(
                        "`env` is for Deployments and StatefulSets; a `{}` takes `mergePatch`",
                        c.kind
                    ),
                    "express the change as a JSON merge patch",
                );
            }
            if let Some(mp) = &r.merge_patch {
                if !mp.is_object() {
                    self.err(&rp("mergePatch"), "pgplan::spec::type", "a JSON merge patch must be a mapping".into(), "write the fields to change, e.g. `spec: {database: {enableLocalDb: false}}`");
                }
            }
        }
    }

    fn verify(&mut self, v: &Verify, target: Option<&Target>, databases: Option<&[String]>) {
        if v.self_heal && matches!(target, Some(Target::Rds(_))) {
            self.err(
                &p(&["spec", "verify", "selfHeal"]),
                "pgplan::spec::contradiction",
                "the self-heal check deletes a pod; an RDS target has none".into(),
                "remove `selfHeal` or set it to false",
            );
        }
        let selector = databases.map(|list| super::DatabaseSelector::compile(list).0);
        for (i, probe) in v.sql.iter().enumerate() {
            let idx = i.to_string();
            let matches = selector.as_ref().map(|s| s.selects(&probe.database));
            if matches == Some(false) {
                self.err(
                    &p(&["spec", "verify", "sql", &idx, "database"]),
                    "pgplan::spec::contradiction",
                    format!(
                        "probe `{}` queries `{}`, which is not among the databases moved",
                        probe.name, probe.database
                    ),
                    "probe one of the databases listed under `databases`",
                );
            }
            if probe.query.trim().is_empty() {
                self.err(
                    &p(&["spec", "verify", "sql", &idx, "query"]),
                    "pgplan::spec::value",
                    "the probe's query is empty".into(),
                    "write a query whose first column is compared with `expect`",
                );
            }
        }
        for (i, h) in v.http.iter().enumerate() {
            let idx = i.to_string();
            // As the schema's pattern: http(s)://, a host, an optional path, no blanks.
            let url_ok = ["http://", "https://"].iter().any(|scheme| {
                h.url.strip_prefix(scheme).is_some_and(|rest| {
                    !rest.starts_with('/')
                        && !rest.is_empty()
                        && !rest.contains(char::is_whitespace)
                })
            });
            if !url_ok {
                self.err(
                    &p(&["spec", "verify", "http", &idx, "url"]),
                    "pgplan::spec::value",
                    format!("`{}` is not an http(s) URL", h.url),
                    "write e.g. `http://healthcare-api.default.svc:8000/patients`",
                );
            }
            if !(100..=599).contains(&h.expect_status) {
                self.err(
                    &p(&["spec", "verify", "http", &idx, "expectStatus"]),
                    "pgplan::spec::range",
                    format!("{} is not an HTTP status", h.expect_status),
                    "use e.g. 200",
                );
            }
        }
    }

    fn backup(&mut self, b: &Backup, target: Option<&Target>) {
        if b.directory.trim().is_empty() {
            self.err(
                &p(&["spec", "backup", "directory"]),
                "pgplan::spec::value",
                "the backup directory is empty".into(),
                "give a local directory, e.g. `.pgplan/backups`",
            );
        }
        if !(1..=64).contains(&b.jobs) {
            self.err(
                &p(&["spec", "backup", "jobs"]),
                "pgplan::spec::range",
                format!("{} parallel jobs is outside 1 to 64", b.jobs),
                "use the number of cores the servers can spare, e.g. 2",
            );
        }
        if let Some(cron) = &b.schedule {
            let fields = cron.split_whitespace().count();
            if fields != 5 {
                self.err(
                    &p(&["spec", "backup", "schedule"]),
                    "pgplan::spec::value",
                    format!("`{cron}` has {fields} fields; a cron schedule has 5"),
                    "write e.g. `0 2 * * *` (daily at 02:00)",
                );
            }
            if matches!(target, Some(Target::Rds(_))) {
                self.err(&p(&["spec", "backup", "schedule"]), "pgplan::spec::contradiction", "scheduled backups are a CronJob next to a StatefulSet target; RDS keeps its own automated backups".into(), "remove `schedule` for RDS targets");
            }
        }
        if quantity::parse_seconds(&b.stall_timeout).is_none() {
            self.err(
                &p(&["spec", "backup", "stallTimeout"]),
                "pgplan::spec::value",
                format!("`{}` is not a duration", b.stall_timeout),
                "write whole seconds with a unit, e.g. `90s`, `5m` or `1h`",
            );
        }
        if let Err(why) = quantity::parse_bytes(&b.storage_size) {
            self.err(
                &p(&["spec", "backup", "storageSize"]),
                "pgplan::spec::quantity",
                why,
                "write a Kubernetes quantity such as `20Gi`",
            );
        }
        if let Some(sn) = &b.snapshots {
            self.check(
                &p(&["spec", "backup", "snapshots", "className"]),
                "pgplan::spec::name",
                names::dns_subdomain(&sn.class_name),
                || "VolumeSnapshotClass names are DNS subdomains".into(),
            );
            if matches!(target, Some(Target::Rds(_))) {
                self.err(
                    &p(&["spec", "backup", "snapshots"]),
                    "pgplan::spec::contradiction",
                    "volume snapshots need a StatefulSet target".into(),
                    "RDS targets are snapshotted with `target.rds.snapshotBeforeChanges`",
                );
            }
        }
    }

    fn cleanup(&mut self, c: &Cleanup, target: Option<&Target>) {
        let Some(target) = target else { return };
        let is_rds = matches!(target, Target::Rds(_));
        if c.local_database && !is_rds {
            self.err(&p(&["spec", "cleanup", "localDatabase"]), "pgplan::spec::contradiction", "`localDatabase` removes the in-cluster database after a move to RDS; this target is in the cluster".into(), "use `cleanup.oldVolume` to remove the old volume of a StatefulSet move");
        }
        if c.rds_instance_on_rollback && !is_rds {
            self.err(
                &p(&["spec", "cleanup", "rdsInstanceOnRollback"]),
                "pgplan::spec::contradiction",
                "there is no RDS instance in this placement".into(),
                "remove the setting",
            );
        }
    }
}
