//! Lenient serde helpers for PVE responses, all in one place.
//!
//! PVE is written in Perl, and its JSON shows it (ENDPOINTS.md section 0): booleans arrive as
//! `0`/`1` (sometimes as JSON booleans, sometimes as strings), integers arrive as strings when Perl
//! stringified them (`/cluster/nextid`), keys are missing whenever a value is undefined, and
//! responses carry keys the schema does not list. Response structs therefore:
//! - mark every field that PVE may omit `#[serde(default)]` (missing keys),
//! - never use `deny_unknown_fields` (unknown keys are ignored),
//! - decode booleans and numbers with the functions below (`deserialize_with`).
//!
//! List order is never relied upon: callers sort or look up by key.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn to_bool(v: &Value) -> Option<Option<bool>> {
    Some(match v {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_f64()? != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "" => None,
            "1" | "true" | "yes" | "on" => Some(true),
            "0" | "false" | "no" | "off" => Some(false),
            _ => return None,
        },
        _ => return None,
    })
}

fn to_f64(v: &Value) -> Option<Option<f64>> {
    Some(match v {
        Value::Null => None,
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => Some(n.as_f64()?),
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().parse().ok()?),
        _ => return None,
    })
}

fn integral(f: f64) -> Option<i64> {
    // Integral and well inside i64's range (checked): the cast is exact.
    (f.fract() == 0.0 && f.abs() <= 9.0e15).then_some(f as i64)
}

fn to_i64(v: &Value) -> Option<Option<i64>> {
    Some(match v {
        Value::Null => None,
        Value::Bool(b) => Some(i64::from(*b)),
        Value::Number(n) => Some(n.as_i64().or_else(|| integral(n.as_f64()?))?),
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => {
            let s = s.trim();
            Some(
                s.parse::<i64>()
                    .ok()
                    .or_else(|| integral(s.parse::<f64>().ok()?))?,
            )
        }
        _ => return None,
    })
}

fn lenient<'de, D, T>(d: D, what: &str, conv: fn(&Value) -> Option<Option<T>>) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let v = Value::deserialize(d)?;
    conv(&v).ok_or_else(|| D::Error::custom(format!("expected {what}, got {}", describe(&v))))
}

/// A boolean sent as `0`/`1`, `true`/`false` or a string of either; `null` is `false`.
pub(crate) fn bool_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(lenient(d, "a boolean or 0/1", to_bool)?.unwrap_or(false))
}

/// Like [`bool_lenient`], keeping `null` as `None` (combine with `#[serde(default)]`).
pub(crate) fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    lenient(d, "a boolean or 0/1", to_bool)
}

/// An optional number (int, float or numeric string).
pub(crate) fn opt_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    lenient(d, "a number", to_f64)
}

/// An optional integer (int, integral float or numeric string).
pub(crate) fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    lenient(d, "an integer", to_i64)
}

/// An optional non-negative integer.
pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match opt_i64(d)? {
        None => Ok(None),
        Some(i) => u64::try_from(i)
            .map(Some)
            .map_err(|_| D::Error::custom("expected a non-negative integer")),
    }
}

/// A required non-negative integer (number or numeric string).
pub(crate) fn u64_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    opt_u64(d)?.ok_or_else(|| D::Error::custom("expected an integer, got null"))
}

/// A non-negative integer that PVE may omit or send as `null` (then 0).
pub(crate) fn u64_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(opt_u64(d)?.unwrap_or(0))
}

/// An optional string that PVE sometimes sends as a number (`id`, `level`, `version`).
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(u8::from(b).to_string())),
        other => Err(D::Error::custom(format!(
            "expected a string, got {}",
            describe(&other)
        ))),
    }
}

/// A string that may be missing, `null` or a number (then its decimal form).
pub(crate) fn string_lenient<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(opt_string(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Probe {
        #[serde(default, deserialize_with = "super::bool_lenient")]
        b: bool,
        #[serde(default, deserialize_with = "super::opt_bool")]
        ob: Option<bool>,
        #[serde(default, deserialize_with = "super::opt_u64")]
        n: Option<u64>,
        #[serde(default, deserialize_with = "super::opt_i64")]
        i: Option<i64>,
        #[serde(default, deserialize_with = "super::opt_f64")]
        f: Option<f64>,
        #[serde(default, deserialize_with = "super::opt_string")]
        s: Option<String>,
    }

    fn probe(json: &str) -> Probe {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"))
    }

    #[test]
    fn decode_booleans_accept_int_bool_and_string() {
        for (json, want) in [
            (r#"{"b":1}"#, true),
            (r#"{"b":0}"#, false),
            (r#"{"b":true}"#, true),
            (r#"{"b":"1"}"#, true),
            (r#"{"b":"0"}"#, false),
            (r#"{"b":null}"#, false),
            (r#"{}"#, false),
        ] {
            assert_eq!(probe(json).b, want, "{json}");
        }
        assert_eq!(probe(r#"{"ob":0}"#).ob, Some(false));
        assert_eq!(probe(r#"{"ob":null}"#).ob, None);
        assert!(serde_json::from_str::<Probe>(r#"{"b":"maybe"}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"b":[1]}"#).is_err());
    }

    #[test]
    fn decode_numbers_accept_strings_and_ignore_unknown_keys() {
        let p = probe(r#"{"n":"100","i":"-5","f":"0.25","s":7,"unknown":{"x":1}}"#);
        assert_eq!(
            (p.n, p.i, p.f, p.s.as_deref()),
            (Some(100), Some(-5), Some(0.25), Some("7"))
        );
        let p = probe(r#"{"n":100,"i":3.0,"f":1}"#);
        assert_eq!((p.n, p.i, p.f), (Some(100), Some(3), Some(1.0)));
        assert_eq!(probe("{}"), probe(r#"{"n":null,"s":null}"#));
        assert!(serde_json::from_str::<Probe>(r#"{"n":-1}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"n":"ten"}"#).is_err());
        assert!(serde_json::from_str::<Probe>(r#"{"i":1.5}"#).is_err());
    }
}
