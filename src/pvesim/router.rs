//! Path-template routing (`/nodes/{node}/qemu/{vmid}/config`) and the handler context.
//!
//! Templates are spelled exactly like the schema's paths, so the same string finds the handler,
//! the parameter schema and the fault rules. Path parameters are percent-decoded per segment; a
//! route may let its last parameter take the rest of the path (volume IDs contain `/`, like
//! pve-storage's `fragmentDelimiter => ''`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Shared;
use super::auth::Caller;
use super::http::{ApiOk, ApiResult, Params};
use super::state::Cluster;

/// What a handler gets.
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Arc<Shared>,
    pub(crate) cluster: &'a mut Cluster,
    pub(crate) params: Params,
    pub(crate) caller: &'a Caller,
    /// The node whose listener took the request (`local` in `/cluster/status`, `/version`).
    pub(crate) serving_node: &'a str,
}

impl Ctx<'_> {
    /// Simulated now.
    pub(crate) fn now(&self) -> i64 {
        self.shared.clock.now()
    }

    /// A required path/body parameter as text (validation already ensured presence when a
    /// schema is loaded; without one, a missing value is a parameter error).
    pub(crate) fn req(&self, key: &str) -> ApiResult<String> {
        self.params
            .str(key)
            .ok_or_else(|| super::http::ApiError::param(key, "property is missing and it is not optional"))
    }

    /// A required integer parameter.
    pub(crate) fn req_int(&self, key: &str) -> ApiResult<i64> {
        let text = self.req(key)?;
        text.parse().map_err(|_| {
            super::http::ApiError::param(key, format!("type check ('integer') failed - got '{text}'"))
        })
    }

    /// The `{vmid}` parameter.
    pub(crate) fn vmid(&self) -> ApiResult<u32> {
        let v = self.req_int("vmid")?;
        u32::try_from(v)
            .map_err(|_| super::http::ApiError::param("vmid", "value does not look like a valid VM ID"))
    }

    /// The `{node}` parameter.
    pub(crate) fn node(&self) -> ApiResult<String> {
        self.req("node")
    }
}

/// A handler result that may ask the dispatcher to wait for a task (`delay` parameters).
pub(crate) enum Reply {
    /// Answer right away.
    Now(ApiOk),
    /// `data` is a UPID; wait up to the simulated duration and answer `null` if it finished.
    WaitTask(String, Duration),
}

impl From<Value> for Reply {
    fn from(v: Value) -> Self {
        Reply::Now(ApiOk::from(v))
    }
}

/// A request handler.
pub(crate) type Handler = fn(&mut Ctx<'_>) -> ApiResult<Reply>;

/// One route.
pub(crate) struct Route {
    pub(crate) method: &'static str,
    pub(crate) template: &'static str,
    pub(crate) handler: Handler,
    /// Last parameter takes the rest of the path.
    pub(crate) greedy: bool,
}

/// The route table.
pub(crate) struct Router {
    routes: Vec<Route>,
}

/// Result of matching a path.
pub(crate) struct Matched<'r> {
    pub(crate) template: &'static str,
    /// The route for the method, if any route exists for the template with that method.
    pub(crate) route: Option<&'r Route>,
    pub(crate) path_params: BTreeMap<String, String>,
}

fn decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn match_template(template: &str, greedy: bool, rel_path: &str) -> Option<BTreeMap<String, String>> {
    let t: Vec<&str> = template
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let p: Vec<&str> = rel_path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if p.len() < t.len() || (!greedy && p.len() != t.len()) {
        return None;
    }
    let mut params = BTreeMap::new();
    for (i, seg) in t.iter().enumerate() {
        let last = i + 1 == t.len();
        match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if last && greedy => {
                let rest: Vec<String> = p[i..].iter().map(|s| decode(s)).collect();
                params.insert(name.to_string(), rest.join("/"));
            }
            Some(name) => {
                params.insert(name.to_string(), decode(p[i]));
            }
            None if decode(p[i]) == *seg => {}
            None => return None,
        }
    }
    Some(params)
}

impl Router {
    pub(crate) fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// Finds the template for `rel_path` and the route for `method`.
    pub(crate) fn find(&self, method: &str, rel_path: &str) -> Option<Matched<'_>> {
        let mut found: Option<Matched<'_>> = None;
        for route in &self.routes {
            if let Some(params) = match_template(route.template, route.greedy, rel_path) {
                let exact_method = route.method == method;
                if exact_method {
                    return Some(Matched {
                        template: route.template,
                        route: Some(route),
                        path_params: params,
                    });
                }
                if found.is_none() {
                    found = Some(Matched {
                        template: route.template,
                        route: None,
                        path_params: params,
                    });
                }
            }
        }
        found
    }

    /// All `(method, template)` pairs (for documentation and tests).
    pub(crate) fn endpoints(&self) -> Vec<(&'static str, &'static str)> {
        self.routes.iter().map(|r| (r.method, r.template)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_segments_and_greedy_tail() {
        let p = match_template(
            "/nodes/{node}/qemu/{vmid}/config",
            false,
            "/nodes/pve1/qemu/100/config",
        );
        assert_eq!(
            p.map(|m| (m["node"].clone(), m["vmid"].clone())),
            Some(("pve1".into(), "100".into()))
        );
        assert!(match_template("/nodes/{node}/qemu", false, "/nodes/pve1/lxc").is_none());
        let g = match_template(
            "/nodes/{node}/storage/{storage}/content/{volume}",
            true,
            "/nodes/a/storage/local/content/local%3Abackup%2Fx.vma",
        );
        assert_eq!(g.map(|m| m["volume"].clone()), Some("local:backup/x.vma".into()));
        let g = match_template(
            "/nodes/{node}/storage/{storage}/content/{volume}",
            true,
            "/nodes/a/storage/local/content/local:backup/x.vma",
        );
        assert_eq!(g.map(|m| m["volume"].clone()), Some("local:backup/x.vma".into()));
        let u = match_template(
            "/nodes/{node}/tasks/{upid}/status",
            false,
            "/nodes/a/tasks/UPID%3Aa%3A1%3Aroot%40pam%21x%3A/status",
        );
        assert_eq!(u.map(|m| m["upid"].clone()), Some("UPID:a:1:root@pam!x:".into()));
    }
}
