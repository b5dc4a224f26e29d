//! The PBS API listener (`--pbs-listen`): `https://HOST:8007/api2/json/...` with PBS API tokens
//! (`Authorization: PBSAPIToken=user@realm!name:secret`) or tickets (`POST /access/ticket`,
//! cookie `PBSAuthCookie`, CSRF header on writes), PBS's error format (HTTP 400 and the
//! plain message as body for most failures) and the endpoints an operator uses: `/version`,
//! `/admin/datastore`, `.../snapshots` (list, delete), `.../verify`, `.../status`, and task
//! status and log under `/nodes/{node}/tasks/{upid}`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use super::{backup_type, datastore_of, datastores, snapshot_path, snapshots_of, verify_snapshot};
use crate::pvesim::Shared;
use crate::pvesim::auth::Caller;
use crate::pvesim::http::Params;
use crate::pvesim::state::{Cluster, GuestKind};

/// Simulated duration of one snapshot's verification.
const VERIFY_SECS: u64 = 5;

/// A PBS error: status and message.
struct PbsError(StatusCode, String);

impl PbsError {
    fn bad(message: impl Into<String>) -> Self {
        Self(StatusCode::BAD_REQUEST, message.into())
    }
}

type PbsResult = Result<Value, PbsError>;

/// Serves the PBS API on `listener` until the returned task is aborted.
pub(crate) fn serve(listener: TcpListener, shared: Arc<Shared>, tls: Option<TlsAcceptor>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let Ok((stream, _peer)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let (shared, tls) = (shared.clone(), tls.clone());
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let shared = shared.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(shared, req).await) }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => {
                        let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    })
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    response
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().as_str().to_string();
    let path = req.uri().path().to_string();
    let header_text = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let authorization = header_text(header::AUTHORIZATION);
    let cookie = header_text(header::COOKIE);
    let csrf = header_text(header::HeaderName::from_static("csrfpreventiontoken"));
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("application/json"));
    let query = req.uri().query().map(str::to_string);
    let body = axum::body::to_bytes(Body::new(req.into_body()), 64 * 1024)
        .await
        .unwrap_or_default();
    let mut params = Params::default();
    if !body.is_empty() {
        if is_json {
            if params.merge_json(&body).is_err() {
                return respond(StatusCode::BAD_REQUEST, b"invalid JSON body".to_vec());
            }
        } else {
            params.merge_urlencoded(&String::from_utf8_lossy(&body));
        }
    }
    if let Some(q) = &query {
        params.merge_urlencoded(q);
    }
    let now = shared.clock.now();
    let result = if method == "POST" && path.trim_end_matches('/') == "/api2/json/access/ticket" {
        shared
            .auth
            .login_pbs(&params, now)
            .map_err(|e| PbsError(StatusCode::UNAUTHORIZED, e.message.trim_end().to_string()))
    } else {
        let caller = match cookie.as_deref().and_then(|c| {
            shared
                .auth
                .authenticate_pbs_ticket(&method, c, csrf.as_deref(), now)
        }) {
            Some(result) => result,
            None => shared.auth.authenticate_pbs(authorization.as_deref()),
        };
        match caller {
            Err(e) => Err(PbsError(
                StatusCode::UNAUTHORIZED,
                e.message.trim_end().to_string(),
            )),
            Ok(caller) => route(&shared, &caller, &method, &path, &params),
        }
    };
    match result {
        Ok(data) => respond(
            StatusCode::OK,
            serde_json::to_vec(&json!({ "data": data })).unwrap_or_default(),
        ),
        // proxmox-rest-server: the message itself is the body, the status carries the class.
        Err(PbsError(status, message)) => respond(status, message.into_bytes()),
    }
}

fn segments(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("/api2/json")?;
    Some(
        rest.split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .collect(),
    )
}

fn route(shared: &Arc<Shared>, caller: &Caller, method: &str, path: &str, params: &Params) -> PbsResult {
    let Some(segs) = segments(path) else {
        return Err(PbsError(
            StatusCode::NOT_FOUND,
            format!("Path '{path}' not found."),
        ));
    };
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let now = shared.clock.now();
    match (method, segs.as_slice()) {
        ("GET", ["version"]) => Ok(json!({"version": "4.2.5", "release": "4.2", "repoid": "0d1a7c1e"})),
        ("GET", ["admin", "datastore"]) => {
            let c = shared.cluster();
            Ok(Value::Array(
                datastores(&c)
                    .into_iter()
                    .map(|store| json!({"store": store, "mount-status": "nonremovable", "backend-type": "filesystem"}))
                    .collect(),
            ))
        }
        ("GET", ["admin", "datastore", store, "snapshots"]) => {
            list_snapshots(&shared.cluster(), store, params)
        }
        ("DELETE", ["admin", "datastore", store, "snapshots"]) => {
            delete_snapshot(&mut shared.cluster(), store, params)
        }
        ("GET", ["admin", "datastore", store, "status"]) => status(&shared.cluster(), store),
        ("POST", ["admin", "datastore", store, "verify"]) => verify(shared, caller, store, params, now),
        ("GET", ["nodes", _node, "tasks", upid, "status"]) => {
            let c = shared.cluster();
            c.pbs
                .tasks
                .get(*upid)
                .map(|t| t.status_json())
                .ok_or_else(|| PbsError::bad(format!("no such task '{upid}'")))
        }
        ("GET", ["nodes", _node, "tasks", upid, "log"]) => {
            let c = shared.cluster();
            let task = c
                .pbs
                .tasks
                .get(*upid)
                .ok_or_else(|| PbsError::bad(format!("no such task '{upid}'")))?;
            Ok(Value::Array(
                task.log
                    .iter()
                    .enumerate()
                    .map(|(i, l)| json!({"n": i + 1, "t": l}))
                    .collect(),
            ))
        }
        _ => Err(PbsError(
            StatusCode::NOT_FOUND,
            format!("Path '{}' not found.", path.trim_start_matches("/api2/json")),
        )),
    }
}

fn check_store(c: &Cluster, store: &str) -> Result<(), PbsError> {
    if datastores(c).iter().any(|s| s == store) {
        Ok(())
    } else {
        Err(PbsError::bad(format!("datastore '{store}' does not exist")))
    }
}

/// Only the root namespace exists.
fn check_ns(params: &Params) -> Result<(), PbsError> {
    match params.str("ns").filter(|n| !n.is_empty()) {
        Some(ns) => Err(PbsError::bad(format!("namespace '{ns}' does not exist"))),
        None => Ok(()),
    }
}

fn kind_of(backup_type: &str) -> Result<GuestKind, PbsError> {
    match backup_type {
        "vm" => Ok(GuestKind::Qemu),
        "ct" => Ok(GuestKind::Lxc),
        "host" => Err(PbsError::bad("no 'host' backups in this datastore")),
        other => Err(PbsError::bad(format!(
            "parameter verification failed - 'backup-type': value '{other}' is not defined in the enumeration."
        ))),
    }
}

fn files(kind: GuestKind) -> Value {
    match kind {
        GuestKind::Qemu => json!([
            "qemu-server.conf.blob",
            "drive-scsi0.img.fidx",
            "index.json.blob",
            "client.log.blob"
        ]),
        GuestKind::Lxc => json!([
            "pct.conf.blob",
            "root.pxar.didx",
            "catalog.pcat1.didx",
            "index.json.blob",
            "client.log.blob"
        ]),
    }
}

/// `GET /admin/datastore/{store}/snapshots`.
fn list_snapshots(c: &Cluster, store: &str, params: &Params) -> PbsResult {
    check_store(c, store)?;
    check_ns(params)?;
    let want_type = params.str("backup-type");
    if let Some(t) = &want_type {
        kind_of(t)?;
    }
    let want_id = params.str("backup-id");
    let rows = snapshots_of(c, store)
        .into_iter()
        .map(|i| &c.pbs_backups[i])
        .filter(|b| want_type.as_deref().is_none_or(|t| t == backup_type(b.kind)))
        .filter(|b| want_id.as_deref().is_none_or(|id| id == b.vmid.to_string()))
        .map(|b| {
            let mut row = json!({
                "backup-type": backup_type(b.kind), "backup-id": b.vmid.to_string(),
                "backup-time": b.backup_time, "files": files(b.kind), "size": b.size,
                "protected": b.protected, "owner": "root@pam",
            });
            if let Some(first) = b.notes.as_deref().and_then(|n| n.lines().next()) {
                row["comment"] = json!(first);
            }
            if let Some(v) = &b.verification {
                row["verification"] = json!({"state": v.state, "upid": v.upid});
            }
            row
        })
        .collect();
    Ok(Value::Array(rows))
}

/// The snapshot `backup-type`/`backup-id`/`backup-time` of `store`.
fn find(c: &Cluster, store: &str, params: &Params) -> Result<usize, PbsError> {
    let kind = kind_of(&params.str("backup-type").ok_or_else(|| {
        PbsError::bad(
            "parameter verification failed - 'backup-type': parameter is missing and it is not optional.",
        )
    })?)?;
    let id = params.str("backup-id").ok_or_else(|| {
        PbsError::bad(
            "parameter verification failed - 'backup-id': parameter is missing and it is not optional.",
        )
    })?;
    let time = params.int("backup-time").ok_or_else(|| {
        PbsError::bad(
            "parameter verification failed - 'backup-time': parameter is missing and it is not optional.",
        )
    })?;
    snapshots_of(c, store)
        .into_iter()
        .find(|i| {
            let b = &c.pbs_backups[*i];
            b.kind == kind && b.vmid.to_string() == id && b.backup_time == time
        })
        .ok_or_else(|| {
            let stamp = crate::pvesim::clock::format_epoch(time, "%Y-%m-%dT%H:%M:%SZ");
            PbsError(
                StatusCode::NOT_FOUND,
                format!(
                    "backup snapshot '{}/{id}/{stamp}' does not exist",
                    backup_type(kind)
                ),
            )
        })
}

/// `DELETE /admin/datastore/{store}/snapshots`.
fn delete_snapshot(c: &mut Cluster, store: &str, params: &Params) -> PbsResult {
    check_store(c, store)?;
    check_ns(params)?;
    let i = find(c, store, params)?;
    if c.pbs_backups[i].protected {
        return Err(PbsError::bad("cannot remove protected snapshot"));
    }
    c.pbs_backups.remove(i);
    Ok(Value::Null)
}

/// `GET /admin/datastore/{store}/status`: the size of the first `pbs` storage on it.
fn status(c: &Cluster, store: &str) -> PbsResult {
    check_store(c, store)?;
    let storage = c
        .storages
        .keys()
        .find(|id| datastore_of(c, id).as_deref() == Some(store))
        .cloned()
        .unwrap_or_default();
    let total = c.storages.get(&storage).map_or(0, |s| s.total);
    let used = crate::pvesim::routes::storage_usage(c, &storage).min(total);
    let mut counts = json!({});
    for kind in [GuestKind::Qemu, GuestKind::Lxc] {
        let snaps: Vec<u32> = snapshots_of(c, store)
            .into_iter()
            .map(|i| &c.pbs_backups[i])
            .filter(|b| b.kind == kind)
            .map(|b| b.vmid)
            .collect();
        let mut groups = snaps.clone();
        groups.sort_unstable();
        groups.dedup();
        if !snaps.is_empty() {
            counts[backup_type(kind)] = json!({"groups": groups.len(), "snapshots": snaps.len()});
        }
    }
    Ok(
        json!({"total": total, "used": used, "avail": total - used, "counts": counts, "backend-type": "filesystem"}),
    )
}

/// `POST /admin/datastore/{store}/verify`: a snapshot (`backup-type`+`backup-id`+`backup-time`,
/// task `verify_snapshot`), a group (`verify_group`) or the whole datastore (`verify`).
fn verify(shared: &Arc<Shared>, caller: &Caller, store: &str, params: &Params, now: i64) -> PbsResult {
    let mut c = shared.cluster();
    check_store(&c, store)?;
    check_ns(params)?;
    let ignore_verified = params.bool("ignore-verified").unwrap_or(true);
    let (worker_type, worker_id, targets) = if params.has("backup-time") {
        let i = find(&c, store, params)?;
        let id = format!("{store}:{}", snapshot_path(&c.pbs_backups[i]));
        ("verify_snapshot", id, vec![i])
    } else if let Some(t) = params.str("backup-type") {
        let kind = kind_of(&t)?;
        let id = params
            .str("backup-id")
            .ok_or_else(|| PbsError::bad("no backup-id given for the group"))?;
        let all: Vec<usize> = snapshots_of(&c, store)
            .into_iter()
            .filter(|i| c.pbs_backups[*i].kind == kind && c.pbs_backups[*i].vmid.to_string() == id)
            .collect();
        if all.is_empty() {
            return Err(PbsError(
                StatusCode::NOT_FOUND,
                format!("backup group '{t}/{id}' does not exist"),
            ));
        }
        ("verify_group", format!("{store}:{t}/{id}"), all)
    } else {
        ("verify", store.to_string(), snapshots_of(&c, store))
    };
    let targets: Vec<(i64, GuestKind, u32)> = targets
        .into_iter()
        .map(|i| &c.pbs_backups[i])
        .filter(|b| {
            worker_type == "verify_snapshot"
                || !ignore_verified
                || b.verification.as_ref().is_none_or(|v| v.state != "ok")
        })
        .map(|b| (b.backup_time, b.kind, b.vmid))
        .collect();
    let upid = c.pbs.new_task(now, worker_type, &worker_id, &caller.upid_user());
    drop(c);
    let shared = shared.clone();
    let store = store.to_string();
    let task_upid = upid.clone();
    tokio::spawn(async move {
        let mut failed: Vec<String> = Vec::new();
        for (time, kind, vmid) in targets {
            shared.clock.sleep(Duration::from_secs(VERIFY_SECS)).await;
            let mut c = shared.cluster();
            let found = snapshots_of(&c, &store).into_iter().find(|i| {
                let b = &c.pbs_backups[*i];
                b.backup_time == time && b.kind == kind && b.vmid == vmid
            });
            match found {
                Some(i) => {
                    if !verify_snapshot(&mut c, i, &task_upid) {
                        failed.push(snapshot_path(&c.pbs_backups[i]));
                    }
                }
                None => {
                    let stamp = crate::pvesim::clock::format_epoch(time, "%Y-%m-%dT%H:%M:%SZ");
                    c.pbs.finish_task(
                        &task_upid,
                        shared.clock.now(),
                        Some(format!(
                            "backup snapshot '{}/{vmid}/{stamp}' vanished",
                            backup_type(kind)
                        )),
                    );
                    return;
                }
            }
        }
        let now = shared.clock.now();
        let mut c = shared.cluster();
        let error = if failed.is_empty() {
            None
        } else {
            c.pbs
                .log(&task_upid, "Failed to verify the following snapshots/groups:");
            for f in &failed {
                c.pbs.log(&task_upid, format!("\t{f}"));
            }
            Some("verification failed - please check the log for details".to_string())
        };
        c.pbs.finish_task(&task_upid, now, error);
    });
    Ok(Value::String(upid))
}
