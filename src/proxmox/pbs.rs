//! A typed Proxmox Backup Server client: a datastore's snapshots (list, delete), verification
//! (start a verify task, poll it), datastore usage.
//!
//! It reuses the PVE client's transport ([`PveClient`]: endpoints, TLS pinning or CA, timeouts,
//! retries of idempotent calls, metrics, redaction, ticket login and renewal) with PBS's
//! dialect: API tokens as `Authorization: PBSAPIToken=user@realm!name:secret`, tickets as cookie
//! `PBSAuthCookie` (+ `CSRFPreventionToken` on writes), errors as plain-text bodies, the
//! `/api2/json` base on port 8007. Field names follow the PBS 4 API schema
//! (`pbs-apischema.json`); every call goes through one of the [`ALL`] operations, checked against
//! that schema by a unit test.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tokio::time::Instant;

use super::client::PveClient;
use super::config::ClientConfig;
use super::decode;
use super::error::{Error, Result};
use super::ops::{Method, Operation};
use super::request::Call;
use super::task::TaskExit;

/// `GET /admin/datastore/{store}/snapshots`
pub const SNAPSHOTS: Operation = Operation::new(
    Method::Get,
    "/admin/datastore/{store}/snapshots",
    &["ns", "backup-type", "backup-id"],
);
/// `DELETE /admin/datastore/{store}/snapshots` (one snapshot; not retried)
pub const SNAPSHOT_DELETE: Operation = Operation::new(
    Method::Delete,
    "/admin/datastore/{store}/snapshots",
    &["ns", "backup-type", "backup-id", "backup-time"],
);
/// `POST /admin/datastore/{store}/verify` (a task; never repeated)
pub const VERIFY: Operation = Operation::new(
    Method::Post,
    "/admin/datastore/{store}/verify",
    &["ns", "backup-type", "backup-id", "backup-time", "ignore-verified"],
);
/// `GET /admin/datastore/{store}/status`
pub const DATASTORE_STATUS: Operation = Operation::new(Method::Get, "/admin/datastore/{store}/status", &[]);
/// `GET /nodes/{node}/tasks/{upid}/status`
pub const TASK_STATUS: Operation = Operation::new(Method::Get, "/nodes/{node}/tasks/{upid}/status", &[]);
/// `GET /nodes/{node}/tasks/{upid}/log`
pub const TASK_LOG: Operation =
    Operation::new(Method::Get, "/nodes/{node}/tasks/{upid}/log", &["start", "limit"]);

/// Every PBS operation the client can call.
pub const ALL: &[Operation] = &[
    SNAPSHOTS,
    SNAPSHOT_DELETE,
    VERIFY,
    DATASTORE_STATUS,
    TASK_STATUS,
    TASK_LOG,
];

/// The node name PBS accepts for its own tasks.
const LOCAL_NODE: &str = "localhost";
/// Log lines kept in a [`Error::TaskFailed`].
const LOG_TAIL: u32 = 20;

/// A snapshot's group type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupType {
    /// A VM (`vm/<vmid>`).
    Vm,
    /// A container (`ct/<vmid>`).
    Ct,
    /// A host backup (`host/<name>`).
    Host,
}

impl BackupType {
    /// `vm`, `ct` or `host`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vm => "vm",
            Self::Ct => "ct",
            Self::Host => "host",
        }
    }
}

impl fmt::Display for BackupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which snapshots to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    /// Namespace (`None`: the root namespace).
    pub ns: Option<String>,
    /// Only this group type.
    pub backup_type: Option<BackupType>,
    /// Only this group id (the VMID for `vm`/`ct`).
    pub backup_id: Option<String>,
}

/// One snapshot: group and time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SnapshotRef {
    /// Namespace (`None`: root).
    pub ns: Option<String>,
    /// Group type.
    pub backup_type: BackupType,
    /// Group id (the VMID for guests).
    pub backup_id: String,
    /// Backup time, Unix seconds.
    pub backup_time: i64,
}

impl SnapshotRef {
    /// The snapshot behind a PVE volid of a `pbs` storage
    /// (`pbs:backup/vm/100/2024-06-01T00:00:00Z`); returns the PVE storage id with it. The
    /// namespace is the PVE storage's `namespace` setting, which the volid does not carry: pass
    /// it separately when the storage has one.
    pub fn from_pve_volid(volid: &str) -> Option<(String, Self)> {
        let (storage, rest) = volid.split_once(':')?;
        let rest = rest.strip_prefix("backup/")?;
        let mut parts = rest.splitn(3, '/');
        let backup_type = match parts.next()? {
            "vm" => BackupType::Vm,
            "ct" => BackupType::Ct,
            "host" => BackupType::Host,
            _ => return None,
        };
        let backup_id = parts.next()?.to_owned();
        let time = jiff::Timestamp::from_str(parts.next()?).ok()?;
        if storage.is_empty() || backup_id.is_empty() {
            return None;
        }
        Some((
            storage.to_owned(),
            Self {
                ns: None,
                backup_type,
                backup_id,
                backup_time: time.as_second(),
            },
        ))
    }

    /// `vm/100/2024-06-01T00:00:00Z`, as PBS and PVE volids spell it.
    pub fn path(&self) -> String {
        let time = jiff::Timestamp::from_second(self.backup_time)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_else(|_| self.backup_time.to_string());
        format!("{}/{}/{time}", self.backup_type, self.backup_id)
    }
}

impl fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.ns {
            Some(ns) if !ns.is_empty() => write!(f, "{ns}:{}", self.path()),
            _ => f.write_str(&self.path()),
        }
    }
}

/// The result of a snapshot's last verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyState {
    /// Every chunk was read back and matched.
    Ok,
    /// Something was missing or damaged.
    Failed,
    /// A state this client does not know.
    #[serde(other)]
    Unknown,
}

/// A snapshot's last verification (`verification`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SnapshotVerification {
    /// `ok` or `failed`.
    pub state: VerifyState,
    /// The verify task.
    #[serde(default)]
    pub upid: String,
}

/// One row of `GET /admin/datastore/{store}/snapshots`.
#[derive(Debug, Clone, Deserialize)]
pub struct PbsSnapshot {
    /// Group type.
    #[serde(rename = "backup-type")]
    pub backup_type: BackupType,
    /// Group id (the VMID for guests).
    #[serde(rename = "backup-id", deserialize_with = "decode::string_lenient")]
    pub backup_id: String,
    /// Backup time, Unix seconds.
    #[serde(rename = "backup-time", deserialize_with = "i64_lenient")]
    pub backup_time: i64,
    /// Archive names (`index.json.blob`, `drive-scsi0.img.fidx`, ...).
    #[serde(default, deserialize_with = "file_names")]
    pub files: Vec<String>,
    /// Size of all archives, bytes (logical: before deduplication).
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub size: Option<u64>,
    /// Protected from pruning and deletion.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub protected: bool,
    /// First line of the notes (PVE shows it as the backup's `notes`).
    #[serde(default)]
    pub comment: Option<String>,
    /// Owner (`user@realm` or a token).
    #[serde(default)]
    pub owner: Option<String>,
    /// Encryption key fingerprint, for encrypted snapshots.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// The last verification; absent until a verify ran.
    #[serde(default)]
    pub verification: Option<SnapshotVerification>,
}

impl PbsSnapshot {
    /// The snapshot's reference (in the root namespace; set `ns` for another).
    pub fn snapshot_ref(&self) -> SnapshotRef {
        SnapshotRef {
            ns: None,
            backup_type: self.backup_type,
            backup_id: self.backup_id.clone(),
            backup_time: self.backup_time,
        }
    }

    /// The verification state, `None` when never verified.
    pub fn verify_state(&self) -> Option<VerifyState> {
        self.verification.as_ref().map(|v| v.state)
    }
}

fn i64_lenient<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<i64, D::Error> {
    decode::opt_i64(d)?.ok_or_else(|| serde::de::Error::custom("expected an integer"))
}

/// PBS 4 lists file names; older versions list `{filename, size, crypt-mode}` objects.
fn file_names<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    let values: Vec<serde_json::Value> = Vec::deserialize(d)?;
    Ok(values
        .into_iter()
        .filter_map(|v| match v {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Object(mut o) => match o.remove("filename") {
                Some(serde_json::Value::String(s)) => Some(s),
                _ => None,
            },
            _ => None,
        })
        .collect())
}

/// `GET /admin/datastore/{store}/status`: the datastore's file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct DatastoreStatus {
    /// Size, bytes.
    #[serde(deserialize_with = "decode::u64_lenient")]
    pub total: u64,
    /// Used, bytes.
    #[serde(deserialize_with = "decode::u64_lenient")]
    pub used: u64,
    /// Available, bytes.
    #[serde(deserialize_with = "decode::u64_lenient")]
    pub avail: u64,
}

/// A PBS task id: `UPID:node:pid:pstart:task_id:starttime:worker_type:worker_id:auth_id:` (one
/// field more than PVE's UPIDs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PbsUpid {
    raw: String,
    node: String,
    starttime: i64,
    worker_type: String,
    worker_id: String,
    auth_id: String,
}

impl PbsUpid {
    /// Parses a PBS UPID.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = || Error::Decode {
            what: "PBS UPID".into(),
            detail: format!("{text:?} is not UPID:node:pid:pstart:task_id:starttime:type:id:authid:"),
        };
        let body = text
            .strip_prefix("UPID:")
            .and_then(|r| r.strip_suffix(':'))
            .ok_or_else(bad)?;
        let f: Vec<&str> = body.split(':').collect();
        if f.len() != 8 || f[0].is_empty() || f[5].is_empty() || f[7].is_empty() {
            return Err(bad());
        }
        let hex = |s: &str, min: usize, max: usize| {
            (s.len() >= min && s.len() <= max && s.bytes().all(|b| b.is_ascii_hexdigit())).then_some(())
        };
        hex(f[1], 8, 8)
            .and(hex(f[2], 8, 9))
            .and(hex(f[3], 8, 16))
            .and(hex(f[4], 8, 8))
            .ok_or_else(bad)?;
        let starttime = i64::from_str_radix(f[4], 16).map_err(|_| bad())?;
        Ok(Self {
            raw: text.to_owned(),
            node: f[0].to_owned(),
            starttime,
            worker_type: f[5].to_owned(),
            worker_id: f[6].to_owned(),
            auth_id: f[7].to_owned(),
        })
    }

    /// The whole UPID.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// The PBS host.
    pub fn node(&self) -> &str {
        &self.node
    }
    /// Start, Unix seconds.
    pub fn starttime(&self) -> i64 {
        self.starttime
    }
    /// `verify_snapshot`, `verify_group`, `verify`, `garbage_collection`, ...
    pub fn worker_type(&self) -> &str {
        &self.worker_type
    }
    /// The (systemd-escaped) worker id, e.g. `store\x3avm-100-...`.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }
    /// Who started it (`user@realm` or `user@realm!token`).
    pub fn auth_id(&self) -> &str {
        &self.auth_id
    }
}

impl fmt::Display for PbsUpid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for PbsUpid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct PbsTaskStatus {
    /// The task.
    pub upid: String,
    /// `running` or `stopped`.
    pub status: String,
    /// When stopped: `OK`, `WARNINGS: N`, or the error.
    #[serde(default)]
    pub exitstatus: Option<String>,
    /// Worker type.
    #[serde(rename = "type", default)]
    pub worker_type: String,
    /// User (`user@realm`), without the token.
    #[serde(default)]
    pub user: String,
    /// Token name, when started with an API token.
    #[serde(default)]
    pub tokenid: Option<String>,
    /// Start, Unix seconds.
    #[serde(default, deserialize_with = "decode::opt_i64")]
    pub starttime: Option<i64>,
    /// End, Unix seconds (when stopped).
    #[serde(default, deserialize_with = "decode::opt_i64")]
    pub endtime: Option<i64>,
}

impl PbsTaskStatus {
    /// How it ended; `None` while it runs.
    pub fn exit(&self) -> Option<TaskExit> {
        if self.status == "running" {
            return None;
        }
        Some(TaskExit::from_exit_status(
            self.exitstatus.as_deref().unwrap_or("unknown"),
        ))
    }
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    t: String,
}

/// A typed client for one Proxmox Backup Server. Cheap to clone; share it.
#[derive(Clone, Debug)]
pub struct PbsClient {
    http: PveClient,
}

impl PbsClient {
    /// Builds a client from the PBS's endpoint (`https://pbs.lan:8007`), credentials (an API
    /// token `user@realm!name`, or a user and password exchanged for a PBS ticket) and the TLS
    /// check (usually the PBS certificate's fingerprint). Makes no request.
    pub fn new(config: ClientConfig) -> Result<Self> {
        Ok(Self {
            http: PveClient::new_pbs(config)?,
        })
    }

    /// The base URL in use.
    pub fn endpoint(&self) -> &str {
        self.http.endpoint()
    }

    /// The snapshots of `store` matching `filter`, newest first.
    pub async fn snapshots(&self, store: &str, filter: &SnapshotFilter) -> Result<Vec<PbsSnapshot>> {
        let call = Call::new(SNAPSHOTS, &[store])
            .opt("ns", filter.ns.as_deref().filter(|n| !n.is_empty()))
            .opt("backup-type", filter.backup_type.map(BackupType::as_str))
            .opt("backup-id", filter.backup_id.as_deref());
        let mut rows: Vec<PbsSnapshot> = self.http.run(call).await?;
        rows.sort_by(|a, b| {
            b.backup_time
                .cmp(&a.backup_time)
                .then_with(|| (a.backup_type, &a.backup_id).cmp(&(b.backup_type, &b.backup_id)))
        });
        Ok(rows)
    }

    /// One snapshot, `None` when it does not exist.
    pub async fn snapshot(&self, store: &str, snap: &SnapshotRef) -> Result<Option<PbsSnapshot>> {
        let filter = SnapshotFilter {
            ns: snap.ns.clone(),
            backup_type: Some(snap.backup_type),
            backup_id: Some(snap.backup_id.clone()),
        };
        Ok(self
            .snapshots(store, &filter)
            .await?
            .into_iter()
            .find(|s| s.backup_time == snap.backup_time))
    }

    /// `POST /admin/datastore/{store}/verify` for one snapshot (verified again even when it
    /// already is): the verify task. Poll it with [`Self::wait_task`]; the result also lands in
    /// the snapshot's `verification`.
    pub async fn verify_snapshot(&self, store: &str, snap: &SnapshotRef) -> Result<PbsUpid> {
        let call = Call::new(VERIFY, &[store])
            .opt("ns", snap.ns.as_deref().filter(|n| !n.is_empty()))
            .arg("backup-type", snap.backup_type)
            .arg("backup-id", &snap.backup_id)
            .arg("backup-time", snap.backup_time);
        self.http.run(call).await
    }

    /// `GET /nodes/localhost/tasks/{upid}/status`.
    pub async fn task_status(&self, upid: &PbsUpid) -> Result<PbsTaskStatus> {
        self.http
            .run(Call::new(TASK_STATUS, &[LOCAL_NODE, upid.as_str()]))
            .await
    }

    /// The last `LOG_TAIL` lines of a task's log.
    pub async fn task_log_tail(&self, upid: &PbsUpid) -> Result<Vec<String>> {
        let lines: Vec<LogLine> = self
            .http
            .run(Call::new(TASK_LOG, &[LOCAL_NODE, upid.as_str()]).arg("limit", 0))
            .await?;
        let skip = lines.len().saturating_sub(LOG_TAIL as usize);
        Ok(lines.into_iter().skip(skip).map(|l| l.t).collect())
    }

    /// Polls a task every `poll` until it stops or `deadline` passes. A task that ended with an
    /// error is [`Error::TaskFailed`] (a failed verification: `verification failed - please
    /// check the log for details`); transient polling errors are retried until the deadline.
    pub async fn wait_task(
        &self,
        upid: &PbsUpid,
        poll: Duration,
        deadline: Instant,
    ) -> Result<PbsTaskStatus> {
        loop {
            match self.task_status(upid).await {
                Ok(status) => match status.exit() {
                    None => {}
                    Some(exit) if exit.is_success() => return Ok(status),
                    Some(_) => {
                        let log_tail = self.task_log_tail(upid).await.unwrap_or_default();
                        return Err(Error::TaskFailed {
                            upid: upid.to_string(),
                            exit_status: status.exitstatus.clone().unwrap_or_default(),
                            log_tail,
                        });
                    }
                },
                Err(e) if e.is_transient() => {
                    tracing::debug!(task = %upid, error = %e, "polling PBS task failed; will retry");
                }
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!("waiting for PBS task {upid}"),
                });
            }
            tokio::time::sleep(poll.min(deadline - now)).await;
        }
    }

    /// `GET /admin/datastore/{store}/status`: total, used and available bytes.
    pub async fn datastore_status(&self, store: &str) -> Result<DatastoreStatus> {
        self.http.run(Call::new(DATASTORE_STATUS, &[store])).await
    }

    /// `DELETE /admin/datastore/{store}/snapshots`: removes one snapshot. PBS refuses a
    /// protected one. Callers must have proved the snapshot theirs.
    pub async fn delete_snapshot(&self, store: &str, snap: &SnapshotRef) -> Result<()> {
        let call = Call::new(SNAPSHOT_DELETE, &[store])
            .opt("ns", snap.ns.as_deref().filter(|n| !n.is_empty()))
            .arg("backup-type", snap.backup_type)
            .arg("backup-id", &snap.backup_id)
            .arg("backup-time", snap.backup_time);
        let _: Option<serde_json::Value> = self.http.run(call).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;
    use crate::proxmox::testutil::shared_proxmox_dir;

    #[test]
    fn pbs_operations_match_the_pbs_schema() {
        let Some(dir) = shared_proxmox_dir() else { return };
        let text = std::fs::read_to_string(dir.join("pbs-apischema.json")).unwrap();
        let schema: Value = serde_json::from_str(&text).unwrap();
        fn walk(node: &Value, out: &mut HashMap<(String, String), Value>) {
            if let (Some(path), Some(info)) = (node["path"].as_str(), node["info"].as_object()) {
                for (method, op) in info {
                    out.insert(
                        (method.clone(), path.to_owned()),
                        op["parameters"]["properties"].clone(),
                    );
                }
            }
            for child in node["children"].as_array().into_iter().flatten() {
                walk(child, out);
            }
        }
        let mut index = HashMap::new();
        for root in schema.as_array().unwrap() {
            walk(root, &mut index);
        }
        for op in ALL {
            let props = index
                .get(&(op.method.as_str().to_owned(), op.path_template.to_owned()))
                .unwrap_or_else(|| panic!("{op} is not in the PBS schema"));
            for p in op.params {
                assert!(props.get(*p).is_some(), "{op}: {p} is not a parameter");
            }
        }
    }

    #[test]
    fn snapshot_rows_and_upids_decode() {
        let row: PbsSnapshot = serde_json::from_str(
            r#"{"backup-type":"vm","backup-id":"100","backup-time":1717200000,"files":["index.json.blob",
                {"filename":"drive-scsi0.img.fidx","size":1}],"size":"4096","protected":false,"comment":"autopilot",
                "verification":{"state":"failed","upid":"UPID:pbs:00001001:00002000:00000001:6650F1A0:verify_snapshot:s:root@pam:"}}"#,
        )
        .unwrap();
        assert_eq!(row.files, ["index.json.blob", "drive-scsi0.img.fidx"]);
        assert_eq!(
            (row.size, row.verify_state()),
            (Some(4096), Some(VerifyState::Failed))
        );
        let bare: PbsSnapshot =
            serde_json::from_str(r#"{"backup-type":"ct","backup-id":101,"backup-time":5,"protected":1}"#)
                .unwrap();
        assert!(bare.protected && bare.verification.is_none() && bare.backup_id == "101");

        let upid = PbsUpid::parse(
            "UPID:pbs:00001001:00002000:00000001:6650F1A0:verify_snapshot:s\\x3avm-1:root@pam!t:",
        )
        .unwrap();
        assert_eq!(
            (upid.node(), upid.worker_type(), upid.auth_id(), upid.starttime()),
            ("pbs", "verify_snapshot", "root@pam!t", 0x6650_F1A0)
        );
        for bad in [
            "UPID:pve1:0000000A:0000000B:0000000C:vzdump:100:root@pam:",
            "nope",
            "UPID:pbs:1:2:3:4:a:b:c:",
        ] {
            assert!(PbsUpid::parse(bad).is_err(), "{bad}");
        }

        let (storage, snap) = SnapshotRef::from_pve_volid("pbs:backup/ct/101/2024-06-01T00:00:00Z").unwrap();
        assert_eq!(
            (storage.as_str(), snap.backup_type, snap.backup_id.as_str()),
            ("pbs", BackupType::Ct, "101")
        );
        assert_eq!(snap.backup_time, 1_717_200_000);
        assert_eq!(snap.path(), "ct/101/2024-06-01T00:00:00Z");
        assert!(SnapshotRef::from_pve_volid("local:backup/vzdump-qemu-100-x.vma").is_none());
    }
}
