//! A small control endpoint outside `/api2/json` for scripts (not part of PVE):
//!
//! - `GET /_sim/state`: nodes, quorum, guests (node, status, lock) and the simulated time.
//! - `GET /_sim/tasks`: every task with its status.
//! - `POST /_sim/faults` with a JSON [`Fault`](super::Fault), e.g.
//!   `{"kind":"endpoint","method":"POST","path":"/nodes/{node}/vzdump","failNext":1}` or
//!   `{"kind":"node-offline","node":"pve2"}`; `DELETE /_sim/faults` clears endpoint faults.
//!
//! It needs no credentials: the simulator is a local test tool and binds loopback by default.

use axum::body::Body;
use axum::http::Response;
use serde_json::{Value, json};

use super::http::{ApiError, ApiOk, error_response, ok_response};
use super::{Fault, Shared};

fn state_json(shared: &Shared) -> Value {
    let cluster = shared.cluster();
    let nodes: Vec<Value> = cluster
        .nodes
        .values()
        .map(|n| json!({"node": n.name, "online": n.online, "votes": n.votes}))
        .collect();
    let guests: Vec<Value> = cluster
        .guests
        .values()
        .map(|g| {
            json!({
                "vmid": g.vmid, "type": g.kind.as_str(), "node": g.node, "name": g.name(),
                "status": if g.power.is_up() { "running" } else { "stopped" },
                "lock": g.lock(), "template": g.is_template(), "snapshots": g.snapshots.keys().collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "time": shared.clock.now(),
        "cluster": cluster.name,
        "quorate": cluster.quorate(),
        "nodes": nodes,
        "guests": guests,
        "dumpDir": cluster.dump_root.display().to_string(),
    })
}

/// Handles `/_sim/...`.
pub(crate) fn handle(shared: &Shared, method: &str, path: &str, body: &[u8]) -> Response<Body> {
    let result: Result<Value, ApiError> = match (method, path.trim_end_matches('/')) {
        ("GET", "/_sim/state") => Ok(state_json(shared)),
        ("GET", "/_sim/tasks") => {
            let tasks = shared.tasks();
            Ok(Value::Array(
                tasks.list.values().map(|t| t.status_json()).collect(),
            ))
        }
        ("POST", "/_sim/faults") => serde_json::from_slice::<Fault>(body)
            .map_err(|e| ApiError::with_status(400, format!("invalid fault: {e}\n")))
            .and_then(|fault| {
                shared
                    .apply_fault(fault)
                    .map_err(|e| ApiError::with_status(400, format!("{e}\n")))
            })
            .map(|()| Value::Null),
        ("DELETE", "/_sim/faults") => shared
            .apply_fault(Fault::Clear)
            .map(|()| Value::Null)
            .map_err(ApiError::internal),
        _ => Err(ApiError::with_status(
            404,
            format!("no such simulator endpoint '{method} {path}'\n"),
        )),
    };
    match result {
        Ok(data) => ok_response(ApiOk::from(data)),
        Err(err) => error_response(&err),
    }
}
