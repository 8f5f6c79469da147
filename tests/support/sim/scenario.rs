//! The preloaded worlds of the seeds, with the constants tests assert on:
//!
//! - `healthcare` (seed 002): a postgres Deployment on a static hostPath PV (reclaim Delete) in
//!   `default`, a two-replica API Deployment, and the patients Alice, Bob and Ibrahim.
//! - `healthcare-in-pod`: the same, but the postgres Deployment keeps its data in an emptyDir
//!   (seed 002's data at risk: deleting the pod deletes the data).
//! - `backstage` (seed 004): a Backstage CR with its operator-made local database StatefulSet
//!   (Red Hat PostgreSQL image, dynamically provisioned PVC), the app Deployment, and six
//!   `backstage_plugin_*` databases — one with the stuck `knex_migrations_lock`.

use serde_json::{json, Value};

/// A scenario to preload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Healthcare,
    HealthcareInPod,
    Backstage,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Healthcare => "healthcare",
            Scenario::HealthcareInPod => "healthcare-in-pod",
            Scenario::Backstage => "backstage",
        }
    }

    pub fn from_name(s: &str) -> Option<Scenario> {
        match s {
            "healthcare" => Some(Scenario::Healthcare),
            "healthcare-in-pod" => Some(Scenario::HealthcareInPod),
            "backstage" => Some(Scenario::Backstage),
            _ => None,
        }
    }

    pub fn namespace(self) -> &'static str {
        match self {
            Scenario::Healthcare | Scenario::HealthcareInPod => healthcare::NAMESPACE,
            Scenario::Backstage => backstage::NAMESPACE,
        }
    }

    /// The objects to create, in order (the namespace first where it is not `default`).
    pub fn objects(self) -> Vec<Value> {
        match self {
            Scenario::Healthcare => healthcare::objects(),
            Scenario::HealthcareInPod => healthcare::objects_in_pod(),
            Scenario::Backstage => backstage::objects(),
        }
    }

    /// The pod (by label selector) whose PostgreSQL server the seed data goes into, its
    /// superuser and the SQL to run per database.
    pub fn seed(self) -> Seed {
        match self {
            Scenario::Healthcare | Scenario::HealthcareInPod => healthcare::seed(),
            Scenario::Backstage => backstage::seed(),
        }
    }
}

/// Data to load into a scenario's database pod.
pub struct Seed {
    pub pod_selector: &'static str,
    pub user: &'static str,
    /// (database, SQL) in order; databases other than `postgres` that do not exist are created.
    pub sql: Vec<(String, String)>,
}

/// Seed 002: the healthcare API and its postgres Deployment.
pub mod healthcare {
    use super::*;

    pub const NAMESPACE: &str = "default";
    pub const DEPLOYMENT: &str = "postgres";
    pub const SERVICE: &str = "postgres";
    pub const SECRET: &str = "postgres-credentials";
    pub const PV: &str = "postgres-pv";
    pub const PVC: &str = "postgres-pvc";
    pub const STORAGE_CLASS: &str = "local-path";
    pub const VOLUME: &str = "postgres-storage";
    pub const DATA_PATH: &str = "/var/lib/postgresql/data";
    pub const USER: &str = "healthcare_user";
    pub const PASSWORD: &str = "healthcare-test-password-7b1f";
    pub const DATABASE: &str = "healthcare";
    pub const IMAGE: &str = "postgres:15";
    pub const API_DEPLOYMENT: &str = "healthcare-api";
    pub const API_IMAGE: &str = "ghcr.io/example/healthcare-api:1.4";
    pub const API_REPLICAS: i32 = 2;
    /// The patients, in registration order.
    pub const PATIENTS: [&str; 3] = ["Alice", "Bob", "Ibrahim"];

    pub fn objects() -> Vec<Value> {
        let labels = json!({"app": "postgres"});
        let env: Vec<Value> = ["POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"]
            .iter()
            .map(|k| json!({"name": k, "valueFrom": {"secretKeyRef": {"name": SECRET, "key": k}}}))
            .collect();
        vec![
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS},
                "provisioner": "kubernetes.io/no-provisioner", "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate"}),
            json!({"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": PV, "labels": {"type": "local"}},
                "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": STORAGE_CLASS, "persistentVolumeReclaimPolicy": "Delete",
                    "hostPath": {"path": "/data/postgres"},
                    "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                                 "namespace": NAMESPACE, "name": PVC}}}),
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": PVC, "namespace": NAMESPACE},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": STORAGE_CLASS,
                    "volumeName": PV, "resources": {"requests": {"storage": "5Gi"}}}}),
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NAMESPACE}, "type": "Opaque",
                "stringData": {"POSTGRES_USER": USER, "POSTGRES_PASSWORD": PASSWORD,
                               "POSTGRES_DB": DATABASE}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": DEPLOYMENT, "namespace": NAMESPACE, "labels": labels},
                "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                    "template": {"metadata": {"labels": labels}, "spec": {
                        "containers": [{"name": "postgres", "image": IMAGE,
                            "ports": [{"containerPort": 5432}],
                            "env": env,
                            "volumeMounts": [{"name": VOLUME, "mountPath": DATA_PATH}]}],
                        "volumes": [{"name": VOLUME, "persistentVolumeClaim": {"claimName": PVC}}]}}}}),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": SERVICE, "namespace": NAMESPACE, "labels": labels},
                "spec": {"type": "ClusterIP", "selector": labels,
                         "ports": [{"port": 5432, "targetPort": 5432}]}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": API_DEPLOYMENT, "namespace": NAMESPACE,
                             "labels": {"app": API_DEPLOYMENT}},
                "spec": {"replicas": API_REPLICAS, "selector": {"matchLabels": {"app": API_DEPLOYMENT}},
                    "template": {"metadata": {"labels": {"app": API_DEPLOYMENT}}, "spec": {
                        "containers": [{"name": "api", "image": API_IMAGE,
                            "ports": [{"containerPort": 8000}],
                            "env": [{"name": "DATABASE_HOST", "value": SERVICE}]}]}}}}),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": API_DEPLOYMENT, "namespace": NAMESPACE},
                "spec": {"selector": {"app": API_DEPLOYMENT},
                         "ports": [{"port": 8000, "targetPort": 8000}]}}),
        ]
    }

    /// [`objects`] with the postgres Deployment's data in an emptyDir (the
    /// PV and claim stay, unused, as in the example's snapshot).
    pub fn objects_in_pod() -> Vec<Value> {
        let mut objects = objects();
        for o in objects.iter_mut() {
            if o["kind"] == "Deployment" && o["metadata"]["name"] == DEPLOYMENT {
                o["spec"]["template"]["spec"]["volumes"] =
                    json!([{"name": VOLUME, "emptyDir": {}}]);
            }
        }
        objects
    }

    /// The seed table, created by `healthcare_user` in `healthcare`.
    pub const SCHEMA: &str = "CREATE TABLE patients (id serial PRIMARY KEY, name text NOT NULL, \
        age int, condition text, registered_at timestamptz DEFAULT now());";

    pub fn seed() -> Seed {
        Seed {
            pod_selector: "app=postgres",
            user: USER,
            sql: vec![(
                DATABASE.into(),
                format!(
                    "{SCHEMA}\nINSERT INTO patients (name, age, condition, registered_at) VALUES \
                     ('Alice', 34, 'Hypertension', now() - interval '3 days'), \
                     ('Bob', 52, 'Type 2 diabetes', now() - interval '2 days'), \
                     ('Ibrahim', 41, 'Asthma', now() - interval '1 day');"
                ),
            )],
        }
    }
}

/// Seed 004: Backstage (Red Hat Developer Hub) with its operator-made local database.
pub mod backstage {
    use super::*;

    pub const NAMESPACE: &str = "backstage";
    pub const CR: &str = "developer-hub";
    pub const CR_API_VERSION: &str = "rhdh.redhat.com/v1alpha3";
    pub const SECRET: &str = "backstage-psql-secret-developer-hub";
    pub const STATEFUL_SET: &str = "backstage-psql-developer-hub";
    pub const SERVICE: &str = "backstage-psql-developer-hub";
    pub const POD: &str = "backstage-psql-developer-hub-0";
    pub const PVC: &str = "data-backstage-psql-developer-hub-0";
    pub const STORAGE_CLASS: &str = "standard";
    pub const APP_DEPLOYMENT: &str = "backstage-developer-hub";
    pub const APP_IMAGE: &str = "quay.io/rhdh/rhdh-hub-rhel9:1.3";
    pub const DB_IMAGE: &str = "registry.redhat.io/rhel9/postgresql-15";
    pub const USER: &str = "postgres";
    pub const PASSWORD: &str = "backstage-test-password-3c9e";
    pub const DATABASES: [&str; 6] = [
        "backstage_plugin_app",
        "backstage_plugin_auth",
        "backstage_plugin_catalog",
        "backstage_plugin_permission",
        "backstage_plugin_scaffolder",
        "backstage_plugin_search",
    ];
    /// The database whose `knex_migrations_lock` is left locked (the seed's troubleshooting).
    pub const LOCKED_DB: &str = "backstage_plugin_auth";
    /// The database with the differently named lock table.
    pub const TASKS_LOCK_DB: &str = "backstage_plugin_search";
    pub const TASKS_LOCK_TABLE: &str = "backstage_backend_tasks__knex_migrations_lock";
    /// Rows per knex_migrations table.
    pub const MIGRATIONS_PER_DB: i64 = 4;

    /// (database, table, rows) of every seeded table but knex_migrations_lock (one row each).
    pub const ROW_COUNTS: [(&str, &str, i64); 14] = [
        ("backstage_plugin_app", "knex_migrations", MIGRATIONS_PER_DB),
        ("backstage_plugin_app", "static_assets_cache", 12),
        (
            "backstage_plugin_auth",
            "knex_migrations",
            MIGRATIONS_PER_DB,
        ),
        ("backstage_plugin_auth", "signing_keys", 3),
        (
            "backstage_plugin_catalog",
            "knex_migrations",
            MIGRATIONS_PER_DB,
        ),
        ("backstage_plugin_catalog", "final_entities", 50),
        ("backstage_plugin_catalog", "locations", 2),
        (
            "backstage_plugin_permission",
            "knex_migrations",
            MIGRATIONS_PER_DB,
        ),
        ("backstage_plugin_permission", "policies", 5),
        (
            "backstage_plugin_scaffolder",
            "knex_migrations",
            MIGRATIONS_PER_DB,
        ),
        ("backstage_plugin_scaffolder", "tasks", 7),
        (
            "backstage_plugin_search",
            "knex_migrations",
            MIGRATIONS_PER_DB,
        ),
        ("backstage_plugin_search", "documents", 20),
        (
            "backstage_plugin_search",
            "backstage_backend_tasks__knex_migrations",
            2,
        ),
    ];

    fn owner() -> Value {
        // The uid is filled in at load time, once the CR exists.
        json!({"apiVersion": CR_API_VERSION, "kind": "Backstage", "name": CR,
               "controller": true, "blockOwnerDeletion": true})
    }

    pub fn objects() -> Vec<Value> {
        let db_labels = json!({"rhdh.redhat.com/app": STATEFUL_SET});
        let app_labels = json!({"rhdh.redhat.com/app": APP_DEPLOYMENT});
        vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
            json!({"apiVersion": CR_API_VERSION, "kind": "Backstage",
                "metadata": {"name": CR, "namespace": NAMESPACE},
                "spec": {"application": {"replicas": 1, "appConfig": {"mountPath": "/opt/app-root/src"}},
                         "database": {"enableLocalDb": true}}}),
            json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                "metadata": {"name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
                "volumeBindingMode": "WaitForFirstConsumer"}),
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": SECRET, "namespace": NAMESPACE, "ownerReferences": [owner()]},
                "type": "Opaque",
                "stringData": {"POSTGRES_USER": USER, "POSTGRES_PASSWORD": PASSWORD,
                    "POSTGRESQL_ADMIN_PASSWORD": PASSWORD}}),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": SERVICE, "namespace": NAMESPACE, "ownerReferences": [owner()]},
                "spec": {"clusterIP": "None", "selector": db_labels,
                         "ports": [{"name": "postgresql", "port": 5432, "targetPort": 5432}]}}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": STATEFUL_SET, "namespace": NAMESPACE, "ownerReferences": [owner()]},
                "spec": {"replicas": 1, "serviceName": SERVICE,
                    "selector": {"matchLabels": db_labels},
                    "template": {"metadata": {"labels": db_labels}, "spec": {
                        "containers": [{"name": "postgres", "image": DB_IMAGE,
                            "ports": [{"name": "tcp-postgresql", "containerPort": 5432}],
                            "env": [{"name": "POSTGRESQL_PORT_NUMBER", "value": "5432"},
                                    {"name": "POSTGRESQL_VOLUME_DIR", "value": "/var/lib/pgsql/data"},
                                    {"name": "PGDATA", "value": "/var/lib/pgsql/data/userdata"}],
                            "envFrom": [{"secretRef": {"name": SECRET}}],
                            "volumeMounts": [{"name": "data", "mountPath": "/var/lib/pgsql/data"}]}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}}}}]}}),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": APP_DEPLOYMENT, "namespace": NAMESPACE, "ownerReferences": [owner()]},
                "spec": {"replicas": 1, "selector": {"matchLabels": app_labels},
                    "template": {"metadata": {"labels": app_labels}, "spec": {
                        "containers": [{"name": "backstage-backend", "image": APP_IMAGE,
                            "ports": [{"name": "backend", "containerPort": 7007}],
                            "env": [{"name": "POSTGRES_HOST", "value": SERVICE},
                                    {"name": "POSTGRES_PORT", "value": "5432"}],
                            "envFrom": [{"secretRef": {"name": SECRET}}]}]}}}}),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": APP_DEPLOYMENT, "namespace": NAMESPACE, "ownerReferences": [owner()]},
                "spec": {"selector": app_labels,
                         "ports": [{"name": "http-backend", "port": 80, "targetPort": 7007}]}}),
        ]
    }

    fn knex(locked: bool) -> String {
        format!(
            "CREATE TABLE knex_migrations (id serial PRIMARY KEY, name text, batch int, migration_time timestamptz);\n\
             INSERT INTO knex_migrations (name, batch, migration_time) \
               SELECT format('2024%02s01_migration_%s.js', g, g), 1, now() - (g || ' days')::interval \
               FROM generate_series(1, {MIGRATIONS_PER_DB}) g;\n\
             CREATE TABLE knex_migrations_lock (index serial PRIMARY KEY, is_locked int);\n\
             INSERT INTO knex_migrations_lock (is_locked) VALUES ({});\n",
            i32::from(locked)
        )
    }

    pub fn seed() -> Seed {
        let count = |db: &str, table: &str| {
            ROW_COUNTS
                .iter()
                .find(|(d, t, _)| *d == db && *t == table)
                .map(|(_, _, n)| *n)
                .expect("the table is in ROW_COUNTS")
        };
        let mut sql = Vec::new();
        for db in DATABASES {
            let mut s = knex(db == LOCKED_DB);
            match db {
                "backstage_plugin_app" => s.push_str(&format!(
                    "CREATE TABLE static_assets_cache (path text PRIMARY KEY, content bytea, last_modified_at timestamptz);\n\
                     INSERT INTO static_assets_cache SELECT 'static/asset-' || g || '.js', convert_to(repeat('x', g * 10), 'UTF8'), now() FROM generate_series(1, {}) g;\n",
                    count(db, "static_assets_cache"))),
                "backstage_plugin_auth" => s.push_str(&format!(
                    "CREATE TABLE signing_keys (kid text PRIMARY KEY, key text NOT NULL, created_at timestamptz DEFAULT now());\n\
                     INSERT INTO signing_keys (kid, key) SELECT 'kid-' || g, md5(g::text) FROM generate_series(1, {}) g;\n",
                    count(db, "signing_keys"))),
                "backstage_plugin_catalog" => s.push_str(&format!(
                    "CREATE TABLE final_entities (entity_id text PRIMARY KEY, hash text, stitch_ticket text, final_entity text);\n\
                     INSERT INTO final_entities SELECT 'entity-' || g, md5(g::text), md5('t' || g), \
                       format('{{\"kind\":\"Component\",\"metadata\":{{\"name\":\"service-%s\"}}}}', g) FROM generate_series(1, {}) g;\n\
                     CREATE TABLE locations (id text PRIMARY KEY, type text, target text);\n\
                     INSERT INTO locations VALUES ('loc-1', 'url', 'https://github.com/example/catalog/blob/main/all.yaml'), \
                       ('loc-2', 'file', '/opt/app-root/src/catalog-info.yaml');\n",
                    count(db, "final_entities"))),
                "backstage_plugin_permission" => s.push_str(&format!(
                    "CREATE TABLE policies (id serial PRIMARY KEY, subject text, permission text, effect text);\n\
                     INSERT INTO policies (subject, permission, effect) SELECT 'group:default/team-' || g, 'catalog.entity.read', 'allow' FROM generate_series(1, {}) g;\n",
                    count(db, "policies"))),
                "backstage_plugin_scaffolder" => s.push_str(&format!(
                    "CREATE TABLE tasks (id text PRIMARY KEY, spec text, status text, created_at timestamptz DEFAULT now());\n\
                     INSERT INTO tasks (id, spec, status) SELECT 'task-' || g, '{{}}', 'completed' FROM generate_series(1, {}) g;\n",
                    count(db, "tasks"))),
                "backstage_plugin_search" => s.push_str(&format!(
                    "CREATE TABLE documents (id serial PRIMARY KEY, type text, title text, body text);\n\
                     INSERT INTO documents (type, title, body) SELECT 'software-catalog', 'Document ' || g, repeat('lorem ipsum ', g) FROM generate_series(1, {}) g;\n\
                     CREATE TABLE backstage_backend_tasks__knex_migrations (id serial PRIMARY KEY, name text, batch int, migration_time timestamptz);\n\
                     INSERT INTO backstage_backend_tasks__knex_migrations (name, batch, migration_time) SELECT 'tasks_' || g || '.js', 1, now() FROM generate_series(1, {}) g;\n\
                     CREATE TABLE {TASKS_LOCK_TABLE} (index serial PRIMARY KEY, is_locked int);\n\
                     INSERT INTO {TASKS_LOCK_TABLE} (is_locked) VALUES (1);\n",
                    count(db, "documents"),
                    count(db, "backstage_backend_tasks__knex_migrations"))),
                _ => {}
            }
            sql.push((db.to_string(), s));
        }
        Seed {
            pod_selector: "rhdh.redhat.com/app=backstage-psql-developer-hub",
            user: USER,
            sql,
        }
    }
}
