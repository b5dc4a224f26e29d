//! Listeners, TLS, and the request pipeline of `pve-http-server`: faults (latency, dropped
//! connections) -> authentication (401s delayed 3 s) -> parameters -> route -> schema validation
//! -> token permission -> proxy to the target node (595 when it is offline) -> quorum -> handler.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::Shared;
use super::http::{ApiError, ApiOk, Params, error_response, ok_response};
use super::journal::RequestRecord;
use super::router::{Ctx, Reply};

/// Limit of request bodies (`$limit_max_post` in pve-http-server).
const MAX_POST: usize = 64 * 1024;
/// Delay of 401 answers (simulated seconds; scaled by `time_scale`).
const UNAUTHORIZED_DELAY: Duration = Duration::from_secs(3);

/// A connection the fault injector decided to drop.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Serves `listener` as node `node` until the returned task is aborted.
pub(crate) fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    node: String,
    tls: Option<TlsAcceptor>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let Ok((stream, _peer)) = accepted else { continue };
            let online = shared.cluster().nodes.get(&node).is_some_and(|n| n.online);
            if !online {
                drop(stream); // a powered-off node does not answer
                continue;
            }
            let _ = stream.set_nodelay(true);
            let (shared, node, tls) = (shared.clone(), node.clone(), tls.clone());
            connections.spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            serve_connection(stream, shared, node).await;
                        }
                    }
                    None => serve_connection(stream, shared, node).await,
                }
            });
        }
    })
}

async fn serve_connection<S>(stream: S, shared: Arc<Shared>, node: String)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shared, node) = (shared.clone(), node.clone());
        async move { dispatch(shared, node, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn dispatch(
    shared: Arc<Shared>,
    node: String,
    req: Request<Incoming>,
) -> Result<Response<Body>, Dropped> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim/") {
        let body = axum::body::to_bytes(Body::new(req.into_body()), MAX_POST)
            .await
            .unwrap_or_default();
        return Ok(super::admin::handle(&shared, &method, &path, &body));
    }
    // A node that went offline answers nothing, also on connections opened before it went down
    // (clients keep connections alive): close the connection without a response.
    if !shared.cluster().nodes.get(&node).is_some_and(|n| n.online) {
        return Err(Dropped);
    }
    let mut seen = Seen {
        template: path.clone(),
        params: Vec::new(),
    };
    let response = match api(&shared, &node, req, &method, &path, &mut seen).await {
        Ok(Some(response)) => response,
        Ok(None) => return Err(Dropped),
        Err(err) => {
            if err.status == 401 {
                shared.clock.sleep(UNAUTHORIZED_DELAY).await;
            }
            error_response(&err)
        }
    };
    tracing::debug!(target: "pvesim", %method, %path, status = response.status().as_u16(), "request");
    shared.journal.push(RequestRecord {
        method,
        template: seen.template,
        params: seen.params,
        status: response.status().as_u16(),
    });
    Ok(response)
}

/// What the pipeline learned about a request, for the journal.
struct Seen {
    template: String,
    params: Vec<String>,
}

fn header_str<'a>(req: &'a Request<Incoming>, name: &str) -> Option<&'a str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

/// The API pipeline; `Ok(None)` means: drop the connection.
async fn api(
    shared: &Arc<Shared>,
    node: &str,
    req: Request<Incoming>,
    method: &str,
    path: &str,
    seen: &mut Seen,
) -> Result<Option<Response<Body>>, ApiError> {
    let Some(rest) = path.strip_prefix("/api2/") else {
        return Err(ApiError::with_status(501, format!("no such file '{path}'")));
    };
    let (format, rel) = match rest.split_once('/') {
        Some((f, r)) => (f.to_string(), format!("/{}", r.trim_end_matches('/'))),
        None => (rest.to_string(), "/".to_string()),
    };
    let rel = if rel.is_empty() { "/".to_string() } else { rel };
    if format != "json" {
        return Err(ApiError::with_status(
            501,
            format!("no formatter for uri {rel}, {format}"),
        ));
    }
    let matched = shared.router.find(method, &rel);
    let template = matched
        .as_ref()
        .map(|m| m.template.to_string())
        .unwrap_or_else(|| rel.clone());
    seen.template.clone_from(&template);
    let decision = shared.faults.decide(method, &template);
    if !decision.latency.is_zero() {
        tokio::time::sleep(decision.latency).await;
    }
    if decision.drop {
        return Ok(None);
    }
    let caller = shared.auth.authenticate(
        method,
        &rel,
        header_str(&req, "cookie"),
        header_str(&req, "authorization"),
        header_str(&req, "csrfpreventiontoken"),
        shared.clock.now(),
    )?;
    let is_json = header_str(&req, header::CONTENT_TYPE.as_str()).is_some_and(|ct| {
        ct.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
    });
    let query = req.uri().query().map(str::to_string);
    let body = axum::body::to_bytes(Body::new(req.into_body()), MAX_POST)
        .await
        .map_err(|_| ApiError::with_status(501, "for data too large"))?;
    let mut params = Params::default();
    if !body.is_empty() {
        if method != "POST" && method != "PUT" {
            return Err(ApiError::with_status(
                501,
                format!("Unexpected content for method '{method}'"),
            ));
        }
        if is_json {
            params.merge_json(&body)?
        } else {
            params.merge_urlencoded(&String::from_utf8_lossy(&body))
        }
    }
    if let Some(query) = query {
        params.merge_urlencoded(&query);
    }
    seen.params = params.keys().cloned().collect();
    let Some(matched) = matched else {
        return Err(ApiError::not_implemented(method, &rel));
    };
    let Some(route) = matched.route else {
        return Err(ApiError::not_implemented(method, &rel));
    };
    for (key, value) in &matched.path_params {
        if params.str(key).is_some_and(|v| &v != value) {
            return Err(ApiError::param(
                key,
                "duplicate parameter (already defined in URI) with conflicting values!",
            ));
        }
        params.insert(key, serde_json::Value::String(value.clone()));
    }
    let method_schema = shared
        .schema
        .as_ref()
        .and_then(|s| s.method(method, route.template));
    if caller.is_token() && method_schema.is_some_and(|s| !s.allow_token) {
        return Err(ApiError::forbidden(&format!(
            "URI '{rel}' not available with API token, need proper ticket."
        )));
    }
    // PVE proxies before validating: the executing node validates (and an unreachable one
    // cannot), so an offline target answers 595 whatever the parameters.
    let proxy_param = method_schema.and_then(|s| s.proxy_to.clone()).or_else(|| {
        route
            .template
            .starts_with("/nodes/{node}")
            .then(|| "node".to_string())
    });
    if let Some(target) = proxy_param.and_then(|p| params.str(&p)) {
        let cluster = shared.cluster();
        match cluster.nodes.get(&target) {
            None => {
                return Err(ApiError::internal(format!(
                    "hostname lookup '{target}' failed - failed to get address info for: {target}: Name or service not known"
                )));
            }
            Some(n) if !n.online && n.name != node => return Err(ApiError::unreachable()),
            Some(_) => {}
        }
    }
    if let Some(schema) = method_schema {
        super::schema::validate(&schema.params, &mut params)?;
    }
    if method != "GET" && rel != "/access/ticket" && !shared.cluster().quorate() {
        return Err(ApiError::internal("cluster not ready - no quorum?"));
    }
    if let Some(err) = decision.error {
        return Err(err);
    }
    let reply = {
        let mut cluster = shared.cluster();
        let mut ctx = Ctx {
            shared,
            cluster: &mut cluster,
            params,
            caller: &caller,
            serving_node: node,
        };
        (route.handler)(&mut ctx)?
    };
    let ok = match reply {
        Reply::Now(ok) => ok,
        Reply::WaitTask(upid, max) => wait_task(shared, upid, max).await?,
    };
    if decision.lose_answer {
        return Ok(None);
    }
    Ok(Some(ok_response(ok)))
}

/// Waits up to a simulated duration for a task; `null` when it finished well, its error (like
/// pve-storage's `die "$status\n"`) when it failed in time, else the UPID.
async fn wait_task(shared: &Arc<Shared>, upid: String, max: Duration) -> Result<ApiOk, ApiError> {
    let deadline = tokio::time::Instant::now() + shared.clock.real(max);
    loop {
        let exit = shared.tasks().list.get(&upid).map(|t| t.exitstatus.clone());
        match exit {
            Some(Some(status)) if status == "OK" || status.starts_with("WARNINGS: ") => {
                return Ok(ApiOk::from(serde_json::Value::Null));
            }
            Some(Some(status)) => return Err(ApiError::internal(status)),
            Some(None) => {}
            None => return Ok(ApiOk::from(serde_json::Value::Null)),
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(ApiOk::from(serde_json::Value::String(upid)));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
