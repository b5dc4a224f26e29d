//! QEMU guest agent: ping, network interfaces, exec and exec-status.
//!
//! `exec` starts a process and returns its pid; `exec-status` reports on it. The agent forgets a
//! pid after the first status read that reports it exited (qemu-ga removes the entry), so the
//! caller must keep the result of that read; a later read fails with [`Error::NotFound`].

use serde::Deserialize;
use serde_json::Value;

use crate::proxmox::client::PveClient;
use crate::proxmox::decode;
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::request::Call;
use crate::proxmox::types::{NodeName, Vmid};

/// The schema's `maxLength` of `input-data`.
const MAX_INPUT_DATA: usize = 65536;

/// One IP address of an interface.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentIpAddress {
    /// The address.
    #[serde(rename = "ip-address")]
    pub ip_address: String,
    /// `ipv4` or `ipv6`.
    #[serde(rename = "ip-address-type", default)]
    pub ip_address_type: String,
    /// Prefix length.
    #[serde(default, deserialize_with = "decode::opt_u64")]
    pub prefix: Option<u64>,
}

/// One interface from `network-get-interfaces`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AgentInterface {
    /// Interface name (`lo`, `eth0`...).
    pub name: String,
    /// MAC address.
    #[serde(rename = "hardware-address", default)]
    pub hardware_address: Option<String>,
    /// Addresses.
    #[serde(rename = "ip-addresses", default)]
    pub ip_addresses: Vec<AgentIpAddress>,
}

/// `GET .../agent/exec-status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ExecStatus {
    /// Whether the process has ended.
    #[serde(default, deserialize_with = "decode::bool_lenient")]
    pub exited: bool,
    /// Exit code, when it ended normally.
    #[serde(default, deserialize_with = "decode::opt_i64")]
    pub exitcode: Option<i64>,
    /// Signal, when it was killed.
    #[serde(default, deserialize_with = "decode::opt_i64")]
    pub signal: Option<i64>,
    /// Standard output (PVE has already base64-decoded it).
    #[serde(rename = "out-data", default)]
    pub out_data: Option<String>,
    /// Standard error.
    #[serde(rename = "err-data", default)]
    pub err_data: Option<String>,
    /// Whether stdout was cut at the agent's 16 MiB cap.
    #[serde(rename = "out-truncated", default, deserialize_with = "decode::bool_lenient")]
    pub out_truncated: bool,
    /// Whether stderr was cut.
    #[serde(rename = "err-truncated", default, deserialize_with = "decode::bool_lenient")]
    pub err_truncated: bool,
}

#[derive(Deserialize)]
struct AgentResult<T> {
    result: T,
}

#[derive(Deserialize)]
struct ExecStarted {
    #[serde(deserialize_with = "decode::u64_lenient")]
    pid: u64,
}

fn agent_call(op: ops::Operation, node: &NodeName, vmid: Vmid) -> Call {
    Call::new(op, &[node.as_str(), &vmid.to_string()])
}

impl PveClient {
    /// `POST .../agent/ping`: succeeds when the agent answers. A stopped agent is
    /// `Api { status: 500, message: "QEMU guest agent is not running" }` (transient).
    pub async fn agent_ping(&self, node: &NodeName, vmid: Vmid) -> Result<()> {
        self.run::<Option<Value>>(agent_call(ops::AGENT_PING, node, vmid))
            .await
            .map(drop)
    }

    /// `GET .../agent/network-get-interfaces`.
    pub async fn agent_network_interfaces(&self, node: &NodeName, vmid: Vmid) -> Result<Vec<AgentInterface>> {
        let r: AgentResult<Vec<AgentInterface>> = self
            .run(agent_call(ops::AGENT_NETWORK_INTERFACES, node, vmid))
            .await?;
        Ok(r.result)
    }

    /// `POST .../agent/exec`: starts `command` (program and arguments) in the guest and returns its
    /// pid. Not retried: a repeat would run the command twice.
    pub async fn agent_exec(
        &self,
        node: &NodeName,
        vmid: Vmid,
        command: &[String],
        input: Option<&str>,
    ) -> Result<u64> {
        if command.first().is_none_or(|c| c.is_empty()) {
            return Err(Error::InvalidRequest {
                message: "agent exec needs a program to run".into(),
            });
        }
        if input.is_some_and(|i| i.len() > MAX_INPUT_DATA) {
            return Err(Error::InvalidRequest {
                message: format!("agent exec input-data is limited to {MAX_INPUT_DATA} bytes"),
            });
        }
        let call = agent_call(ops::AGENT_EXEC, node, vmid)
            .array("command", command)
            .opt("input-data", input);
        let started: ExecStarted = self.run(call).await?;
        Ok(started.pid)
    }

    /// `GET .../agent/exec-status?pid=`. Keep the first result with `exited`: the agent forgets
    /// the pid then, and asking again gives [`Error::NotFound`].
    pub async fn agent_exec_status(&self, node: &NodeName, vmid: Vmid, pid: u64) -> Result<ExecStatus> {
        match self
            .run(agent_call(ops::AGENT_EXEC_STATUS, node, vmid).arg("pid", pid))
            .await
        {
            Err(Error::Api { message, .. }) if message.contains("Invalid parameter 'pid'") => {
                Err(Error::NotFound {
                    message: format!(
                        "the guest agent of VM {vmid} does not know pid {pid} (its exit was already reported, \
                     or the agent restarted): {message}"
                    ),
                })
            }
            other => other,
        }
    }
}
