//! Unique process ids of PVE (and PBS) tasks.
//!
//! PVE (pve-common `PVE::UPID`):
//! `UPID:<node>:<pid %08X>:<pstart %08X>:<starttime %08X>:<type>:<id>:<user>:`, where `pstart` may
//! have 9 hex digits (after ~497 days of uptime), `id` may be empty (multi-guest vzdump) and
//! `user` is `user@realm!tokenid` when an API token started the task.
//! PBS (proxmox-schema `upid.rs`) adds a task counter before `starttime`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::types::{NodeName, ParseIdError};

/// A parsed task id. Keeps the exact string it was parsed from: that is what PVE expects back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Upid {
    raw: String,
    node: NodeName,
    pid: u32,
    pstart: u64,
    task_counter: Option<u64>,
    starttime: u32,
    worker_type: String,
    id: String,
    auth_id: String,
}

const WHAT: &str = "UPID";

fn hex<T: TryFrom<u64>>(s: &str, min: usize, max: usize, raw: &str) -> Result<T, ParseIdError> {
    let fail = || ParseIdError {
        what: WHAT,
        value: raw.to_owned(),
        rule: "numeric fields must be 8-digit hex (pstart: 8 or 9 digits)",
    };
    if s.len() < min || s.len() > max || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(fail());
    }
    let n = u64::from_str_radix(s, 16).map_err(|_| fail())?;
    T::try_from(n).map_err(|_| fail())
}

fn field_ok(s: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !s.is_empty()) && !s.contains(|c: char| c.is_whitespace() || c == '/')
}

impl Upid {
    /// Parses a PVE or PBS UPID.
    pub fn parse(s: &str) -> Result<Self, ParseIdError> {
        let shape = |rule| ParseIdError {
            what: WHAT,
            value: s.to_owned(),
            rule,
        };
        let parts: Vec<&str> = s.split(':').collect();
        let (pbs, n) = match parts.len() {
            9 => (false, 0),
            10 => (true, 1),
            _ => return Err(shape("expected `UPID:node:pid:pstart:starttime:type:id:user:`")),
        };
        if parts[0] != "UPID" || !parts[parts.len() - 1].is_empty() {
            return Err(shape("must start with `UPID:` and end with `:`"));
        }
        let node = NodeName::new(parts[1]).map_err(|_| shape("the node field is not a node name"))?;
        let pid = hex(parts[2], 8, 8, s)?;
        let pstart = hex(parts[3], 8, 9, s)?;
        let task_counter = if pbs { Some(hex(parts[4], 8, 16, s)?) } else { None };
        let starttime = hex(parts[4 + n], 8, 8, s)?;
        let (worker_type, id, auth_id) = (parts[5 + n], parts[6 + n], parts[7 + n]);
        if !field_ok(worker_type, false) || !field_ok(id, true) || !field_ok(auth_id, false) {
            return Err(shape(
                "type and user must be non-empty; no field may contain `/` or spaces",
            ));
        }
        Ok(Self {
            raw: s.to_owned(),
            node,
            pid,
            pstart,
            task_counter,
            starttime,
            worker_type: worker_type.to_owned(),
            id: id.to_owned(),
            auth_id: auth_id.to_owned(),
        })
    }

    /// The UPID exactly as PVE wrote it.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// The node the task runs on (poll `/nodes/{node}/tasks/{upid}/status` there).
    pub fn node(&self) -> &NodeName {
        &self.node
    }
    /// The worker process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// The worker's start time in clock ticks since boot.
    pub fn pstart(&self) -> u64 {
        self.pstart
    }
    /// The PBS task counter (`None` for PVE UPIDs).
    pub fn task_counter(&self) -> Option<u64> {
        self.task_counter
    }
    /// Task start, seconds since the Unix epoch.
    pub fn starttime(&self) -> u32 {
        self.starttime
    }
    /// The task type (`qmstart`, `vzdump`, ...).
    pub fn worker_type(&self) -> &str {
        &self.worker_type
    }
    /// The task's object id (usually the VMID); may be empty.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// Who started it: `user@realm` or `user@realm!tokenid`.
    pub fn auth_id(&self) -> &str {
        &self.auth_id
    }
    /// The user part of [`auth_id`](Self::auth_id) (without the token name).
    pub fn user(&self) -> &str {
        self.auth_id.split_once('!').map_or(&self.auth_id, |(u, _)| u)
    }
    /// The API token name, when a token started the task.
    pub fn token_name(&self) -> Option<&str> {
        self.auth_id.split_once('!').map(|(_, t)| t)
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

impl FromStr for Upid {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Upid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> Deserialize<'de> for Upid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Self::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Formats the fields the way pve-common `PVE::UPID::encode` does.
    fn encode(u: &Upid) -> String {
        let counter = u.task_counter().map(|c| format!("{c:08X}:")).unwrap_or_default();
        format!(
            "UPID:{}:{:08X}:{:08X}:{counter}{:08X}:{}:{}:{}:",
            u.node(),
            u.pid(),
            u.pstart(),
            u.starttime(),
            u.worker_type(),
            u.id(),
            u.auth_id()
        )
    }

    #[test]
    fn upid_documented_forms_round_trip() {
        let cases = [
            // plain, from a real task-status capture
            "UPID:dahu-2:00007323:001036A5:6419CAF8:qmstart:100:root@pam:",
            // API token user
            "UPID:pve1:003C8E2F:14E92805:6AC05394:vzdump:100:root@pam!operator:",
            // multi-guest vzdump: empty id
            "UPID:pve1:003C8E30:14E92806:6AC05395:vzdump::root@pam:",
            // pstart with 9 hex digits (uptime > ~497 days)
            "UPID:pve1:0000A1B2:1A2B3C4D5:6AC05395:qmsnapshot:101:root@pam:",
            // storage-volume delete id
            "UPID:pve-2:00001234:00005678:6AC05396:imgdel:100@local:autopilot@pve!ap:",
            // PBS: extra task counter
            "UPID:pbs:000004D2:0000162E:00000003:6AC05397:verificationjob:store1\\x3av\\x2dabc:root@pam:",
        ];
        for s in cases {
            let u = Upid::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(u.to_string(), s);
            assert_eq!(encode(&u), s, "re-encoding the parsed fields");
            let json = serde_json::to_string(&u).unwrap();
            assert_eq!(serde_json::from_str::<Upid>(&json).unwrap(), u);
        }
    }

    #[test]
    fn upid_fields_are_decoded() {
        let u = Upid::parse("UPID:pve1:003C8E2F:14E92805:6AC05394:vzdump:100:root@pam!operator:").unwrap();
        assert_eq!(u.node().as_str(), "pve1");
        assert_eq!(u.pid(), 3_968_559);
        assert_eq!(u.pstart(), 350_824_453);
        assert_eq!(u.starttime(), 1_790_989_204);
        assert_eq!(u.worker_type(), "vzdump");
        assert_eq!(u.id(), "100");
        assert_eq!(u.user(), "root@pam");
        assert_eq!(u.token_name(), Some("operator"));
        assert_eq!(u.task_counter(), None);
        let nine = Upid::parse("UPID:n:00000001:1A2B3C4D5:00000002:t::u@pam:").unwrap();
        assert_eq!(nine.pstart(), 0x1A2B3C4D5);
        assert_eq!(nine.token_name(), None);
    }

    #[test]
    fn upid_malformed_inputs_are_rejected() {
        for bad in [
            "",
            "UPID:pve1:003C8E2F:14E92805:6AC05394:vzdump:100:root@pam", // no trailing colon
            "XPID:pve1:003C8E2F:14E92805:6AC05394:vzdump:100:root@pam:", // prefix
            "UPID:pve1:3C8E2F:14E92805:6AC05394:vzdump:100:root@pam:",  // short pid
            "UPID:pve1:003C8E2F:14E9280G:6AC05394:vzdump:100:root@pam:", // not hex
            "UPID:pve1:003C8E2F:14E92805:6AC05394::100:root@pam:",      // empty type
            "UPID:pve1:003C8E2F:14E92805:6AC05394:vzdump:100::",        // empty user
            "UPID:-pve:003C8E2F:14E92805:6AC05394:vzdump:100:root@pam:", // bad node
            "UPID:pve1:003C8E2F:14E92805:6AC05394:vz dump:100:root@pam:",
            "UPID:pve1:003C8E2F:14E92805:6AC05394:vzdump:1/0:root@pam:",
        ] {
            let err = Upid::parse(bad).unwrap_err();
            assert_eq!(err.what, "UPID", "{bad}");
        }
    }
}
