//! Builders for the CEL `x-kubernetes-validations` rules in our CRDs.
//!
//! The rules must run on Kubernetes 1.28, whose CEL has no IP/CIDR library and no `cel.bind`:
//! IPv4 arithmetic is done on dotted quads with `split` and `int`, spelled out by these
//! helpers instead of by hand in attributes. Every string the rules read carries a `maxLength`
//! and every list a `maxItems`, so the apiserver's cost estimate stays inside its budget.

use kube::core::{Message, Rule};

use super::common::{CRON_FIELDS, CRON_PATTERN};

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

/// A rule for a cron `schedule` string (next to its [`CRON_PATTERN`] `pattern`) that names the
/// cron field at fault. With the pattern alone the API server answers "should match" and
/// quotes the whole expression; this rule adds, for a five-field schedule the pattern
/// refuses, which field it is and what that field takes.
pub fn cron_fields_rule() -> Rule {
    const SHAPE: &str = "^[^ ]+( +[^ ]+){4}$";
    let literal = |regex: &str| format!("'{}'", regex.replace('\\', "\\\\"));
    let message = CRON_FIELDS.iter().enumerate().rev().fold(
        literal("a field is out of range"),
        |otherwise, (i, (name, pattern, allowed))| {
            let unanchored = &pattern[1..pattern.len() - 1];
            let at = literal(&format!("^([^ ]+ +){{{i}}}({unanchored})( |$)"));
            let says = literal(&format!(
                "the {name} field (field {}) is out of range: it takes {allowed}, `*`, \
                     ranges a-b, lists a,b and steps */n or a-b/n",
                i + 1
            ));
            format!("!self.matches({at}) ? {says} : ({otherwise})")
        },
    );
    Rule::new(format!(
        "!self.matches({}) || self.matches({})",
        literal(SHAPE),
        literal(CRON_PATTERN)
    ))
    .message(Message::Expression(message))
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

    /// The messages of `rule` failing on `value` (a string with a 128-character limit).
    fn failures(rule: &Rule, value: &str) -> Vec<String> {
        let schema = json!({
            "type": "string", "maxLength": 128,
            "x-kubernetes-validations": [serde_json::to_value(rule).unwrap()]
        });
        match kube_cel::Validator::new().validate(&schema, &json!(value), None) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn cron_fields_rule_names_the_field_out_of_range() {
        let rule = cron_fields_rule();
        for ok in ["30 2 * * *", "*/5 8-18/2 1,15 JAN-MAR mon-fri", "@daily"] {
            assert_eq!(failures(&rule, ok), Vec::<String>::new(), "{ok}");
        }
        // Not five fields, or a macro: the pattern alone refuses these.
        for other in ["@reboot", "* * * *", "every day"] {
            assert_eq!(failures(&rule, other), Vec::<String>::new(), "{other}");
        }
        for (bad, field) in [
            ("60 3 * * *", "the minute field (field 1)"),
            ("0 25 * * *", "the hour field (field 2)"),
            ("0 0 32 * *", "the day-of-month field (field 3)"),
            ("0 0 1 13 *", "the month field (field 4)"),
            ("0 4 * * 8", "the day-of-week field (field 5)"),
            ("0 25 * * 8", "the hour field (field 2)"),
        ] {
            let errors = failures(&rule, bad);
            assert!(
                errors.len() == 1 && errors[0].contains(field),
                "{bad}: {errors:?}"
            );
        }
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
