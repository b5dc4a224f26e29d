//! Pieces shared by several kinds: schedules, retention, selectors, ranges, policies, and the
//! patterns that validate Proxmox names in the CRD schema.

use std::collections::BTreeMap;

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validation::{Errors, parse_cron, time_zone};

/// One cron field over `$value` (a regex alternation of the values the field allows): a
/// comma-separated list of items, each `*` or a range `a-b` with an optional step `/n` (1-99),
/// or a single value (croner refuses `5/15`). Plain groups and alternations only, so the API
/// server (RE2), ECMA-262 checkers and the `regex` crate read it alike.
macro_rules! cron_field {
    ($value:literal) => {
        concat!(
            "(\\*(/[1-9][0-9]?)?|(",
            $value,
            ")(-(",
            $value,
            ")(/[1-9][0-9]?)?)?)",
            "(,(\\*(/[1-9][0-9]?)?|(",
            $value,
            ")(-(",
            $value,
            ")(/[1-9][0-9]?)?)?))*"
        )
    };
}
macro_rules! cron_minute {
    () => {
        cron_field!("[0-5]?[0-9]")
    };
}
macro_rules! cron_hour {
    () => {
        cron_field!("[01]?[0-9]|2[0-3]")
    };
}
macro_rules! cron_day_of_month {
    () => {
        cron_field!("0?[1-9]|[12][0-9]|3[01]")
    };
}
macro_rules! cron_month {
    () => {
        cron_field!(
            "0?[1-9]|1[0-2]|JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
        )
    };
}
macro_rules! cron_day_of_week {
    () => {
        cron_field!("[0-7]|SUN|MON|TUE|WED|THU|FRI|SAT|sun|mon|tue|wed|thu|fri|sat")
    };
}
macro_rules! cron_macros {
    () => {
        "@(yearly|annually|monthly|weekly|daily|hourly)"
    };
}

/// A cron schedule: 5 fields (minute hour day-of-month month day-of-week) separated by spaces,
/// each field bounded to its values (`*`, values, ranges, lists, steps; month and weekday also
/// by name, in upper or lower case), or one of the macros `@yearly`, `@annually`, `@monthly`,
/// `@weekly`, `@daily`, `@hourly`. The API server refuses anything else at admission;
/// [`crate::crd::validation::parse_cron`] applies the same pattern and names the bad field.
pub const CRON_PATTERN: &str = concat!(
    "^(",
    cron_macros!(),
    "|",
    cron_minute!(),
    " +",
    cron_hour!(),
    " +",
    cron_day_of_month!(),
    " +",
    cron_month!(),
    " +",
    cron_day_of_week!(),
    ")$"
);
/// The five cron fields in order: name, anchored pattern of one field, and the values allowed
/// (for error messages).
pub const CRON_FIELDS: [(&str, &str, &str); 5] = [
    ("minute", concat!("^", cron_minute!(), "$"), "0-59"),
    ("hour", concat!("^", cron_hour!(), "$"), "0-23"),
    ("day-of-month", concat!("^", cron_day_of_month!(), "$"), "1-31"),
    ("month", concat!("^", cron_month!(), "$"), "1-12 or JAN-DEC"),
    (
        "day-of-week",
        concat!("^", cron_day_of_week!(), "$"),
        "0-7 (0 and 7 are Sunday) or SUN-SAT",
    ),
];

/// Shape of an IANA time zone name (`UTC`, `Europe/Berlin`, `America/Argentina/Salta`).
pub const TIME_ZONE_PATTERN: &str = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$";
/// A lowercase name of a list entry (an RFC 1123 DNS label: health checks, backup servers).
pub const ENTRY_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A Proxmox VE node name (DNS label).
pub const NODE_PATTERN: &str = r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$";
/// A Proxmox VE storage ID (`local-lvm`, `pbs-main`, `nfs.backup`).
pub const STORAGE_PATTERN: &str = r"^[a-zA-Z][a-zA-Z0-9_.-]*[a-zA-Z0-9]$";
/// A Linux bridge or SDN VNet name (`vmbr0`, `vmbr99`, `isolated`), at most 15 characters.
pub const BRIDGE_PATTERN: &str = r"^[a-zA-Z][a-zA-Z0-9_.-]{0,14}$";
/// A dotted-quad IPv4 address without leading zeros.
pub const IPV4_PATTERN: &str =
    r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$";
/// An IPv4 subnet in CIDR notation.
pub const CIDR_PATTERN: &str = r"^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])/(3[0-2]|[12]?[0-9])$";
/// A time of day, `HH:MM` (24 h).
pub const TIME_OF_DAY_PATTERN: &str = r"^([01][0-9]|2[0-3]):[0-5][0-9]$";
/// Smallest VMID Proxmox accepts.
pub const VMID_MIN: i32 = 100;
/// Largest VMID Proxmox accepts.
pub const VMID_MAX: i32 = 999_999_999;

/// Kind of Proxmox guest.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum GuestType {
    /// A QEMU/KVM virtual machine (`qm`, `/nodes/{node}/qemu`).
    #[serde(rename = "VM")]
    Vm,
    /// An LXC container (`pct`, `/nodes/{node}/lxc`).
    #[serde(rename = "LXC")]
    Lxc,
}

impl GuestType {
    /// The segment of the PVE API path: `qemu` or `lxc`.
    pub fn api_path(self) -> &'static str {
        match self {
            Self::Vm => "qemu",
            Self::Lxc => "lxc",
        }
    }

    /// The value of the `{type}` placeholder in naming patterns: `vm` or `lxc`.
    pub fn short_name(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Lxc => "lxc",
        }
    }
}

/// The guest a status item is about: which Service, which VMID of which type, on which node.
/// Status items embed it flattened, so on the wire it is four plain fields
/// (`service`, `vmid`, `type`, `node`) next to the item's own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GuestTarget {
    /// Name of the Service (empty when the item names a guest by VMID only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 253))]
    pub service: String,
    /// VMID of the guest.
    #[schemars(range(min = 100, max = 999_999_999))]
    pub vmid: i32,
    /// `VM` or `LXC`.
    #[serde(rename = "type")]
    pub type_: GuestType,
    /// Node the guest is on (absent until known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub node: Option<String>,
}

impl GuestTarget {
    /// A target for `service`'s guest `vmid` of `type_` on `node`.
    pub fn new(service: impl Into<String>, vmid: i32, type_: GuestType, node: Option<String>) -> Self {
        Self {
            service: service.into(),
            vmid,
            type_,
            node,
        }
    }
}

/// What happens to what the operator created (backups, replica guests) when the resource that
/// created it is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Keep everything (the default): backups and guests outlive the resource.
    #[default]
    Retain,
    /// Delete what this resource created (proven by the `autopilot` tag and this resource's
    /// UID in the notes), and nothing else.
    Delete,
}

/// A day of the week.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Weekday {
    /// Monday.
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

/// When work may start. A run starts only inside the window and may finish after it ends. The
/// window is read in the resource's `timeZone`. An `endTime` before `startTime` spans midnight
/// (`22:00`-`04:00`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = crate::crd::cel::rule(
    "self.startTime != self.endTime",
    "startTime and endTime must differ; for a whole day leave the window out"
))]
pub struct MaintenanceWindow {
    /// Days on which the window opens (the day `startTime` falls on). Empty: every day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 7))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub days: Vec<Weekday>,
    /// Opening time, `HH:MM` (24 h), e.g. `02:00`.
    #[schemars(length(max = 5), regex(pattern = TIME_OF_DAY_PATTERN))]
    pub start_time: String,
    /// Closing time, `HH:MM` (24 h), e.g. `05:00`.
    #[schemars(length(max = 5), regex(pattern = TIME_OF_DAY_PATTERN))]
    pub end_time: String,
}

/// How many backups to keep, with Proxmox Backup Server prune semantics: each option keeps the
/// newest backup of that many distinct periods (hours, days, ...); a backup kept by one
/// option is not counted by the next. Leave `retention` out to keep every backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = crate::crd::cel::rule(
    "has(self.keepLast) || has(self.keepHourly) || has(self.keepDaily) || has(self.keepWeekly) || has(self.keepMonthly) || has(self.keepYearly)",
    "set at least one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly (or leave retention out to keep every backup)"
))]
pub struct Retention {
    /// Keep the newest N backups (1-1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub keep_last: Option<i32>,
    /// Keep the newest backup of each of the last N hours (1-744).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 744))]
    pub keep_hourly: Option<i32>,
    /// Keep the newest backup of each of the last N days (1-366).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 366))]
    pub keep_daily: Option<i32>,
    /// Keep the newest backup of each of the last N weeks (1-520).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 520))]
    pub keep_weekly: Option<i32>,
    /// Keep the newest backup of each of the last N months (1-240).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 240))]
    pub keep_monthly: Option<i32>,
    /// Keep the newest backup of each of the last N years (1-100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub keep_yearly: Option<i32>,
}

impl Retention {
    /// Renders PVE's `prune-backups` property string, e.g. `keep-daily=7,keep-weekly=4`.
    pub fn to_prune_backups(&self) -> String {
        [
            ("keep-last", self.keep_last),
            ("keep-hourly", self.keep_hourly),
            ("keep-daily", self.keep_daily),
            ("keep-weekly", self.keep_weekly),
            ("keep-monthly", self.keep_monthly),
            ("keep-yearly", self.keep_yearly),
        ]
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
        .collect::<Vec<_>>()
        .join(",")
    }

    /// Runtime check (backstop for the CEL rule).
    pub fn validate_into(&self, path: &str, errors: &mut Errors) {
        if self.to_prune_backups().is_empty() {
            errors.add(
                path,
                "set at least one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly \
                 (or leave retention out to keep every backup)",
            );
        }
    }
}

/// Selects Services (kind `services.autopilot.homelab.dev`) in the same namespace, by name
/// and/or by labels. A Service matches if it is listed in `names` or carries all `matchLabels`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = crate::crd::cel::rule(
    "(has(self.names) && size(self.names) > 0) || (has(self.matchLabels) && size(self.matchLabels) > 0)",
    "select at least one Service: list names or set matchLabels"
))]
pub struct ServiceSelector {
    /// Names of Services in this namespace, e.g. `[nextcloud, gitea]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253), regex(pattern = crate::crd::refs::NAME_PATTERN)))]
    #[x_kube(merge_strategy = kube::core::ListMerge::Set)]
    pub names: Vec<String>,
    /// Labels a Service must all carry, e.g. `{backup: nightly}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 16))]
    pub match_labels: BTreeMap<String, String>,
}

impl ServiceSelector {
    /// Whether a Service called `name` with `labels` is selected.
    pub fn matches(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        self.names.iter().any(|n| n == name)
            || (!self.match_labels.is_empty()
                && self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }
}

/// A Proxmox task the operator started and recorded in status before waiting for it: its UPID
/// (`UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`), kept so that a restarted
/// operator polls the same task instead of starting another. Serialized as the plain UPID
/// string; `pve::task` turns it into the client's typed task reference.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(transparent)]
pub struct TaskHandle(#[schemars(length(min = 6, max = 512), regex(pattern = r"^UPID:"))] String);

impl TaskHandle {
    /// The handle of the task with UPID `upid`.
    pub fn new(upid: impl Into<String>) -> Self {
        Self(upid.into())
    }

    /// The UPID.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for TaskHandle {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for TaskHandle {
    fn from(upid: &str) -> Self {
        Self::new(upid)
    }
}

impl From<String> for TaskHandle {
    fn from(upid: String) -> Self {
        Self(upid)
    }
}

impl std::fmt::Display for TaskHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An inclusive range of VMIDs the operator may allocate from, e.g. `9000`-`9099`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = crate::crd::cel::rule("self.start <= self.end", "start must not be greater than end"))]
pub struct VmidRange {
    /// First VMID of the range (100-999999999).
    #[schemars(range(min = VMID_MIN, max = VMID_MAX))]
    pub start: i32,
    /// Last VMID of the range, inclusive (100-999999999).
    #[schemars(range(min = VMID_MIN, max = VMID_MAX))]
    pub end: i32,
}

impl VmidRange {
    /// Number of VMIDs in the range.
    pub fn len(&self) -> i64 {
        (i64::from(self.end) - i64::from(self.start) + 1).max(0)
    }

    /// Whether the range holds no VMID (start after end).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `vmid` lies in the range.
    pub fn contains(&self, vmid: i32) -> bool {
        (self.start..=self.end).contains(&vmid)
    }
}

/// Checks a schedule and its time zone (backstop for the CRD's pattern checks, and the only
/// check of the zone against the operator's time zone database).
pub fn validate_schedule(path_prefix: &str, schedule: &str, zone: &str, errors: &mut Errors) {
    errors.check(
        &format!("{path_prefix}schedule"),
        parse_cron(schedule).map(|_| ()),
    );
    if let Err(e) = time_zone(&format!("{path_prefix}timeZone"), zone) {
        errors.add_with_reason(e.field.clone(), e.reason(), e.message());
    }
}

/// Field-level schema transform for `Option<SomeEnum>` fields:
/// `#[schemars(transform = crate::crd::common::optional_enum)]`.
///
/// kube's own rewrite of `anyOf: [enum, null]` replaces the field's description with the
/// enum type's, so `kubectl explain` would lose what the field means. Doing the rewrite here,
/// while the field's description is still on the outer schema, keeps it.
pub fn optional_enum(schema: &mut schemars::Schema) {
    use serde_json::{Value, json};
    let Some(obj) = schema.as_object_mut() else { return };
    let Some(Value::Array(any_of)) = obj.get("anyOf") else {
        return;
    };
    let [Value::Object(inner), null] = any_of.as_slice() else {
        return;
    };
    let is_null = null.get("type") == Some(&json!("null")) || null.get("enum") == Some(&json!([null]));
    let values: Option<Vec<Value>> = match (inner.get("enum"), inner.get("oneOf")) {
        (Some(Value::Array(values)), _) => Some(values.clone()),
        (None, Some(Value::Array(variants))) => variants
            .iter()
            .map(|v| match (v.get("enum"), v.get("const")) {
                (Some(Value::Array(one)), _) if one.len() == 1 => Some(one[0].clone()),
                (None, Some(c)) => Some(c.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    };
    let (true, Some(values)) = (is_null, values) else {
        return;
    };
    obj.remove("anyOf");
    obj.insert("type".into(), json!("string"));
    obj.insert("enum".into(), Value::Array(values));
    obj.insert("nullable".into(), json!(true));
}

/// Default for `timeZone` fields.
pub fn default_time_zone() -> String {
    "UTC".to_string()
}

/// Serde default `true`.
pub fn default_true() -> bool {
    true
}

/// Whether a boolean is `false` (to skip serializing a false default).
pub fn is_false(v: &bool) -> bool {
    !*v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_handle_is_the_plain_upid_in_json_and_its_schema_accepts_only_upids() {
        let upid = "UPID:pve1:0001A2B3:00C4D5E6:66500000:qmstart:200:root@pam:";
        let h = TaskHandle::new(upid);
        assert_eq!(serde_json::to_value(&h).unwrap(), serde_json::json!(upid));
        assert_eq!(
            serde_json::from_value::<TaskHandle>(serde_json::json!(upid)).unwrap(),
            h
        );
        let schema = serde_json::to_value(schemars::schema_for!(TaskHandle)).unwrap();
        assert_eq!(schema["type"], "string");
        assert_eq!(schema["pattern"], "^UPID:");
        assert_eq!(schema["maxLength"], 512);
    }

    #[test]
    fn retention_renders_prune_backups_in_pve_order() {
        let r = Retention {
            keep_daily: Some(7),
            keep_last: Some(3),
            keep_yearly: Some(1),
            ..Default::default()
        };
        assert_eq!(r.to_prune_backups(), "keep-last=3,keep-daily=7,keep-yearly=1");
        let mut errors = Errors::new();
        Retention::default().validate_into("spec.retention", &mut errors);
        let err = errors.finish().unwrap_err().to_string();
        assert!(
            err.starts_with("spec.retention: set at least one of keepLast"),
            "{err}"
        );
    }

    #[test]
    fn service_selector_matches_by_name_or_all_labels() {
        let sel = ServiceSelector {
            names: vec!["gitea".into()],
            match_labels: BTreeMap::from([("backup".into(), "nightly".into())]),
        };
        let none = BTreeMap::new();
        let nightly = BTreeMap::from([("backup".to_string(), "nightly".to_string())]);
        assert!(sel.matches("gitea", &none));
        assert!(sel.matches("nextcloud", &nightly));
        assert!(!sel.matches("nextcloud", &none));
        assert!(!ServiceSelector::default().matches("x", &none));
    }

    #[test]
    fn vmid_range_len_and_contains() {
        let r = VmidRange {
            start: 9000,
            end: 9009,
        };
        assert_eq!(r.len(), 10);
        assert!(r.contains(9009) && !r.contains(9010));
        assert!(VmidRange { start: 5, end: 4 }.is_empty());
    }

    #[test]
    fn guest_type_serializes_as_uppercase_acronym() {
        assert_eq!(serde_json::to_value(GuestType::Vm).unwrap(), "VM");
        assert_eq!(
            serde_json::from_value::<GuestType>("LXC".into()).unwrap(),
            GuestType::Lxc
        );
        assert_eq!(GuestType::Lxc.api_path(), "lxc");
        assert_eq!(GuestType::Vm.short_name(), "vm");
    }

    #[test]
    fn validate_schedule_names_both_fields() {
        let mut errors = Errors::new();
        validate_schedule("spec.", "61 * * * *", "Mars/Olympus", &mut errors);
        let err = errors.finish().unwrap_err();
        assert_eq!(err.errors()[0].path, "spec.schedule");
        assert!(err.errors()[0].message.contains("minute field"), "{err}");
        assert_eq!(err.errors()[1].path, "spec.timeZone");
        assert!(
            err.errors()[1]
                .message
                .contains("not a time zone this operator knows"),
            "{err}"
        );
    }
}
