//! The HTTP face of the simulated API server: routing Kubernetes REST paths to the registry,
//! list/watch with selectors and pagination, discovery, OpenAPI v3 and version documents, bearer-token
//! authentication, fault injection and the request log. Exec, port-forward and logs are handed
//! to the kubelet and the stream protocols.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use base64::Engine as _;
use futures::channel::mpsc;
use futures::SinkExt;
use serde_json::{json, Value};

use super::error::{success_status, ApiError};
use super::faults::FaultState;
use super::kinds::{self, Kind};
use super::kubelet::Kubelet;
use super::obj;
use super::openapi;
use super::patch::{self, PatchType};
use super::registry::{self, DeleteOptions, Deleted, Sub};
use super::reqlog::{Request as Logged, RequestLog};
use super::select::{FieldSelector, LabelSelector};
use super::store::{EventType, Store};
use super::stream::{self, ExecRequest};

/// What every request handler shares.
pub struct ApiState {
    pub store: Store,
    pub log: Arc<RequestLog>,
    pub faults: Arc<FaultState>,
    pub kubelet: Arc<Kubelet>,
    pub token: String,
    pub server_addr: String,
    /// The exec protocols the kubelet speaks.
    pub exec: ExecProtocols,
    /// API groups not served (their CRDs are not installed): requests under them get the plain
    /// `404 page not found` of a real server's fallback handler.
    pub absent_api_groups: Vec<String>,
}

/// Which websocket channel protocols exec and port-forward speak: a kubelet of Kubernetes 1.30 or
/// later (`v5.channel.k8s.io`, preferred, and `v4.channel.k8s.io`), or one before 1.30, or a proxy
/// without v5 (`v4.channel.k8s.io` only), which closes an exec session when the client closes
/// its side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecProtocols {
    #[default]
    V5,
    V4Only,
}

impl ExecProtocols {
    /// What the server offers, most preferred first.
    pub fn offered(self) -> &'static [&'static str] {
        match self {
            ExecProtocols::V5 => &["v5.channel.k8s.io", "v4.channel.k8s.io"],
            ExecProtocols::V4Only => &["v4.channel.k8s.io"],
        }
    }

    /// The default of a test process: `PGPLAN_TEST_EXEC_PROTOCOL=v4` runs every simulated
    /// cluster that does not choose as a kubelet before 1.30.
    pub fn from_env() -> ExecProtocols {
        match std::env::var("PGPLAN_TEST_EXEC_PROTOCOL").as_deref() {
            Ok("v4") => ExecProtocols::V4Only,
            _ => ExecProtocols::V5,
        }
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new().fallback(handle).with_state(state)
}

enum Route {
    Json(Value),
    /// `/openapi/v2`: protobuf when asked for, else JSON.
    OpenApiV2,
    Text(&'static str),
    Resource {
        kind: &'static Kind,
        ns: Option<String>,
        name: Option<String>,
        sub: Option<String>,
    },
    NotFound,
    /// A path no API serves: Go's `http.NotFound`, plain text, as a real server answers.
    PageNotFound,
}

fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
        "minCompatibilityMajor": "1", "minCompatibilityMinor": "32",
        "gitVersion": "v1.33.0-pgplan-sim", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.24.0",
        "compiler": "gc", "platform": "linux/amd64",
    })
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Route {
    let (kind, ns, tail): (&'static Kind, Option<String>, &[&str]) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if kinds::by_plural(group, version, plural).is_some_and(|k| k.namespaced) =>
        {
            let Some(k) = kinds::by_plural(group, version, plural) else {
                return Route::NotFound;
            };
            (k, Some(ns.to_string()), tail)
        }
        [plural, tail @ ..] => match kinds::by_plural(group, version, plural) {
            Some(k) => (k, None, tail),
            None => return Route::NotFound,
        },
        [] => return Route::NotFound,
    };
    let (name, sub) = match tail {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, sub] => (Some(name.to_string()), Some(sub.to_string())),
        _ => return Route::NotFound,
    };
    if kind.namespaced && ns.is_none() && name.is_some() {
        return Route::NotFound;
    }
    Route::Resource {
        kind,
        ns,
        name,
        sub,
    }
}

fn parse_route(path: &str, addr: &str, absent: &[String]) -> Route {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let json_or_404 = |v: Option<Value>| v.map(Route::Json).unwrap_or(Route::NotFound);
    match segs.as_slice() {
        ["apis", g, ..] if absent.iter().any(|a| a == g) => Route::PageNotFound,
        ["api"] => Route::Json(kinds::core_versions(addr)),
        ["api", "v1"] => json_or_404(kinds::resource_list("", "v1")),
        ["apis"] => Route::Json(kinds::group_list(absent)),
        ["apis", g] => json_or_404(kinds::group(g)),
        ["apis", g, v] => json_or_404(kinds::resource_list(g, v)),
        ["version"] => Route::Json(version_info()),
        ["openapi", "v2"] => Route::OpenApiV2,
        ["openapi", "v3"] => Route::Json(openapi::discovery()),
        ["openapi", "v3", "api", v] => json_or_404(openapi::group_version("", v)),
        ["openapi", "v3", "apis", g, v] => json_or_404(openapi::group_version(g, v)),
        ["healthz"] | ["livez"] | ["readyz"] => Route::Text("ok"),
        ["api", "v1", rest @ ..] => resource_route("", "v1", rest),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest),
        _ => Route::NotFound,
    }
}

fn json_response(code: u16, v: &Value) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status())
}

struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }

    fn all(&self, k: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(a, _)| a == k)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true" | "1"))
    }

    fn dry_run(&self) -> Result<bool, ApiError> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: \"{other}\": supported values: \"All\""
            ))),
        }
    }
}

fn verb_of(method: &Method, name: bool, sub: Option<&str>, watch: bool) -> &'static str {
    match (method.as_str(), name, sub) {
        (_, true, Some("exec" | "portforward" | "attach")) => "create",
        ("GET", true, _) => "get",
        ("GET", false, _) if watch => "watch",
        ("GET", false, _) => "list",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", true, _) => "delete",
        ("DELETE", false, _) => "deletecollection",
        _ => "unknown",
    }
}

async fn handle(State(st): State<Arc<ApiState>>, req: Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let params = Params(
        Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|q| q.0)
            .unwrap_or_default(),
    );
    let route = parse_route(parts.uri.path(), &st.server_addr, &st.absent_api_groups);
    let (verb, resource, ns, name) = match &route {
        Route::Resource {
            kind,
            ns,
            name,
            sub,
        } => (
            verb_of(
                &parts.method,
                name.is_some(),
                sub.as_deref(),
                params.flag("watch"),
            ),
            match sub {
                Some(s) => format!("{}/{s}", kind.plural),
                None => kind.plural.to_string(),
            },
            ns.clone(),
            name.clone(),
        ),
        _ => ("get", String::new(), None, None),
    };
    let authorized = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h == format!("Bearer {}", st.token));
    if authorized && st.faults.hangs(verb, &resource) {
        // Accepted, read, never answered: the client's own bound is all that ends it.
        return std::future::pending().await;
    }
    let response = if !authorized {
        error_response(&ApiError::new(401, "Unauthorized", "Unauthorized"))
    } else {
        let (delay, fail) = st.faults.check(verb, &resource);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match (fail, route) {
            (Some(e), _) => error_response(&e),
            (None, Route::Json(v)) => json_response(200, &v),
            (None, Route::OpenApiV2) => {
                let protobuf = parts
                    .headers
                    .get(header::ACCEPT)
                    .and_then(|h| h.to_str().ok())
                    .is_some_and(|a| a.contains("protobuf"));
                if protobuf {
                    (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
                        )],
                        openapi::v2_protobuf(),
                    )
                        .into_response()
                } else {
                    json_response(200, &openapi::v2_json())
                }
            }
            (None, Route::Text(t)) => (StatusCode::OK, t).into_response(),
            (None, Route::PageNotFound) => (
                StatusCode::NOT_FOUND,
                [
                    (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                ],
                "404 page not found\n",
            )
                .into_response(),
            (None, Route::NotFound) => error_response(&ApiError::new(
                404,
                "NotFound",
                "the server could not find the requested resource",
            )),
            (
                None,
                Route::Resource {
                    kind,
                    ns,
                    name,
                    sub,
                },
            ) => {
                let ctx = Ctx {
                    st: &st,
                    kind,
                    ns: ns.unwrap_or_default(),
                    params: &params,
                };
                match dispatch(&ctx, &mut parts, body, name, sub).await {
                    Ok(r) => r,
                    Err(e) => error_response(&e),
                }
            }
        }
    };
    st.log.push(Logged {
        verb: verb.to_string(),
        resource,
        namespace: ns,
        name,
        code: response.status().as_u16(),
        dry_run: params.get("dryRun").is_some() || response.extensions().get::<DryRun>().is_some(),
        path: path_and_query,
    });
    response
}

/// Marks a response to a dry run whose flag came in the body (DeleteOptions), for the log.
#[derive(Clone, Copy)]
struct DryRun;

struct Ctx<'a> {
    st: &'a ApiState,
    kind: &'static Kind,
    ns: String,
    params: &'a Params,
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, 256 << 20)
        .await
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or malformed: {e}"
        ))
    })
}

fn sub_of(kind: &Kind, sub: Option<&str>) -> Result<Sub, ApiError> {
    match sub {
        None => Ok(Sub::Main),
        Some("status") if kind.status => Ok(Sub::Status),
        Some("scale") if kind.scale => Ok(Sub::Scale),
        Some(_) => Err(ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )),
    }
}

async fn dispatch(
    ctx: &Ctx<'_>,
    parts: &mut axum::http::request::Parts,
    body: Body,
    name: Option<String>,
    sub: Option<String>,
) -> Result<Response, ApiError> {
    let store = &ctx.st.store;
    let kind = ctx.kind;
    let ns = ctx.ns.as_str();
    let method = parts.method.clone();
    match (method, name, sub.as_deref()) {
        (Method::GET, None, None) if ctx.params.flag("watch") => Ok(watch(ctx)),
        (Method::GET, None, None) => list(ctx),
        (Method::POST, None, None) => {
            let body = parse_json(&read_body(body).await?)?;
            let created = registry::create(store, kind, ns, body, ctx.params.dry_run()?)?;
            Ok(json_response(201, &created))
        }
        (Method::DELETE, None, None) => {
            let bytes = read_body(body).await?;
            delete_collection(ctx, &bytes)
        }
        (Method::GET, Some(name), Some(s @ ("exec" | "attach" | "portforward")))
            if kind.kind == "Pod" =>
        {
            let pod = store
                .get(kind, ns, &name)
                .ok_or_else(|| ApiError::not_found(kind, &name))?;
            let ws = WebSocketUpgrade::from_request_parts(parts, &())
                .await
                .map_err(|_| ApiError::bad_request("Upgrade request required"))?;
            // The first protocol the server offers that the client asked for, as the kubelet
            // chooses; none in common is refused, as there.
            let offered = ctx.st.exec.offered();
            let Some(&protocol) = offered.iter().find(|p| {
                ws.requested_protocols()
                    .any(|r| r.to_str().is_ok_and(|r| r.trim() == **p))
            }) else {
                let requested: Vec<String> = ws
                    .requested_protocols()
                    .filter_map(|r| r.to_str().ok().map(str::to_string))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "requested protocol(s) are not supported: {requested:?}; supports {offered:?}"
                )));
            };
            let v5 = protocol == "v5.channel.k8s.io";
            let ws = ws.protocols([protocol]).max_message_size(64 << 20);
            if s == "portforward" {
                let mut ports: Vec<u16> = Vec::new();
                for p in ctx.params.all("ports") {
                    for one in p.split(',') {
                        ports.push(one.trim().parse().map_err(|_| {
                            ApiError::bad_request(format!("invalid port \"{one}\""))
                        })?);
                    }
                }
                if ports.is_empty() {
                    return Err(ApiError::bad_request("at least 1 port must be specified"));
                }
                let targets: Vec<(u16, Result<std::net::SocketAddr, String>)> = ports
                    .iter()
                    .map(|p| (*p, ctx.st.kubelet.port_target(&pod, *p)))
                    .collect();
                let log = ctx.st.log.clone();
                Ok(ws.on_upgrade(move |socket| stream::portforward(socket, targets, log)))
            } else {
                if s == "attach" {
                    return Err(ApiError::bad_request(
                        "attach is not supported by the simulated kubelet",
                    ));
                }
                let target = ctx
                    .st
                    .kubelet
                    .exec_target(&pod, ctx.params.get("container"))?;
                let req = ExecRequest {
                    command: ctx.params.all("command"),
                    stdin: ctx.params.flag("stdin"),
                    stdout: ctx.params.flag("stdout"),
                    stderr: ctx.params.flag("stderr"),
                    tty: ctx.params.flag("tty"),
                };
                let log = ctx.st.log.clone();
                Ok(ws.on_upgrade(move |socket| stream::exec(socket, target, req, v5, log)))
            }
        }
        (Method::GET, Some(name), Some("log")) if kind.kind == "Pod" => {
            let pod = store
                .get(kind, ns, &name)
                .ok_or_else(|| ApiError::not_found(kind, &name))?;
            let mut text = ctx.st.kubelet.logs(&pod, ctx.params.get("container"))?;
            if let Some(n) = ctx
                .params
                .get("tailLines")
                .and_then(|n| n.parse::<usize>().ok())
            {
                let lines: Vec<&str> = text.lines().collect();
                text = lines[lines.len().saturating_sub(n)..].join("\n");
                text.push('\n');
            }
            ctx.st.log.add_stream_bytes(text.len());
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], text).into_response())
        }
        (Method::GET, Some(name), sub) => {
            let sub = sub_of(kind, sub)?;
            let o = store
                .get(kind, ns, &name)
                .ok_or_else(|| ApiError::not_found(kind, &name))?;
            if sub == Sub::Scale {
                return Ok(json_response(200, &registry::scale_of(&o)));
            }
            Ok(json_response(200, &o))
        }
        (Method::PUT, Some(name), sub) => {
            let sub = sub_of(kind, sub)?;
            let body = parse_json(&read_body(body).await?)?;
            let o = registry::update(store, kind, ns, &name, body, sub, ctx.params.dry_run()?)?;
            Ok(json_response(200, &o))
        }
        (Method::PATCH, Some(name), sub) => {
            let sub = sub_of(kind, sub)?;
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let pt = PatchType::from_content_type(ct).ok_or_else(|| {
                ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got \"{ct}\")"),
                )
            })?;
            if pt == PatchType::Strategic && kind.kind == "Backstage" {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            let body = patch::parse_body(pt, &read_body(body).await?)?;
            let (o, created) = registry::patch(
                store,
                kind,
                ns,
                &name,
                pt,
                &body,
                sub,
                ctx.params.dry_run()?,
            )?;
            Ok(json_response(if created { 201 } else { 200 }, &o))
        }
        (Method::DELETE, Some(name), None) => {
            let bytes = read_body(body).await?;
            let opts = delete_options(ctx.params, &bytes)?;
            let mut r = match registry::delete(store, kind, ns, &name, &opts)? {
                Deleted::Gone(o) if kind.kind == "Pod" => json_response(200, &o),
                Deleted::Gone(o) => json_response(200, &success_status(kind, &name, obj::uid(&o))),
                Deleted::Pending(o) => json_response(200, &o),
            };
            if opts.dry_run {
                r.extensions_mut().insert(DryRun);
            }
            Ok(r)
        }
        (Method::POST, Some(name), Some("eviction")) if kind.kind == "Pod" => {
            let bytes = read_body(body).await?;
            let eviction = if bytes.is_empty() {
                json!({})
            } else {
                parse_json(&bytes)?
            };
            let inner = eviction
                .get("deleteOptions")
                .map(|d| d.to_string())
                .unwrap_or_default();
            let opts = delete_options(ctx.params, inner.as_bytes())?;
            registry::delete(store, kind, ns, &name, &opts)?;
            Ok(json_response(
                201,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
        }
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

fn delete_options(params: &Params, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        parse_json(body)?
    };
    let mut opts = DeleteOptions {
        propagation: obj::str_at(&b, "/propagationPolicy")
            .or(params.get("propagationPolicy"))
            .map(str::to_string),
        grace_seconds: obj::i64_at(&b, "/gracePeriodSeconds").or_else(|| {
            params
                .get("gracePeriodSeconds")
                .and_then(|g| g.parse().ok())
        }),
        precondition_uid: obj::str_at(&b, "/preconditions/uid").map(str::to_string),
        precondition_rv: obj::str_at(&b, "/preconditions/resourceVersion").map(str::to_string),
        dry_run: params.dry_run()?,
    };
    if obj::array_at(&b, "/dryRun").iter().any(|v| v == "All") {
        opts.dry_run = true;
    }
    if opts.propagation.is_none() {
        if let Some(orphan) = b.get("orphanDependents").and_then(Value::as_bool) {
            opts.propagation = Some(if orphan { "Orphan" } else { "Background" }.into());
        }
    }
    Ok(opts)
}

fn selectors(params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    Ok((
        LabelSelector::parse(params.get("labelSelector").unwrap_or(""))?,
        FieldSelector::parse(params.get("fieldSelector").unwrap_or(""))?,
    ))
}

fn scope(ctx: &Ctx<'_>) -> Option<String> {
    (ctx.kind.namespaced && !ctx.ns.is_empty()).then(|| ctx.ns.clone())
}

fn list(ctx: &Ctx<'_>) -> Result<Response, ApiError> {
    let (lsel, fsel) = selectors(ctx.params)?;
    let ns = scope(ctx);
    let (items, rv) = ctx.st.store.snapshot(ctx.kind, ns.as_deref());
    let mut items: Vec<&Value> = items
        .iter()
        .map(|o| &**o)
        .filter(|o| lsel.matches_object(o) && fsel.matches(o))
        .collect();
    let key = |o: &Value| format!("{}/{}", obj::namespace(o), obj::name(o));
    if let Some(token) = ctx.params.get("continue").filter(|t| !t.is_empty()) {
        let after = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        items.retain(|o| key(o) > after);
    }
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = ctx
        .params
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
    {
        if limit > 0 && items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let last = items.last().map(|o| key(o)).unwrap_or_default();
            metadata["continue"] =
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last));
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    Ok(json_response(
        200,
        &json!({
            "kind": format!("{}List", ctx.kind.kind), "apiVersion": ctx.kind.api_version(),
            "metadata": metadata, "items": items,
        }),
    ))
}

fn delete_collection(ctx: &Ctx<'_>, body: &[u8]) -> Result<Response, ApiError> {
    let (lsel, fsel) = selectors(ctx.params)?;
    let opts = delete_options(ctx.params, body)?;
    let ns = scope(ctx);
    let mut deleted = Vec::new();
    for o in ctx.st.store.list(ctx.kind, ns.as_deref()) {
        if lsel.matches_object(&o) && fsel.matches(&o) {
            if let Ok(d) = registry::delete(
                &ctx.st.store,
                ctx.kind,
                obj::namespace(&o),
                obj::name(&o),
                &opts,
            ) {
                deleted.push(match d {
                    Deleted::Gone(o) | Deleted::Pending(o) => (*o).clone(),
                });
            }
        }
    }
    let mut r = json_response(
        200,
        &json!({"kind": format!("{}List", ctx.kind.kind), "apiVersion": ctx.kind.api_version(),
                "metadata": {"resourceVersion": ctx.st.store.current_rv().to_string()},
                "items": deleted}),
    );
    if opts.dry_run {
        r.extensions_mut().insert(DryRun);
    }
    Ok(r)
}

fn watch(ctx: &Ctx<'_>) -> Response {
    let (lsel, fsel) = match selectors(ctx.params) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let store = ctx.st.store.clone();
    let kind = ctx.kind;
    let ns = scope(ctx);
    let start: Option<u64> = ctx
        .params
        .get("resourceVersion")
        .and_then(|r| r.parse().ok())
        .filter(|r| *r != 0);
    let send_initial = ctx.params.flag("sendInitialEvents");
    let bookmarks = ctx.params.flag("allowWatchBookmarks");
    let timeout = Duration::from_secs(
        ctx.params
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .unwrap_or(1800),
    );
    let (mut tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        let line = |typ: &str, o: &Value| {
            let mut s = json!({"type": typ, "object": o}).to_string();
            s.push('\n');
            Ok(Bytes::from(s))
        };
        let bookmark = |rv: u64, initial_end: bool| {
            let mut meta = json!({"resourceVersion": rv.to_string()});
            if initial_end {
                meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
            }
            json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": meta})
        };
        let visible = |o: &Value| {
            ns.as_deref().is_none_or(|n| obj::namespace(o) == n)
                && lsel.matches_object(o)
                && fsel.matches(o)
        };
        let mut changes = store.subscribe();
        changes.borrow_and_update();
        let mut last = match start {
            Some(rv) if !send_initial => rv,
            _ => {
                let (items, rv) = store.snapshot(kind, ns.as_deref());
                for o in items.iter().filter(|o| visible(o)) {
                    if tx.send(line("ADDED", o)).await.is_err() {
                        return;
                    }
                }
                if send_initial && bookmarks {
                    let _ = tx.send(line("BOOKMARK", &bookmark(rv, true))).await;
                }
                rv
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match store.changes_since(kind, last) {
                Err(e) => {
                    let _ = tx.send(line("ERROR", &e.to_status())).await;
                    return;
                }
                Ok(list) => {
                    for c in list {
                        last = c.rv;
                        let now_visible = visible(&c.object);
                        let was_visible = c.old.as_deref().is_some_and(visible);
                        let typ = match (c.typ, was_visible, now_visible) {
                            (EventType::Added, _, true) => "ADDED",
                            (EventType::Modified, true, true) => "MODIFIED",
                            (EventType::Modified, false, true) => "ADDED",
                            (EventType::Modified, true, false) => "DELETED",
                            (EventType::Deleted, true, _) => "DELETED",
                            _ => continue,
                        };
                        if tx.send(line(typ, &c.object)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                _ = changes.changed() => { changes.borrow_and_update(); }
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if bookmarks && tx.send(line("BOOKMARK", &bookmark(last, false))).await.is_err() {
                        return;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(rx),
    )
        .into_response()
}
