//! The official PVE API schema (the api-viewer tree in `pve-apischema.json`), indexed once into
//! path template -> method -> parameter schema, and PVE's parameter validation on top of it.
//!
//! The file is Proxmox's; it is read from the path given with `--schema` and never copied.
//! Loading is cached per path, so starting many simulators in one test binary parses it once.

mod formats;
mod propstring;
mod validate;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use regex::Regex;
use serde_json::Value;

use super::SimError;

pub(crate) use formats::{check_named, split_list};
pub(crate) use validate::validate;

/// A named format (`pve-vmid`, `pve-node-list`...) or a property-string format (`net[n]`).
#[derive(Debug, Clone)]
pub(crate) enum Format {
    Named(String),
    Dict(Arc<BTreeMap<String, Prop>>),
}

/// One property of a parameter schema (the subset of PVE's JSON schema dialect the API uses).
#[derive(Debug, Clone, Default)]
pub(crate) struct Prop {
    pub(crate) ty: Option<String>,
    pub(crate) optional: bool,
    pub(crate) enumeration: Option<Vec<String>>,
    pub(crate) pattern: Option<Regex>,
    pub(crate) minimum: Option<f64>,
    pub(crate) maximum: Option<f64>,
    pub(crate) min_length: Option<usize>,
    pub(crate) max_length: Option<usize>,
    pub(crate) format: Option<Format>,
    pub(crate) requires: Option<String>,
    pub(crate) items: Option<Box<Prop>>,
    pub(crate) alias: Option<String>,
    pub(crate) key_alias: Option<String>,
    pub(crate) default_key: bool,
}

/// The parameters of one method.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObjectSchema {
    /// Plain properties.
    pub(crate) props: BTreeMap<String, Prop>,
    /// `net[n]`-style properties: prefix -> schema (the api-viewer collapses `net0..net31`).
    pub(crate) indexed: BTreeMap<String, Prop>,
    /// `additionalProperties` (PVE's default for API methods is 0).
    pub(crate) additional: bool,
}

impl ObjectSchema {
    /// The schema for a concrete key (`net3` resolves through `net[n]`).
    pub(crate) fn lookup(&self, key: &str) -> Option<&Prop> {
        if let Some(prop) = self.props.get(key) {
            return Some(prop);
        }
        let digits = key.len() - key.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 || digits > 3 {
            return None;
        }
        let (prefix, index) = key.split_at(key.len() - digits);
        if index.len() > 1 && index.starts_with('0') {
            return None;
        }
        let index: usize = index.parse().ok()?;
        let prop = self.indexed.get(prefix)?;
        (index < max_index(prefix)).then_some(prop)
    }
}

/// Highest index + 1 of the `[n]` keys (qemu-server `$MAX_NETS` etc., pve-container limits).
fn max_index(prefix: &str) -> usize {
    match prefix {
        "net" | "ipconfig" => 32,
        "scsi" => 31,
        "virtio" | "hostpci" => 16,
        "sata" => 6,
        "ide" | "serial" => 4,
        "parallel" => 3,
        "usb" => 14,
        "numa" => 8,
        "virtiofs" => 10,
        _ => 256, // unused[n], mp[n], dev[n]
    }
}

/// What the schema says about one method.
#[derive(Debug, Clone, Default)]
pub(crate) struct MethodSchema {
    pub(crate) params: ObjectSchema,
    /// `allowtoken` (API tokens may call it).
    pub(crate) allow_token: bool,
    /// `proxyto` (the parameter naming the node that executes the call).
    pub(crate) proxy_to: Option<String>,
}

/// Path template -> method -> schema.
#[derive(Debug, Default)]
pub struct SchemaIndex {
    methods: HashMap<(String, String), MethodSchema>,
}

impl SchemaIndex {
    /// Loads (or returns the cached) index of the api-viewer schema at `path`.
    pub fn load(path: &Path) -> Result<Arc<SchemaIndex>, SimError> {
        static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<SchemaIndex>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        // Hold the lock while parsing: simulators started in parallel wait for one parse.
        let mut guard = cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = guard.get(&key) {
            return Ok(index.clone());
        }
        let bytes = std::fs::read(path).map_err(|source| SimError::Schema {
            path: path.to_path_buf(),
            reason: format!("cannot read it: {source}"),
        })?;
        let index = Arc::new(Self::parse(&bytes).map_err(|reason| SimError::Schema {
            path: path.to_path_buf(),
            reason,
        })?);
        guard.insert(key, index.clone());
        Ok(index)
    }

    /// Parses the api-viewer JSON (an array of tree nodes with `path`, `info`, `children`).
    pub(crate) fn parse(bytes: &[u8]) -> Result<SchemaIndex, String> {
        let root: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let roots = root
            .as_array()
            .ok_or("expected the api-viewer array of tree nodes")?;
        let mut index = SchemaIndex::default();
        let mut stack: Vec<&Value> = roots.iter().collect();
        while let Some(node) = stack.pop() {
            if let Some(children) = node.get("children").and_then(Value::as_array) {
                stack.extend(children.iter());
            }
            let Some(path) = node.get("path").and_then(Value::as_str) else {
                continue;
            };
            let Some(info) = node.get("info").and_then(Value::as_object) else {
                continue;
            };
            for (method, def) in info {
                let schema = parse_method(def).map_err(|e| format!("{method} {path}: {e}"))?;
                index.methods.insert((method.clone(), path.to_string()), schema);
            }
        }
        if index.methods.is_empty() {
            return Err("no API methods found (is this pve-apischema.json?)".into());
        }
        Ok(index)
    }

    /// The schema of `method` on the path template (e.g. `/nodes/{node}/qemu`).
    pub(crate) fn method(&self, method: &str, template: &str) -> Option<&MethodSchema> {
        self.methods.get(&(method.to_string(), template.to_string()))
    }

    /// Whether the schema defines `method` on the path template.
    pub fn contains(&self, method: &str, template: &str) -> bool {
        self.method(method, template).is_some()
    }

    /// Number of method/path pairs.
    pub fn len(&self) -> usize {
        self.methods.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }
}

fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => s == "1",
        _ => false,
    }
}

fn parse_method(def: &Value) -> Result<MethodSchema, String> {
    let params = def.get("parameters").cloned().unwrap_or(Value::Null);
    let mut object = ObjectSchema {
        additional: truthy(params.get("additionalProperties")),
        ..Default::default()
    };
    if let Some(props) = params.get("properties").and_then(Value::as_object) {
        for (name, p) in props {
            let prop = parse_prop(p)?;
            match name.strip_suffix("[n]") {
                Some(prefix) => object.indexed.insert(prefix.to_string(), prop),
                None => object.props.insert(name.clone(), prop),
            };
        }
    }
    Ok(MethodSchema {
        params: object,
        allow_token: def.get("allowtoken").is_none_or(|v| truthy(Some(v))),
        proxy_to: def.get("proxyto").and_then(Value::as_str).map(str::to_string),
    })
}

fn as_f64(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_prop(p: &Value) -> Result<Prop, String> {
    let text = |key: &str| p.get(key).and_then(Value::as_str).map(str::to_string);
    // A Perl construct the regex crate cannot express leaves that one pattern unchecked.
    let pattern = text("pattern").and_then(|pat| match compile_perl_regex(&pat) {
        Ok(re) => Some(re),
        Err(e) => {
            tracing::warn!(target: "pvesim", "schema pattern not enforced: {e}");
            None
        }
    });
    let format = match p.get("format") {
        Some(Value::String(name)) => Some(Format::Named(name.clone())),
        Some(Value::Object(dict)) => {
            let mut props = BTreeMap::new();
            for (k, v) in dict {
                props.insert(k.clone(), parse_prop(v)?);
            }
            Some(Format::Dict(Arc::new(props)))
        }
        _ => None,
    };
    let items = match p.get("items") {
        Some(item @ Value::Object(_)) => Some(Box::new(parse_prop(item)?)),
        _ => None,
    };
    let enumeration = p
        .get("enum")
        .and_then(Value::as_array)
        .map(|vals| vals.iter().filter_map(crate::pvesim::http::value_text).collect());
    Ok(Prop {
        ty: text("type"),
        optional: truthy(p.get("optional")),
        enumeration,
        pattern,
        minimum: as_f64(p.get("minimum")),
        maximum: as_f64(p.get("maximum")),
        min_length: as_f64(p.get("minLength")).map(|f| f as usize),
        max_length: as_f64(p.get("maxLength")).map(|f| f as usize),
        format,
        requires: text("requires"),
        items,
        alias: text("alias"),
        key_alias: text("keyAlias"),
        default_key: truthy(p.get("default_key")),
    })
}

/// Translates the Perl-isms of schema patterns (`(?^:`, `(?^i:`, `\0`) and anchors the pattern
/// the way `check_prop` does (`m/^$pattern$/`).
pub(crate) fn compile_perl_regex(pattern: &str) -> Result<Regex, String> {
    let translated = pattern
        .replace("(?^i:", "(?i:")
        .replace("(?^:", "(?:")
        .replace("\\0", "\\x00")
        .replace("{,", "{0,");
    Regex::new(&format!("^(?:{translated})$")).map_err(|e| format!("pattern {pattern:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINI: &str = r#"[{"path":"/nodes","children":[{"path":"/nodes/{node}/qemu","info":{"POST":{
        "allowtoken":1,"proxyto":"node","parameters":{"additionalProperties":0,"properties":{
        "node":{"type":"string","format":"pve-node"},
        "vmid":{"type":"integer","format":"pve-vmid","minimum":100},
        "net[n]":{"type":"string","optional":1,"format":{"bridge":{"type":"string","optional":1}}}}}}}}]}]"#;

    #[test]
    fn parse_indexes_methods_and_indexed_keys() {
        let index = SchemaIndex::parse(MINI.as_bytes()).unwrap_or_default();
        let method = index.method("POST", "/nodes/{node}/qemu");
        let method = method.map(|m| {
            (
                m.allow_token,
                m.proxy_to.clone(),
                m.params.lookup("net31").is_some(),
            )
        });
        assert_eq!(method, Some((true, Some("node".to_string()), true)));
        let m = index
            .method("POST", "/nodes/{node}/qemu")
            .map(|m| m.params.lookup("net32").is_none());
        assert_eq!(m, Some(true));
        assert!(SchemaIndex::parse(b"[]").is_err());
    }

    #[test]
    fn perl_regex_translation_anchors_and_handles_flags() {
        let re = compile_perl_regex("(?^i:[a-z]+)")
            .unwrap_or_else(|_| Regex::new("x^").unwrap_or_else(|e| panic!("{e}")));
        assert!(re.is_match("AbC"));
        assert!(!re.is_match("ab1"));
    }
}
