//! PVE's wire format: the `{"data": ...}` envelope, errors in the HTTP reason phrase, and request
//! parameters from the query string plus a form-urlencoded or JSON body.
//!
//! Mirrors pve-http-server (`PVE::APIServer::AnyEvent`, `Formatter::Standard`): an error's first
//! line becomes the reason phrase (`500 VM is locked (backup)`), the JSON body carries
//! `{"data":null,"message":"...\n"}` plus `"errors"` for parameter failures. Authentication
//! failures and unreachable nodes carry no body, like the real server.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

/// A failed API call, rendered exactly like pve-http-server renders it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiError {
    /// HTTP status code (PVE also uses the non-standard 595 for unreachable nodes).
    pub(crate) status: u16,
    /// The message; its first line becomes the reason phrase.
    pub(crate) message: String,
    /// Per-parameter messages (HTTP 400 only).
    pub(crate) errors: BTreeMap<String, String>,
    /// Whether a JSON body is sent (false for 401 from the auth layer and for 595).
    pub(crate) body: bool,
}

impl ApiError {
    /// A plain `die "...\n"` in a PVE handler: HTTP 500.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        let mut message = message.into();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        Self {
            status: 500,
            message,
            errors: BTreeMap::new(),
            body: true,
        }
    }

    /// `raise_param_exc({ field => msg })`: HTTP 400 `Parameter verification failed.`.
    pub(crate) fn param(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut errors = BTreeMap::new();
        errors.insert(field.into(), message.into());
        Self::params(errors)
    }

    /// `raise_param_exc` with several fields.
    pub(crate) fn params(errors: BTreeMap<String, String>) -> Self {
        Self {
            status: 400,
            message: "Parameter verification failed.\n".into(),
            errors,
            body: true,
        }
    }

    /// `raise_perm_exc(what)`: HTTP 403.
    pub(crate) fn forbidden(what: &str) -> Self {
        let message = if what.is_empty() {
            "Permission check failed\n".to_string()
        } else {
            format!("Permission check failed ({})\n", what.trim_end())
        };
        Self {
            status: 403,
            message,
            errors: BTreeMap::new(),
            body: true,
        }
    }

    /// A failure of the authentication layer: HTTP 401 with the message and no body.
    pub(crate) fn unauthorized(message: impl Into<String>) -> Self {
        Self {
            status: 401,
            message: message.into(),
            errors: BTreeMap::new(),
            body: false,
        }
    }

    /// No handler for this method and path (`PVE::HTTPServer::rest_handler`).
    pub(crate) fn not_implemented(method: &str, rel_path: &str) -> Self {
        Self {
            status: 501,
            message: format!("Method '{method} {rel_path}' not implemented"),
            errors: BTreeMap::new(),
            body: true,
        }
    }

    /// A request proxied to a node that does not answer (AnyEvent::HTTP status 595).
    pub(crate) fn unreachable() -> Self {
        Self {
            status: 595,
            message: "No route to host".into(),
            errors: BTreeMap::new(),
            body: false,
        }
    }

    /// An error with an explicit status (fault injection, 501 for oversized bodies...).
    pub(crate) fn with_status(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            errors: BTreeMap::new(),
            body: true,
        }
    }

    /// The reason phrase: the message's first line.
    pub(crate) fn reason(&self) -> String {
        self.message.lines().next().unwrap_or("").to_string()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.reason())
    }
}

impl From<String> for ApiError {
    fn from(message: String) -> Self {
        Self::internal(message)
    }
}

impl From<&str> for ApiError {
    fn from(message: &str) -> Self {
        Self::internal(message)
    }
}

/// Result of an API handler.
pub(crate) type ApiResult<T = Value> = Result<T, ApiError>;

/// A successful result: `data` plus the optional `total` that list endpoints add.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiOk {
    pub(crate) data: Value,
    pub(crate) total: Option<u64>,
}

impl From<Value> for ApiOk {
    fn from(data: Value) -> Self {
        Self { data, total: None }
    }
}

fn base_response(status: u16, reason: &str, body: Option<Vec<u8>>) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let has_body = body.is_some();
    let mut response = Response::new(body.map(Body::from).unwrap_or_else(Body::empty));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::SERVER, HeaderValue::from_static("pve-api-daemon/3.0"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    if has_body {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json;charset=UTF-8"),
        );
    }
    // PVE writes the error message as the reason phrase; hyper sends it for HTTP/1.
    let canonical = status.canonical_reason().unwrap_or("");
    if !reason.is_empty()
        && reason != canonical
        && let Ok(phrase) = hyper::ext::ReasonPhrase::try_from(sanitize_reason(reason))
    {
        response.extensions_mut().insert(phrase);
    }
    response
}

/// Reason phrases may not contain control characters; PVE messages are plain text.
fn sanitize_reason(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() || !c.is_ascii() { '?' } else { c })
        .collect()
}

/// Renders a success: HTTP 200 with `{"data": ...}` (+ `total`).
pub(crate) fn ok_response(ok: ApiOk) -> Response<Body> {
    let mut body = Map::new();
    body.insert("data".into(), ok.data);
    if let Some(total) = ok.total.filter(|t| *t > 0) {
        body.insert("total".into(), json!(total));
    }
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    base_response(200, "OK", Some(bytes))
}

/// Renders an error the way pve-http-server does.
pub(crate) fn error_response(err: &ApiError) -> Response<Body> {
    if !err.body {
        return base_response(err.status, &err.reason(), None);
    }
    let mut body = Map::new();
    body.insert("data".into(), Value::Null);
    body.insert("message".into(), Value::String(err.message.clone()));
    if !err.errors.is_empty() {
        let errors: Map<String, Value> = err
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        body.insert("errors".into(), Value::Object(errors));
    }
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    base_response(err.status, &err.reason(), Some(bytes))
}

/// Request parameters after merging query string and body (query wins, like PVE).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Params(pub(crate) BTreeMap<String, Value>);

impl Params {
    /// Parses `a=1&b=2` (also `;` separated); repeated keys become arrays.
    pub(crate) fn merge_urlencoded(&mut self, text: &str) {
        for (key, value) in url::form_urlencoded::parse(text.as_bytes()) {
            let key = key.into_owned();
            if key == "_dc" {
                continue; // ExtJS cache buster, removed by PVE
            }
            let value = Value::String(value.into_owned());
            match self.0.remove(&key) {
                None => {
                    self.0.insert(key, value);
                }
                Some(Value::Array(mut items)) => {
                    items.push(value);
                    self.0.insert(key, Value::Array(items));
                }
                Some(old) => {
                    self.0.insert(key, Value::Array(vec![old, value]));
                }
            }
        }
    }

    /// Merges a JSON object body.
    pub(crate) fn merge_json(&mut self, body: &[u8]) -> Result<(), ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::with_status(400, format!("malformed JSON string, {e}\n")))?;
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    if k != "_dc" {
                        self.0.insert(k, v);
                    }
                }
                Ok(())
            }
            Value::Null => Ok(()),
            _ => Err(ApiError::with_status(400, "JSON body must be an object\n")),
        }
    }

    /// The raw value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// `key` as text (numbers and booleans rendered the way Perl stringifies them).
    pub(crate) fn str(&self, key: &str) -> Option<String> {
        self.0.get(key).and_then(value_text)
    }

    /// `key` as a PVE boolean (`1`, `true`); absent is `None`.
    pub(crate) fn bool(&self, key: &str) -> Option<bool> {
        self.0.get(key).map(|v| match v {
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => matches!(s.as_str(), "1" | "true" | "yes" | "on"),
            _ => false,
        })
    }

    /// `key` as a PVE boolean, `false` when absent.
    pub(crate) fn flag(&self, key: &str) -> bool {
        self.bool(key).unwrap_or(false)
    }

    /// `key` as an integer.
    pub(crate) fn int(&self, key: &str) -> Option<i64> {
        self.str(key).and_then(|s| s.trim_start_matches('+').parse().ok())
    }

    /// Inserts or replaces a value.
    pub(crate) fn insert(&mut self, key: &str, value: Value) {
        self.0.insert(key.to_string(), value);
    }

    /// Whether `key` is present.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Parameter names.
    pub(crate) fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.keys()
    }
}

/// Perl's view of a scalar: strings as-is, numbers as digits, booleans as 1/0.
pub(crate) fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1".into() } else { "0".into() }),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(value_text).collect();
            Some(parts.join("\0"))
        }
        _ => None,
    }
}

/// Encodes a boolean the way PVE's Perl API does: as the integer 0 or 1.
pub(crate) fn pve_bool(b: bool) -> Value {
    json!(if b { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_response_puts_first_line_in_reason_and_message_in_body() {
        let err = ApiError::internal("VM is locked (backup)");
        let response = error_response(&err);
        assert_eq!(response.status().as_u16(), 500);
        let phrase = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|p| p.as_bytes().to_vec());
        assert_eq!(phrase.as_deref(), Some(&b"VM is locked (backup)"[..]));
        assert_eq!(err.message, "VM is locked (backup)\n");
    }

    #[test]
    fn unauthorized_has_no_body_and_param_error_has_errors_map() {
        let response = error_response(&ApiError::unauthorized("No ticket"));
        assert!(response.headers().get(header::CONTENT_TYPE).is_none());
        let err = ApiError::param("vmid", "VM 100 already exists");
        assert_eq!(err.status, 400);
        assert_eq!(err.reason(), "Parameter verification failed.");
        assert_eq!(err.errors["vmid"], "VM 100 already exists");
    }

    #[test]
    fn params_merge_repeated_form_keys_into_arrays_and_drop_dc() {
        let mut params = Params::default();
        params.merge_urlencoded("command=ls&command=-l&_dc=123&full=1");
        assert_eq!(params.get("command"), Some(&json!(["ls", "-l"])));
        assert!(!params.has("_dc"));
        assert_eq!(params.bool("full"), Some(true));
        params
            .merge_json(br#"{"online":true,"vmid":100}"#)
            .unwrap_or_default();
        assert_eq!(params.int("vmid"), Some(100));
        assert_eq!(params.str("online").as_deref(), Some("1"));
        assert!(params.merge_json(b"[1]").is_err());
    }
}
