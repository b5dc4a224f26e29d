//! Fault injection: per-endpoint errors (rate or next N), latency, dropped connections, offline
//! nodes, quorum loss, failing the next task of a type, expiring tickets and moving the clock.
//!
//! Every random decision comes from one RNG seeded from the simulator seed, so a run with the
//! same seed and the same request sequence fails the same requests. Endpoints are matched by
//! method (or any) and path template as the schema spells it (`/nodes/{node}/qemu/{vmid}/config`,
//! or `*` for all). Latency is real time (not scaled), so client timeouts can be tested.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::http::ApiError;

/// A fault on matching requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointFault {
    /// HTTP method to match (`None`: any).
    #[serde(default)]
    pub method: Option<String>,
    /// Path template to match (`*`: any).
    #[serde(default = "any_path")]
    pub path: String,
    /// Probability (0..=1) that a matching request fails.
    #[serde(default)]
    pub error_rate: f64,
    /// Fail the next N matching requests.
    #[serde(default)]
    pub fail_next: u32,
    /// Status of injected failures (default 500).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Message of injected failures.
    #[serde(default = "default_message")]
    pub message: String,
    /// Real-time delay added before matching requests are answered.
    #[serde(default, with = "millis")]
    pub latency: Duration,
    /// Probability that the connection is dropped without a response.
    #[serde(default)]
    pub drop_rate: f64,
    /// Drop the connections of the next N matching requests.
    #[serde(default)]
    pub drop_next: u32,
    /// Carry out the next N matching requests, then drop the connection instead of answering
    /// (the answer is lost on the way back: the client cannot tell whether it was done).
    #[serde(default)]
    pub lose_answer_next: u32,
}

fn any_path() -> String {
    "*".into()
}
fn default_status() -> u16 {
    500
}
fn default_message() -> String {
    "injected failure".into()
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Default for EndpointFault {
    fn default() -> Self {
        Self {
            method: None,
            path: any_path(),
            error_rate: 0.0,
            fail_next: 0,
            status: default_status(),
            message: default_message(),
            latency: Duration::ZERO,
            drop_rate: 0.0,
            drop_next: 0,
            lose_answer_next: 0,
        }
    }
}

impl EndpointFault {
    fn matches(&self, method: &str, template: &str) -> bool {
        self.method
            .as_deref()
            .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && (self.path == "*" || self.path == template)
    }
}

/// One fault to inject (Rust API, admin endpoint body, `--fault` flag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// Errors, latency or drops on matching requests.
    Endpoint(EndpointFault),
    /// The node stops answering; its guests show `status: unknown`.
    NodeOffline {
        /// Node name.
        node: String,
    },
    /// The node is back.
    NodeOnline {
        /// Node name.
        node: String,
    },
    /// Force quorum loss (`true`) or go back to vote counting (`false`).
    QuorumLoss {
        /// Whether quorum is lost.
        lost: bool,
    },
    /// The next `count` tasks of `task_type` fail with `message`.
    #[serde(rename_all = "camelCase")]
    TaskFailure {
        /// Task type (`vzdump`, `qmstart`...).
        task_type: String,
        /// Error message (`TASK ERROR: <message>`).
        #[serde(default = "default_message")]
        message: String,
        /// How many tasks fail.
        #[serde(default = "one")]
        count: u32,
    },
    /// Every ticket issued so far becomes invalid.
    ExpireTickets,
    /// Move the simulated clock forward.
    AdvanceClock {
        /// Seconds to add.
        seconds: i64,
    },
    /// At most `avail_bytes` stay free on a storage (0: full): a backup that does not fit fails
    /// with `No space left on device` and leaves no partial archive.
    #[serde(rename_all = "camelCase")]
    StorageFull {
        /// Storage id.
        storage: String,
        /// Bytes left free.
        #[serde(default)]
        avail_bytes: u64,
    },
    /// Lifts a `storage-full` fault.
    StorageFree {
        /// Storage id.
        storage: String,
    },
    /// The next `count` PBS snapshots verified (of guest `vmid`, or any) are damaged: their
    /// verification (and every later one) ends `failed`.
    PbsVerifyFailure {
        /// Only snapshots of this guest.
        #[serde(default)]
        vmid: Option<u32>,
        /// How many snapshots.
        #[serde(default = "one")]
        count: u32,
    },
    /// Whether PBS verifies new snapshots right after the backup (default on); off, a new
    /// snapshot has no `verification` until a verify task ran.
    PbsVerifyNew {
        /// On or off.
        enabled: bool,
    },
    /// Sets the verification state of a PBS snapshot (`ok`, `failed`; absent: never verified).
    PbsVerification {
        /// The PVE volid, e.g. `pbs:backup/vm/100/2026-01-01T00:00:00Z`.
        volid: String,
        /// `ok`, `failed` or absent.
        #[serde(default)]
        state: Option<String>,
    },
    /// Remove endpoint, task, storage-full and PBS verification faults (nodes, quorum, clock and
    /// verification results stay as they are).
    Clear,
}

fn one() -> u32 {
    1
}

impl FromStr for Fault {
    type Err = String;

    /// `NAME[=VALUE][@METHOD PATH]`, e.g. `error-rate=0.2@GET /cluster/resources`,
    /// `fail-next=3@POST /nodes/{node}/vzdump`, `latency=250ms`, `drop-rate=0.1`,
    /// `node-offline=pve2`, `quorum-loss`, `task-failure=vzdump`, `expire-tickets`,
    /// `storage-full=local` (or `storage-full=local:1048576` bytes left), `storage-free=local`,
    /// `pbs-verify-failure` (or `=100` for one guest), `pbs-verify-new=false`.
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (head, target) = match spec.split_once('@') {
            Some((h, t)) => (h.trim(), Some(t.trim())),
            None => (spec.trim(), None),
        };
        let (name, value) = match head.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (head, None),
        };
        let need = |what: &str| {
            value.ok_or_else(|| format!("fault '{name}' needs a value ({what}), e.g. '{name}=...'"))
        };
        let mut endpoint = EndpointFault::default();
        if let Some(target) = target {
            match target.split_once(' ') {
                Some((m, p)) => {
                    endpoint.method = Some(m.to_ascii_uppercase());
                    endpoint.path = p.trim().to_string();
                }
                None => endpoint.path = target.to_string(),
            }
        }
        let rate = |v: &str| match v.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
            _ => Err(format!("fault '{name}': rate must be between 0 and 1, got '{v}'")),
        };
        let count = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("fault '{name}': expected a count, got '{v}'"))
        };
        match name {
            "error-rate" => endpoint.error_rate = rate(need("0..1")?)?,
            "fail-next" => endpoint.fail_next = count(need("count")?)?,
            "drop-rate" => endpoint.drop_rate = rate(need("0..1")?)?,
            "drop-next" => endpoint.drop_next = count(need("count")?)?,
            "lose-answer-next" => endpoint.lose_answer_next = count(need("count")?)?,
            "latency" => endpoint.latency = parse_duration(need("duration like 250ms or 2s")?)?,
            "node-offline" => {
                return Ok(Fault::NodeOffline {
                    node: need("node name")?.to_string(),
                });
            }
            "node-online" => {
                return Ok(Fault::NodeOnline {
                    node: need("node name")?.to_string(),
                });
            }
            "quorum-loss" => {
                return Ok(Fault::QuorumLoss {
                    lost: value != Some("0") && value != Some("false"),
                });
            }
            "task-failure" => {
                return Ok(Fault::TaskFailure {
                    task_type: need("task type")?.to_string(),
                    message: default_message(),
                    count: 1,
                });
            }
            "expire-tickets" => return Ok(Fault::ExpireTickets),
            "storage-full" => {
                let v = need("storage[:avail bytes]")?;
                let (storage, avail) = v.split_once(':').unwrap_or((v, "0"));
                let avail_bytes = avail
                    .parse::<u64>()
                    .map_err(|_| format!("fault '{name}': expected bytes after ':', got '{avail}'"))?;
                return Ok(Fault::StorageFull {
                    storage: storage.to_string(),
                    avail_bytes,
                });
            }
            "storage-free" => {
                return Ok(Fault::StorageFree {
                    storage: need("storage")?.to_string(),
                });
            }
            "pbs-verify-failure" => {
                let vmid = value
                    .map(|v| {
                        v.parse::<u32>()
                            .map_err(|_| format!("fault '{name}': expected a VMID, got '{v}'"))
                    })
                    .transpose()?;
                return Ok(Fault::PbsVerifyFailure { vmid, count: 1 });
            }
            "pbs-verify-new" => {
                return Ok(Fault::PbsVerifyNew {
                    enabled: value != Some("0") && value != Some("false"),
                });
            }
            _ => {
                return Err(format!(
                    "unknown fault '{name}' (use error-rate, fail-next, drop-rate, drop-next, lose-answer-next, latency, node-offline, node-online, quorum-loss, task-failure, expire-tickets, storage-full, storage-free, pbs-verify-failure, pbs-verify-new)"
                ));
            }
        }
        Ok(Fault::Endpoint(endpoint))
    }
}

/// Parses `250ms`, `2s`, `1.5s`, `3m`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let (num, unit) = text.split_at(text.trim_end_matches(|c: char| c.is_ascii_alphabetic()).len());
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration '{text}' (use e.g. 250ms, 2s, 3m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in '{text}' (use ms, s, m or h)")),
    };
    if !(0.0..=86_400.0 * 365.0).contains(&secs) {
        return Err(format!("duration '{text}' out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What to do with one request.
#[derive(Debug, Default)]
pub(crate) struct Decision {
    pub(crate) latency: Duration,
    pub(crate) drop: bool,
    /// Carry the request out, then drop the connection.
    pub(crate) lose_answer: bool,
    pub(crate) error: Option<ApiError>,
}

struct FaultState {
    rng: StdRng,
    endpoints: Vec<EndpointFault>,
    task_failures: BTreeMap<String, VecDeque<String>>,
}

/// The fault registry.
pub(crate) struct Faults {
    state: Mutex<FaultState>,
}

impl Faults {
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            state: Mutex::new(FaultState {
                rng: StdRng::seed_from_u64(seed ^ 0xFA17),
                endpoints: Vec::new(),
                task_failures: BTreeMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn add_endpoint(&self, fault: EndpointFault) {
        self.lock().endpoints.push(fault);
    }

    pub(crate) fn add_task_failure(&self, task_type: &str, message: &str, count: u32) {
        let mut state = self.lock();
        let queue = state.task_failures.entry(task_type.to_string()).or_default();
        queue.extend(std::iter::repeat_n(message.to_string(), count as usize));
    }

    pub(crate) fn clear(&self) {
        let mut state = self.lock();
        state.endpoints.clear();
        state.task_failures.clear();
    }

    /// Consumes an injected failure for the next task of `task_type`.
    pub(crate) fn take_task_failure(&self, task_type: &str) -> Option<String> {
        self.lock()
            .task_failures
            .get_mut(task_type)
            .and_then(VecDeque::pop_front)
    }

    /// Decides latency, drop and error for a request.
    pub(crate) fn decide(&self, method: &str, template: &str) -> Decision {
        let mut state = self.lock();
        let FaultState { rng, endpoints, .. } = &mut *state;
        let mut decision = Decision::default();
        for fault in endpoints.iter_mut().filter(|f| f.matches(method, template)) {
            decision.latency += fault.latency;
            if !decision.drop
                && (fault.drop_next > 0 || (fault.drop_rate > 0.0 && rng.random::<f64>() < fault.drop_rate))
            {
                fault.drop_next = fault.drop_next.saturating_sub(1);
                decision.drop = true;
            }
            if !decision.lose_answer && fault.lose_answer_next > 0 {
                fault.lose_answer_next -= 1;
                decision.lose_answer = true;
            }
            if decision.error.is_none()
                && (fault.fail_next > 0 || (fault.error_rate > 0.0 && rng.random::<f64>() < fault.error_rate))
            {
                fault.fail_next = fault.fail_next.saturating_sub(1);
                let mut err = ApiError::with_status(fault.status, fault.message.clone());
                if !err.message.ends_with('\n') {
                    err.message.push('\n');
                }
                decision.error = Some(err);
            }
        }
        decision
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_specs_parse_into_faults() {
        let f: Result<Fault, _> = "fail-next=2@post /nodes/{node}/vzdump".parse();
        let expected = EndpointFault {
            method: Some("POST".into()),
            path: "/nodes/{node}/vzdump".into(),
            fail_next: 2,
            ..Default::default()
        };
        assert_eq!(f, Ok(Fault::Endpoint(expected)));
        assert_eq!(
            "node-offline=pve2".parse::<Fault>(),
            Ok(Fault::NodeOffline { node: "pve2".into() })
        );
        assert_eq!(
            "latency=250ms"
                .parse::<Fault>()
                .map(|f| matches!(f, Fault::Endpoint(e) if e.latency == Duration::from_millis(250))),
            Ok(true)
        );
        assert!("error-rate=2".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
        let json: Result<Fault, _> = serde_json::from_str(r#"{"kind":"task-failure","taskType":"vzdump"}"#);
        assert!(matches!(json, Ok(Fault::TaskFailure { count: 1, .. })));
    }

    #[test]
    fn storage_and_pbs_fault_specs_parse() {
        let parse = |s: &str| s.parse::<Fault>();
        assert_eq!(
            parse("storage-full=local"),
            Ok(Fault::StorageFull {
                storage: "local".into(),
                avail_bytes: 0
            })
        );
        assert_eq!(
            parse("storage-full=pbs:4096"),
            Ok(Fault::StorageFull {
                storage: "pbs".into(),
                avail_bytes: 4096
            })
        );
        assert!(parse("storage-full=pbs:lots").is_err());
        assert_eq!(
            parse("storage-free=local"),
            Ok(Fault::StorageFree {
                storage: "local".into()
            })
        );
        assert_eq!(
            parse("pbs-verify-failure=100"),
            Ok(Fault::PbsVerifyFailure {
                vmid: Some(100),
                count: 1
            })
        );
        assert_eq!(
            parse("pbs-verify-failure"),
            Ok(Fault::PbsVerifyFailure { vmid: None, count: 1 })
        );
        assert_eq!(
            parse("pbs-verify-new=false"),
            Ok(Fault::PbsVerifyNew { enabled: false })
        );
        let json: Fault =
            serde_json::from_str(r#"{"kind":"storage-full","storage":"local","availBytes":10}"#).unwrap();
        assert_eq!(
            json,
            Fault::StorageFull {
                storage: "local".into(),
                avail_bytes: 10
            }
        );
        let json: Fault = serde_json::from_str(
            r#"{"kind":"pbs-verification","volid":"pbs:backup/vm/1/x","state":"failed"}"#,
        )
        .unwrap();
        assert!(matches!(json, Fault::PbsVerification { state: Some(s), .. } if s == "failed"));
    }

    #[test]
    fn fail_next_counts_down_and_error_rate_is_deterministic_per_seed() {
        let faults = Faults::new(1);
        faults.add_endpoint(EndpointFault {
            fail_next: 2,
            path: "/version".into(),
            ..Default::default()
        });
        assert!(faults.decide("GET", "/version").error.is_some());
        assert!(faults.decide("GET", "/nodes").error.is_none());
        assert!(faults.decide("GET", "/version").error.is_some());
        assert!(faults.decide("GET", "/version").error.is_none());
        let run = |seed| {
            let f = Faults::new(seed);
            f.add_endpoint(EndpointFault {
                error_rate: 0.5,
                ..Default::default()
            });
            (0..32)
                .map(|_| f.decide("GET", "/x").error.is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(9), run(9));
        faults.add_task_failure("vzdump", "boom", 1);
        assert_eq!(faults.take_task_failure("vzdump").as_deref(), Some("boom"));
        assert_eq!(faults.take_task_failure("vzdump"), None);
    }
}
