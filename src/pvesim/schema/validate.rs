//! Parameter validation: a port of `PVE::JSONSchema::check_prop`/`check_object`/
//! `parse_property_string` with PVE's exact messages, plus RESTHandler's legacy normalisation
//! (arrays for `-list` strings are joined with commas, a scalar for an array becomes `[scalar]`).

use std::collections::BTreeMap;

use serde_json::Value;

use super::formats::check_named;
use super::propstring::parse_property_string;
use super::{Format, ObjectSchema, Prop};
use crate::pvesim::http::{ApiError, Params, value_text};

pub(crate) type Errors = BTreeMap<String, String>;

pub(crate) fn add_error(errors: &mut Errors, path: &str, msg: impl Into<String>) {
    let path = if path.is_empty() { "_root" } else { path };
    let msg = msg.into();
    match errors.get_mut(path) {
        Some(existing) => {
            existing.push_str("\\n");
            existing.push_str(&msg);
        }
        None => {
            errors.insert(path.to_string(), msg);
        }
    }
}

/// Validates (and normalises) request parameters against a method's schema.
pub(crate) fn validate(schema: &ObjectSchema, params: &mut Params) -> Result<(), ApiError> {
    normalize(schema, params);
    let mut errors = Errors::new();
    for (name, prop) in &schema.props {
        check_prop(params.get(name), prop, name, &mut errors);
    }
    for (name, value) in &params.0 {
        if let Some(prop) = schema.props.get(name) {
            check_requires(prop, name, "", params, &mut errors);
            continue;
        }
        match schema.lookup(name) {
            Some(prop) => {
                check_prop(Some(value), prop, name, &mut errors);
                check_requires(prop, name, "", params, &mut errors);
            }
            None if !schema.additional => add_error(
                &mut errors,
                name,
                "property is not defined in schema and the schema does not allow additional properties",
            ),
            None => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::params(errors))
    }
}

fn check_requires(prop: &Prop, name: &str, path: &str, params: &Params, errors: &mut Errors) {
    if let Some(required) = &prop.requires
        && params.get(required).is_none_or(|v| v.is_null())
    {
        let target = if path.is_empty() {
            required.clone()
        } else {
            format!("{path}.{required}")
        };
        add_error(
            errors,
            &target,
            format!("missing property - '{name}' requires this property"),
        );
    }
}

fn normalize(schema: &ObjectSchema, params: &mut Params) {
    for (key, value) in params.0.iter_mut() {
        let Some(prop) = schema.lookup(key) else { continue };
        let ty = prop.ty.as_deref().unwrap_or("");
        let is_list = matches!(&prop.format, Some(Format::Named(n)) if n.ends_with("-list"));
        match value {
            Value::Array(items) if ty == "string" => {
                let sep = if is_list { "," } else { "\0" };
                let parts: Vec<String> = items.iter().filter_map(value_text).collect();
                *value = Value::String(parts.join(sep));
            }
            Value::Array(_) | Value::Null => {}
            _ if ty == "array" => {
                let scalar = std::mem::take(value);
                *value = Value::Array(vec![scalar]);
            }
            _ => {}
        }
    }
}

fn is_integer(text: &str) -> bool {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Perl's `is_number` from JSONSchema.pm.
pub(crate) fn is_number(text: &str) -> bool {
    let s = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((a, b)) => {
            (!a.is_empty() || !b.is_empty())
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|c| c.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(is_integer);
    mantissa_ok && exponent_ok
}

/// Returns the scalar text when the type check passes.
fn check_type(path: &str, ty: Option<&str>, value: &Value, errors: &mut Errors) -> bool {
    let Some(ty) = ty else { return true };
    if ty == "any" {
        return true;
    }
    let perl_ref = match value {
        Value::Array(_) => Some("ARRAY"),
        Value::Object(_) => Some("HASH"),
        Value::Bool(_) => Some("JSON::PP::Boolean"),
        _ => None,
    };
    match ty {
        "array" | "object" => {
            let ok = (ty == "array" && value.is_array()) || (ty == "object" && value.is_object());
            if !ok {
                add_error(errors, path, format!("type check ('{ty}') failed"));
            }
            ok
        }
        _ if perl_ref.is_some() => {
            if ty == "boolean" && value.is_boolean() {
                return true;
            }
            add_error(
                errors,
                path,
                format!("type check ('{ty}') failed - got {}", perl_ref.unwrap_or("")),
            );
            false
        }
        _ => {
            let text = value_text(value).unwrap_or_default();
            let ok = match ty {
                "boolean" => text == "1" || text == "0",
                "integer" => is_integer(&text),
                "number" => is_number(&text),
                _ => true,
            };
            if !ok {
                add_error(errors, path, format!("type check ('{ty}') failed - got '{text}'"));
            }
            ok
        }
    }
}

/// `check_prop`: one value against one property schema.
pub(crate) fn check_prop(value: Option<&Value>, prop: &Prop, path: &str, errors: &mut Errors) {
    let value = match value {
        Some(v) if !v.is_null() => v,
        _ => {
            if !prop.optional && prop.alias.is_none() {
                add_error(errors, path, "property is missing and it is not optional");
            }
            return;
        }
    };
    if !check_type(path, prop.ty.as_deref(), value, errors) {
        return;
    }
    match value {
        Value::Array(items) => {
            if let Some(item_schema) = &prop.items {
                for (i, item) in items.iter().enumerate() {
                    check_prop(Some(item), item_schema, &format!("{path}[{i}]"), errors);
                }
            }
        }
        Value::Object(_) => {}
        _ => check_scalar(&value_text(value).unwrap_or_default(), prop, path, errors),
    }
}

fn check_scalar(text: &str, prop: &Prop, path: &str, errors: &mut Errors) {
    if let Some(format) = &prop.format {
        let result = match format {
            Format::Named(name) => check_named(name, text),
            Format::Dict(dict) => parse_property_string(dict, text, path).map(|_| ()),
        };
        if let Err(msg) = result {
            add_error(errors, path, format!("invalid format - {msg}"));
            return;
        }
    }
    if let Some(pattern) = &prop.pattern
        && !pattern.is_match(text)
    {
        add_error(errors, path, "value does not match the regex pattern");
        return;
    }
    let chars = text.chars().count();
    if let Some(max) = prop.max_length
        && chars > max
    {
        add_error(errors, path, format!("value may only be {max} characters long"));
        return;
    }
    if let Some(min) = prop.min_length
        && chars < min
    {
        add_error(
            errors,
            path,
            format!("value must be at least {min} characters long"),
        );
        return;
    }
    if is_number(text)
        && let Ok(number) = text.parse::<f64>()
    {
        if let Some(max) = prop.maximum
            && number > max
        {
            add_error(
                errors,
                path,
                format!("value must have a maximum value of {}", perl_num(max)),
            );
            return;
        }
        if let Some(min) = prop.minimum
            && number < min
        {
            add_error(
                errors,
                path,
                format!("value must have a minimum value of {}", perl_num(min)),
            );
            return;
        }
    }
    if let Some(values) = &prop.enumeration
        && !values.iter().any(|v| v == text)
    {
        add_error(
            errors,
            path,
            format!(
                "value '{text}' does not have a value in the enumeration '{}'",
                values.join(", ")
            ),
        );
    }
}

fn perl_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        f.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::super::compile_perl_regex;
    use super::*;
    use std::sync::Arc;

    fn prop(ty: &str) -> Prop {
        Prop {
            ty: Some(ty.into()),
            ..Prop::default()
        }
    }

    fn schema() -> ObjectSchema {
        let mut props = BTreeMap::new();
        props.insert(
            "vmid".into(),
            Prop {
                format: Some(Format::Named("pve-vmid".into())),
                minimum: Some(100.0),
                ..prop("integer")
            },
        );
        props.insert(
            "full".into(),
            Prop {
                optional: true,
                ..prop("boolean")
            },
        );
        props.insert(
            "mode".into(),
            Prop {
                optional: true,
                enumeration: Some(vec!["snapshot".into(), "stop".into()]),
                ..prop("string")
            },
        );
        props.insert(
            "name".into(),
            Prop {
                optional: true,
                max_length: Some(5),
                pattern: compile_perl_regex("[a-z]+").ok(),
                ..prop("string")
            },
        );
        props.insert(
            "vmids".into(),
            Prop {
                optional: true,
                format: Some(Format::Named("pve-vmid-list".into())),
                ..prop("string")
            },
        );
        let mut net = BTreeMap::new();
        net.insert(
            "bridge".into(),
            Prop {
                optional: true,
                format: Some(Format::Named("pve-bridge-id".into())),
                ..prop("string")
            },
        );
        net.insert(
            "model".into(),
            Prop {
                enumeration: Some(vec!["virtio".into()]),
                ..prop("string")
            },
        );
        net.insert(
            "macaddr".into(),
            Prop {
                optional: true,
                format: Some(Format::Named("mac-addr".into())),
                ..prop("string")
            },
        );
        net.insert(
            "virtio".into(),
            Prop {
                alias: Some("macaddr".into()),
                key_alias: Some("model".into()),
                ..Prop::default()
            },
        );
        let mut indexed = BTreeMap::new();
        indexed.insert(
            "net".into(),
            Prop {
                optional: true,
                format: Some(Format::Dict(Arc::new(net))),
                ..prop("string")
            },
        );
        ObjectSchema {
            props,
            indexed,
            additional: false,
        }
    }

    fn errors_of(query: &str) -> BTreeMap<String, String> {
        let mut params = Params::default();
        params.merge_urlencoded(query);
        validate(&schema(), &mut params)
            .err()
            .map(|e| e.errors)
            .unwrap_or_default()
    }

    #[test]
    fn validate_reports_pve_messages_per_rule() {
        assert!(errors_of("vmid=100&full=1&mode=stop&name=abc&net0=virtio%3DBC%3A24%3A11%3A00%3A00%3A01%2Cbridge%3Dvmbr0").is_empty());
        let not_in_schema =
            "property is not defined in schema and the schema does not allow additional properties";
        let bad_vmid = "invalid format - value does not look like a valid VM ID\n";
        for (query, field, message) in [
            ("", "vmid", "property is missing and it is not optional"),
            ("vmid=100&x=1", "x", not_in_schema),
            ("vmid=abc", "vmid", "type check ('integer') failed - got 'abc'"),
            (
                "vmid=100&full=true",
                "full",
                "type check ('boolean') failed - got 'true'",
            ),
            ("vmid=99", "vmid", bad_vmid),
            (
                "vmid=100&mode=fast",
                "mode",
                "value 'fast' does not have a value in the enumeration 'snapshot, stop'",
            ),
            (
                "vmid=100&name=ABC",
                "name",
                "value does not match the regex pattern",
            ),
            (
                "vmid=100&name=abcdefg",
                "name",
                "value may only be 5 characters long",
            ),
            ("vmid=100&vmids=100,7", "vmids", bad_vmid),
            (
                "vmid=100&net0=foo%3D1",
                "net0",
                "invalid format - invalid key in comma-separated list property: foo\n",
            ),
            ("vmid=100&net40=x", "net40", not_in_schema),
        ] {
            assert_eq!(errors_of(query)[field], message, "{query}");
        }
        assert!(errors_of("vmid=100&net0=virtio%3Dxx")["net0"].starts_with("invalid format - format error\nnet0.macaddr: invalid format - value does not look like a valid unicast MAC address"));
    }

    #[test]
    fn json_booleans_pass_and_minimum_is_checked_after_format() {
        let mut params = Params::default();
        let merged = params.merge_json(br#"{"vmid":"100","full":true}"#);
        assert!(merged.is_ok());
        assert!(validate(&schema(), &mut params).is_ok());
        let mut p = Prop {
            minimum: Some(1.0),
            ..prop("integer")
        };
        p.optional = true;
        let mut errors = Errors::new();
        check_prop(Some(&Value::from(0)), &p, "x", &mut errors);
        assert_eq!(errors["x"], "value must have a minimum value of 1");
        assert!(is_number("1.5e3") && is_number(".5") && !is_number("1.2.3") && !is_number("e5"));
    }
}
