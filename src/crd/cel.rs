//! Builders for the CEL `x-kubernetes-validations` rules in our CRDs.
//!
//! The rules must run on Kubernetes 1.28, whose CEL has no IP/CIDR library and no `cel.bind`:
//! IPv4 arithmetic is done on dotted quads with `split` and `int`, spelled out by these
//! helpers instead of by hand in attributes. Every string the rules read carries a `maxLength`
//! and every list a `maxItems`, so the apiserver's cost estimate stays inside its budget.

use kube::core::{Message, Rule};

/// CEL integer value of the dotted-quad IPv4 address held by the string expression `ip`.
pub fn ipv4_int(ip: &str) -> String {
    let octet = |i: usize| format!("int({ip}.split('.')[{i}])");
    format!(
        "({} * 16777216 + {} * 65536 + {} * 256 + {})",
        octet(0),
        octet(1),
        octet(2),
        octet(3)
    )
}

/// CEL integer value of the network address of the CIDR string expression `cidr`.
fn cidr_base(cidr: &str) -> String {
    ipv4_int(&format!("{cidr}.split('/')[0]"))
}

/// CEL integer number of addresses in the CIDR string expression `cidr` (2^(32-prefix)).
fn cidr_size(cidr: &str) -> String {
    let sizes: Vec<String> = (0..=32u32).map(|p| (1u64 << (32 - p)).to_string()).collect();
    format!("[{}][int({cidr}.split('/')[1])]", sizes.join(", "))
}

/// CEL: the IPv4 string expression `ip` lies inside the CIDR string expression `cidr`.
pub fn ipv4_in_cidr(ip: &str, cidr: &str) -> String {
    let (v, base) = (ipv4_int(ip), cidr_base(cidr));
    format!("({v} >= {base} && {v} < {base} + {})", cidr_size(cidr))
}

/// CEL: the CIDR string expression `cidr` has no host bits set (`192.168.1.0/24`, not `.5/24`).
pub fn cidr_is_aligned(cidr: &str) -> String {
    format!("{} % {} == 0", cidr_base(cidr), cidr_size(cidr))
}

/// CEL: the inclusive IPv4 ranges `a` and `b` (objects with `start`/`end`) do not overlap.
pub fn ipv4_ranges_disjoint(a: &str, b: &str) -> String {
    format!(
        "({} < {} || {} < {})",
        ipv4_int(&format!("{a}.end")),
        ipv4_int(&format!("{b}.start")),
        ipv4_int(&format!("{b}.end")),
        ipv4_int(&format!("{a}.start"))
    )
}

/// CEL: exactly one of the optional fields of `self` is set.
pub fn exactly_one_of(fields: &[&str]) -> String {
    format!("{} == 1", count_set(fields))
}

/// CEL: at most one of the optional fields of `self` is set.
pub fn at_most_one_of(fields: &[&str]) -> String {
    format!("{} <= 1", count_set(fields))
}

fn count_set(fields: &[&str]) -> String {
    fields
        .iter()
        .map(|f| format!("(has(self.{f}) ? 1 : 0)"))
        .collect::<Vec<_>>()
        .join(" + ")
}

/// A rule with a fixed message (the message names the field and the fix).
pub fn rule(expr: impl Into<String>, message: &str) -> Rule {
    Rule::new(expr).message(Message::Message(message.to_string()))
}

/// A transition rule making the field immutable once set: changing it would orphan what the
/// operator already manages under the old value.
pub fn immutable(what: &str) -> Rule {
    rule(
        "self == oldSelf",
        &format!("{what} is immutable; delete and re-create the resource to change it"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Evaluates `expr` against `value` with kube-rs's client-side CEL evaluator.
    fn eval(expr: &str, schema: Value, value: Value) -> bool {
        let mut schema = schema;
        schema["x-kubernetes-validations"] = json!([{ "rule": expr }]);
        kube_cel::Validator::new().validate(&schema, &value, None).is_ok()
    }

    fn net_schema() -> Value {
        let s = json!({"type": "string", "maxLength": 18});
        let range = json!({"type": "object", "properties": {"start": s, "end": s}});
        json!({"type": "object", "properties": {"ip": s, "cidr": s, "a": range, "b": range}})
    }

    #[test]
    fn ipv4_in_cidr_matches_subnet_membership() {
        let expr = ipv4_in_cidr("self.ip", "self.cidr");
        let check = |ip: &str, cidr: &str| eval(&expr, net_schema(), json!({"ip": ip, "cidr": cidr}));
        assert!(check("192.168.1.100", "192.168.1.0/24"));
        assert!(check("192.168.1.255", "192.168.1.0/24"));
        assert!(!check("192.168.2.1", "192.168.1.0/24"));
        assert!(check("10.1.255.254", "10.0.0.0/15"));
        assert!(!check("10.2.0.0", "10.0.0.0/15"));
        assert!(check("8.8.8.8", "0.0.0.0/0"));
        assert!(check("10.0.0.7", "10.0.0.7/32"));
        assert!(!check("10.0.0.8", "10.0.0.7/32"));
    }

    #[test]
    fn cidr_is_aligned_rejects_host_bits() {
        let expr = cidr_is_aligned("self.cidr");
        let check = |cidr: &str| eval(&expr, net_schema(), json!({"cidr": cidr}));
        assert!(check("192.168.1.0/24"));
        assert!(!check("192.168.1.5/24"));
        assert!(check("192.168.1.5/32"));
    }

    #[test]
    fn ipv4_ranges_disjoint_detects_overlap() {
        let expr = ipv4_ranges_disjoint("self.a", "self.b");
        let check = |a: (&str, &str), b: (&str, &str)| {
            let v = json!({"a": {"start": a.0, "end": a.1}, "b": {"start": b.0, "end": b.1}});
            eval(&expr, net_schema(), v)
        };
        assert!(check(("10.0.0.1", "10.0.0.9"), ("10.0.0.10", "10.0.0.20")));
        assert!(!check(("10.0.0.1", "10.0.0.10"), ("10.0.0.10", "10.0.0.20")));
        assert!(!check(("10.0.0.5", "10.0.0.6"), ("10.0.0.1", "10.0.0.20")));
        assert!(check(("10.0.1.0", "10.0.1.9"), ("10.0.0.0", "10.0.0.255")));
    }

    #[test]
    fn one_of_counts_set_fields() {
        let schema =
            json!({"type": "object", "properties": {"x": {"type": "string"}, "y": {"type": "string"}}});
        let one = exactly_one_of(&["x", "y"]);
        let most = at_most_one_of(&["x", "y"]);
        assert!(eval(&one, schema.clone(), json!({"x": "a"})));
        assert!(!eval(&one, schema.clone(), json!({})));
        assert!(!eval(&one, schema.clone(), json!({"x": "a", "y": "b"})));
        assert!(eval(&most, schema.clone(), json!({})));
        assert!(!eval(&most, schema, json!({"x": "a", "y": "b"})));
    }

    #[test]
    fn immutable_rule_names_the_field() {
        let r = immutable("vmid");
        assert_eq!(r.rule, "self == oldSelf");
        assert!(matches!(r.message, Some(Message::Message(m)) if m.starts_with("vmid is immutable")));
    }
}
