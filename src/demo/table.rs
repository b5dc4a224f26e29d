//! `kubectl get` output without Kubernetes: the printer columns come from the generated CRDs
//! (never repeated here), cells are computed the way the API server's CRD table convertor does
//! (simple JSONPath, `date` columns as human durations, missing values empty), and the text is
//! laid out like kubectl's tab writer (minimum width 6, padding 3).

use jiff::Timestamp;
use serde_json::Value;

use crate::crd::generate::crds;

/// One printer column of a CRD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// Column name as declared (`Connected`); kubectl prints it upper-cased.
    pub name: String,
    /// `string`, `integer`, `number`, `boolean` or `date`.
    pub type_: String,
    /// JSONPath, e.g. `.status.conditions[?(@.type=="Ready")].status`.
    pub json_path: String,
    /// 0 for the default view; higher only with `-o wide`.
    pub priority: i32,
}

/// The printer columns of the CRD whose plural is `plural`, in declaration order (empty for an
/// unknown plural).
pub fn columns(plural: &str) -> Vec<Column> {
    crds()
        .into_iter()
        .filter(|c| c.spec.names.plural == plural)
        .flat_map(|c| c.spec.versions.into_iter().take(1))
        .flat_map(|v| v.additional_printer_columns.unwrap_or_default())
        .map(|c| Column {
            name: c.name,
            type_: c.type_,
            json_path: c.json_path,
            priority: c.priority.unwrap_or(0),
        })
        .collect()
}

/// One step of a (simple) JSONPath.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Field(String),
    Filter { field: String, equals: String },
}

fn parse(path: &str) -> Option<Vec<Step>> {
    let mut steps = Vec::new();
    let mut rest = path.strip_prefix('.')?;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("[?(@.") {
            let (cond, tail) = after.split_once(")]")?;
            let (field, value) = cond.split_once("==")?;
            let equals = value.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
            steps.push(Step::Filter {
                field: field.trim().to_owned(),
                equals,
            });
            rest = tail.strip_prefix('.').unwrap_or(tail);
            continue;
        }
        let end = rest.find(['.', '[']).unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        steps.push(Step::Field(rest[..end].to_owned()));
        rest = &rest[end..];
        rest = rest.strip_prefix('.').unwrap_or(rest);
    }
    Some(steps)
}

/// The first value `path` selects in `obj` (the API server uses the first result), `None` when
/// it selects nothing or the path is not of the supported shape (`.a.b`, `[?(@.k=="v")]`).
pub fn select<'a>(path: &str, obj: &'a Value) -> Option<&'a Value> {
    let mut current = obj;
    for step in parse(path)? {
        current = match step {
            Step::Field(f) => current.get(&f)?,
            Step::Filter { field, equals } => current
                .as_array()?
                .iter()
                .find(|item| item.get(&field).and_then(Value::as_str) == Some(equals.as_str()))?,
        };
    }
    Some(current)
}

/// kubectl's `HumanDuration` of `seconds` (`3d`, `12m`, `2m5s`, `45s`).
pub fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    if seconds < 0 {
        return "0s".into();
    }
    if seconds < 120 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 180 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let days = (hours / 24) % 365;
        return if days == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{days}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

/// The cell of `column` for `obj` at `now`, as the API server's table convertor computes it:
/// `None` when the path selects nothing (kubectl prints an empty cell).
pub fn cell(column: &Column, obj: &Value, now: Timestamp) -> Option<String> {
    let value = select(&column.json_path, obj)?;
    match (column.type_.as_str(), value) {
        ("date", Value::String(s)) => Some(match s.parse::<Timestamp>() {
            Ok(t) => human_duration(now.as_second() - t.as_second()),
            Err(_) => "<invalid>".into(),
        }),
        ("date", _) => None,
        ("string", Value::String(s)) => Some(s.clone()),
        ("string", Value::Null) => None,
        ("string", other) => Some(other.to_string()),
        ("integer", Value::Number(n)) => n.as_i64().map(|i| i.to_string()),
        ("number", Value::Number(n)) => Some(n.to_string()),
        ("boolean", Value::Bool(b)) => Some(b.to_string()),
        _ => None,
    }
}

/// Lays out rows like kubectl's tab writer: every column but the last padded to its widest cell
/// plus 3, at least 6.
pub fn tabulate(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(6)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                line.push_str(c);
                line.push_str(&" ".repeat(widths[i] - c.chars().count()));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// What `kubectl get <plural>` prints for `objects` (JSON of the stored objects) at `now`:
/// NAME and the default-priority printer columns, or `No resources found.`.
pub fn render(plural: &str, objects: &[Value], now: Timestamp) -> String {
    if objects.is_empty() {
        return "No resources found.\n".into();
    }
    let columns: Vec<Column> = columns(plural).into_iter().filter(|c| c.priority == 0).collect();
    let mut rows = vec![
        std::iter::once("NAME".to_owned())
            .chain(columns.iter().map(|c| c.name.to_uppercase()))
            .collect::<Vec<_>>(),
    ];
    for obj in objects {
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let mut row = vec![name];
        row.extend(columns.iter().map(|c| {
            let text = cell(c, obj, now).unwrap_or_default();
            // kubectl shows the first line of a multi-line string, then "...".
            match text.split_once('\n') {
                Some((first, _)) => format!("{first}..."),
                None => text,
            }
        }));
        rows.push(row);
    }
    tabulate(&rows)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn columns_come_from_the_crds_for_every_kind() {
        let names: Vec<String> = columns("proxmoxclusters").into_iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            ["Connected", "Quorate", "Nodes", "Version", "Endpoint", "Age"]
        );
        assert_eq!(columns("proxmoxclusters")[4].priority, 1);
        for plural in [
            "services",
            "backuppolicies",
            "updatepolicies",
            "restoretests",
            "replicationjobs",
        ] {
            let cols = columns(plural);
            assert!(!cols.is_empty(), "{plural}");
            for c in cols {
                assert!(
                    parse(&c.json_path).is_some(),
                    "{plural}: unsupported path {}",
                    c.json_path
                );
            }
        }
        assert!(columns("nonsense").is_empty());
    }

    #[test]
    fn select_follows_fields_and_condition_filters() {
        let obj = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False"}, {"type": "Healthy", "status": "True"}
        ], "node": "pve2"}, "spec": {"vmid": 200}});
        let path = ".status.conditions[?(@.type==\"Healthy\")].status";
        assert_eq!(select(path, &obj), Some(&json!("True")));
        assert_eq!(
            select(".status.conditions[?(@.type==\"Quorate\")].status", &obj),
            None
        );
        assert_eq!(select(".spec.vmid", &obj), Some(&json!(200)));
        assert_eq!(select(".status.missing", &obj), None);
        assert_eq!(select("status", &obj), None, "paths start with a dot");
    }

    #[test]
    fn human_duration_matches_kubectl() {
        for (secs, want) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (125, "2m5s"),
            (600, "10m"),
            (629, "10m"),
            (3 * 3600 - 1, "179m"),
            (3 * 3600, "3h"),
            (3 * 3600 + 60, "3h1m"),
            (8 * 3600, "8h"),
            (47 * 3600, "47h"),
            (3 * 86400 + 1800, "3d"),
            (3 * 86400 + 5 * 3600, "3d5h"),
            (30 * 86400, "30d"),
            (3 * 365 * 86400, "3y"),
            (3 * 365 * 86400 + 86400 * 2, "3y2d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(human_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn render_lays_out_like_kubectl() {
        let now: Timestamp = "2025-01-01T01:00:00Z".parse().unwrap();
        let objects = [
            json!({"metadata": {"name": "nextcloud", "creationTimestamp": "2025-01-01T00:50:00Z"},
                   "spec": {"vmid": 200, "type": "VM"},
                   "status": {"node": "pve2", "powerState": "Running", "startTime": "2024-12-29T00:00:00Z",
                              "conditions": [{"type": "Healthy", "status": "True"}]}}),
            json!({"metadata": {"name": "gitea", "creationTimestamp": "2025-01-01T00:59:30Z"},
                   "spec": {"vmid": 201, "type": "LXC"}}),
        ];
        let text = render("services", &objects, now);
        let want = "\
NAME        NODE   VMID   TYPE   POWER     HEALTHY   UP     AGE
nextcloud   pve2   200    VM     Running   True      3d1h   10m
gitea              201    LXC                               30s
";
        assert_eq!(text, want);
        assert_eq!(render("services", &[], now), "No resources found.\n");
    }
}
