//! Objects another tool keeps in sync with a repository (Helm, Argo CD,
//! Flux): recognising them by the labels and annotations those tools put on
//! what they own, warning on every step that deletes, replaces or changes
//! one (the tool's next sync would undo it: a deleted Deployment comes back
//! beside the StatefulSet), and the keys pgplan must not copy onto the
//! objects it writes in their place (copied, they would make the tool adopt
//! the new object, or prune it).

use serde_json::{Map, Value};

use super::Ctx;
use crate::observed::at;
use crate::plan::{Action, ObjectRef, Step, Warning, WarningCode};
use crate::spec::GitOpsTool;

/// Who keeps an object in sync, and what gave it away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    pub tool: GitOpsTool,
    /// The Helm release, Argo CD application or Flux object, when known.
    pub owner: Option<String>,
    /// The label or annotation that says so, as `label key` / `annotation key`.
    pub evidence: String,
}

const HELM_RELEASE: &str = "meta.helm.sh/release-name";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const INSTANCE: &str = "app.kubernetes.io/instance";
const ARGO_PREFIX: &str = "argocd.argoproj.io/";
const ARGO_TRACKING_ID: &str = "argocd.argoproj.io/tracking-id";
const ARGO_INSTANCE: &str = "argocd.argoproj.io/instance";
const FLUX_KUSTOMIZATION: &str = "kustomize.toolkit.fluxcd.io/name";
const FLUX_HELM_RELEASE: &str = "helm.toolkit.fluxcd.io/name";
const FLUX_PREFIXES: [&str; 2] = ["kustomize.toolkit.fluxcd.io/", "helm.toolkit.fluxcd.io/"];

/// Annotations set by the API server, kubectl or a GitOps tool, never
/// copied from a source object onto the object that replaces it.
const DROPPED_ANNOTATIONS: [&str; 5] = [
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
    HELM_RELEASE,
    "meta.helm.sh/release-namespace",
    "helm.sh/resource-policy",
];

/// Labels a tool sets to say it owns the object (pgplan writes its own
/// `app.kubernetes.io/managed-by`).
const DROPPED_LABELS: [&str; 2] = [MANAGED_BY, "helm.sh/chart"];

/// Prefixes of keys that are some tool's bookkeeping: Argo CD's, Flux's
/// and pgplan's own (pgplan sets its labels afresh on what it writes).
fn bookkeeping(key: &str) -> bool {
    key.starts_with(ARGO_PREFIX)
        || FLUX_PREFIXES.iter().any(|p| key.starts_with(p))
        || key.starts_with("pgplan.dev/")
}

fn strings<'v>(manifest: &'v Value, field: &str) -> Option<&'v Map<String, Value>> {
    at(manifest, &["metadata", field]).and_then(Value::as_object)
}

/// Who keeps `manifest` in sync, if anyone. Argo CD and Flux are named
/// before Helm: an object they render from a chart carries Helm's labels
/// too, but it is their next sync that would undo a change.
pub fn management(manifest: &Value) -> Option<Management> {
    let labels = strings(manifest, "labels");
    let annotations = strings(manifest, "annotations");
    let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
    let annotation = |k: &str| annotations.and_then(|a| a.get(k)).and_then(Value::as_str);

    if let Some(id) = annotation(ARGO_TRACKING_ID) {
        return Some(Management {
            tool: GitOpsTool::Argocd,
            // `APP:GROUP/KIND:NAMESPACE/NAME`
            owner: id.split(':').next().map(str::to_string),
            evidence: format!("annotation `{ARGO_TRACKING_ID}`"),
        });
    }
    if let Some(app) = label(ARGO_INSTANCE) {
        return Some(Management {
            tool: GitOpsTool::Argocd,
            owner: Some(app.to_string()),
            evidence: format!("label `{ARGO_INSTANCE}`"),
        });
    }
    let argo_key = |m: Option<&Map<String, Value>>| {
        m.and_then(|m| m.keys().find(|k| k.starts_with(ARGO_PREFIX)).cloned())
    };
    if let Some(key) = argo_key(annotations).or_else(|| argo_key(labels)) {
        return Some(Management {
            tool: GitOpsTool::Argocd,
            owner: label(INSTANCE).map(str::to_string),
            evidence: format!("`{key}`"),
        });
    }
    for key in [FLUX_KUSTOMIZATION, FLUX_HELM_RELEASE] {
        if let Some(name) = label(key) {
            return Some(Management {
                tool: GitOpsTool::Flux,
                owner: Some(name.to_string()),
                evidence: format!("label `{key}`"),
            });
        }
    }
    if let Some(release) = annotation(HELM_RELEASE) {
        return Some(Management {
            tool: GitOpsTool::Helm,
            owner: Some(release.to_string()),
            evidence: format!("annotation `{HELM_RELEASE}`"),
        });
    }
    if label(MANAGED_BY).is_some_and(|v| v.eq_ignore_ascii_case("helm")) {
        return Some(Management {
            tool: GitOpsTool::Helm,
            owner: label(INSTANCE).map(str::to_string),
            evidence: format!("label `{MANAGED_BY}: Helm`"),
        });
    }
    None
}

/// The labels and annotations of a source object that the object pgplan
/// writes in its place keeps: everything but what the API server, kubectl
/// and GitOps tools set for themselves. When a tool manages the source,
/// `app.kubernetes.io/instance` is its tracking label too (Argo CD's
/// default) and is dropped, so that the tool neither adopts nor prunes the
/// new object. pgplan's own labels are added by the caller.
pub fn carried(manifest: &Value) -> (Map<String, Value>, Map<String, Value>) {
    let managed = management(manifest).is_some();
    let keep = |field: &str, dropped: &[&str]| -> Map<String, Value> {
        strings(manifest, field)
            .map(|m| {
                m.iter()
                    .filter(|(k, v)| {
                        v.is_string()
                            && !dropped.contains(&k.as_str())
                            && !bookkeeping(k)
                            && (!managed || k.as_str() != INSTANCE)
                    })
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        keep("labels", &DROPPED_LABELS),
        keep("annotations", &DROPPED_ANNOTATIONS),
    )
}

/// Warn on every step of the placement that deletes, replaces or changes
/// an object a GitOps tool keeps in sync; the warning blocks apply unless
/// `spec.gitops.acknowledge` names the tool.
pub(super) fn warn(cx: &mut Ctx<'_>) {
    let acknowledged = cx.p.spec().gitops.clone();
    for step in &mut cx.steps {
        if !matches!(
            step.action,
            Action::Delete | Action::Replace | Action::Update
        ) {
            continue;
        }
        let Some(before) = &step.before else { continue };
        let Some(m) = management(before) else {
            continue;
        };
        let Some(object) = ObjectRef::of(before) else {
            continue;
        };
        let warning = warning(step, &object, &m, acknowledged.acknowledges(m.tool));
        step.warnings.push(warning);
    }
}

fn warning(step: &Step, object: &ObjectRef, m: &Management, acknowledged: bool) -> Warning {
    let (code, article, owner, sync) = match m.tool {
        GitOpsTool::Helm => (
            WarningCode::HelmManaged,
            "a",
            "Helm release",
            "the next `helm upgrade`",
        ),
        GitOpsTool::Argocd => (
            WarningCode::ArgoCdManaged,
            "an",
            "Argo CD application",
            "Argo CD's next sync",
        ),
        GitOpsTool::Flux => (
            WarningCode::FluxManaged,
            "a",
            "Flux object",
            "Flux's next reconciliation",
        ),
    };
    let whose = match &m.owner {
        Some(name) => format!("{owner} `{name}`"),
        None => format!("{article} {owner}"),
    };
    let undo = match step.action {
        Action::Delete => "recreates it beside what replaces it",
        Action::Replace => "puts its old version back",
        _ => "reverts this change",
    };
    let mut message = format!(
        "{} is managed by {whose} ({}): {sync} {undo}",
        object.display(),
        m.evidence
    );
    if acknowledged {
        message.push_str(&format!(
            " (acknowledged in spec.gitops: `{}`)",
            m.tool.as_str()
        ));
    }
    let change = match m.tool {
        GitOpsTool::Helm => "change the chart (or its values) first",
        GitOpsTool::Argocd => {
            "change the application's repository first (or pause its automated sync during the apply)"
        }
        GitOpsTool::Flux => "change the repository first (or suspend the Flux object during the apply)",
    };
    let help = format!(
        "{change}: remove or update {} there and add the manifests that `pgplan plan --export-manifests DIR` writes; then add `{}` to `spec.gitops.acknowledge` so that apply runs",
        object.display(),
        m.tool.as_str()
    );
    Warning {
        code,
        message,
        help,
        blocks_apply: !acknowledged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tools_are_told_apart_by_their_own_keys() {
        let helm = json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "billing"},
            "annotations": {"meta.helm.sh/release-name": "billing", "meta.helm.sh/release-namespace": "db"}}});
        let m = management(&helm).unwrap();
        assert_eq!(
            (m.tool, m.owner.as_deref()),
            (GitOpsTool::Helm, Some("billing"))
        );

        let argo = json!({"metadata": {
            "labels": {"app.kubernetes.io/managed-by": "Helm"},
            "annotations": {"argocd.argoproj.io/tracking-id": "billing-db:apps/Deployment:db/postgres"}}});
        let m = management(&argo).unwrap();
        assert_eq!(
            (m.tool, m.owner.as_deref()),
            (GitOpsTool::Argocd, Some("billing-db"))
        );

        let flux = json!({"metadata": {"labels": {"kustomize.toolkit.fluxcd.io/name": "apps"}}});
        assert_eq!(management(&flux).unwrap().tool, GitOpsTool::Flux);

        let plain = json!({"metadata": {"labels": {"app.kubernetes.io/instance": "billing"}}});
        assert_eq!(management(&plain), None);
    }

    #[test]
    fn carried_metadata_leaves_tool_keys_behind() {
        let src = json!({"metadata": {
            "labels": {"app": "postgres", "team": "billing", "app.kubernetes.io/instance": "billing",
                       "app.kubernetes.io/managed-by": "Helm", "helm.sh/chart": "pg-1.0"},
            "annotations": {"deployment.kubernetes.io/revision": "3", "meta.helm.sh/release-name": "billing",
                            "owner": "team-billing@example.com", "pgplan.dev/quiesced-replicas": "2"}}});
        let (labels, annotations) = carried(&src);
        assert_eq!(
            labels,
            *json!({"app": "postgres", "team": "billing"})
                .as_object()
                .unwrap()
        );
        assert_eq!(
            annotations,
            *json!({"owner": "team-billing@example.com"})
                .as_object()
                .unwrap()
        );
        // Unmanaged, the instance label is an ordinary recommended label.
        let (labels, _) =
            carried(&json!({"metadata": {"labels": {"app.kubernetes.io/instance": "x"}}}));
        assert_eq!(labels["app.kubernetes.io/instance"], "x");
    }
}
