//! `PVE::JSONSchema::parse_property_string`: `key=value,...` values (`net0`, `scsi0`,
//! `rootfs`...) checked key by key against their dict format, with the same `die` texts.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Prop;
use super::validate::{Errors, add_error, check_prop};

fn parse_boolean(v: &str) -> Option<&'static str> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some("1"),
        "0" | "off" | "no" | "false" => Some("0"),
        _ => None,
    }
}

/// `parse_property_string`: `key=value,...` against a dict format. Errors are the text of the
/// Perl `die` (without the `invalid format - ` prefix the caller adds).
pub(crate) fn parse_property_string(
    format: &BTreeMap<String, Prop>,
    data: &str,
    path: &str,
) -> Result<BTreeMap<String, String>, String> {
    let mut res: BTreeMap<String, String> = BTreeMap::new();
    let mut default_key: Option<String> = None;
    for part in data.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                if res.contains_key(k) {
                    return Err(format!("duplicate key in comma-separated list property: {k}\n"));
                }
                let mut key = k.to_string();
                let mut schema = format.get(k);
                if let Some(alias) = schema.and_then(|s| s.alias.clone()) {
                    if let Some(key_alias) = schema.and_then(|s| s.key_alias.clone()) {
                        if res.contains_key(&key_alias) {
                            return Err(format!("key alias '{key_alias}' is already defined\n"));
                        }
                        res.insert(key_alias, k.to_string());
                    }
                    schema = format.get(&alias);
                    key = alias;
                }
                let schema =
                    schema.ok_or_else(|| format!("invalid key in comma-separated list property: {key}\n"))?;
                let value = if schema.ty.as_deref() == Some("boolean") {
                    parse_boolean(v)
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                } else {
                    v.to_string()
                };
                res.insert(key, value);
            }
            None => {
                if let Some(dk) = &default_key {
                    return Err(format!("duplicate key in comma-separated list property: {dk}\n"));
                }
                let dk = format
                    .iter()
                    .find(|(_, p)| p.default_key)
                    .map(|(k, _)| k.clone())
                    .ok_or("value without key, but schema does not define a default key\n")?;
                if res.contains_key(&dk) {
                    return Err(format!("duplicate key in comma-separated list property: {dk}\n"));
                }
                res.insert(dk.clone(), part.to_string());
                default_key = Some(dk);
            }
            Some(_) => return Err("missing key in comma-separated list property\n".into()),
        }
    }
    let mut errors = Errors::new();
    for (key, prop) in format {
        let sub = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        check_prop(
            res.get(key).map(|v| Value::String(v.clone())).as_ref(),
            prop,
            &sub,
            &mut errors,
        );
    }
    for key in res.keys() {
        if !format.contains_key(key) {
            let sub = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            add_error(
                &mut errors,
                &sub,
                "property is not defined in schema and the schema does not allow additional properties",
            );
        }
    }
    if errors.is_empty() {
        Ok(res)
    } else {
        let mut msg = "format error\n".to_string();
        for (k, v) in &errors {
            msg.push_str(&format!("{k}: {v}\n"));
        }
        Err(msg)
    }
}
