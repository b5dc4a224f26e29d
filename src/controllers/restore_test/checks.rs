//! The checks on a started copy: all must pass together once within `bootTimeoutSeconds`. The
//! copy is ready when it runs (and, for checks that need it, its guest agent answers); the RTO
//! clock stops at the first pass where every check passed. `TCP` and `HTTP` checks only ever
//! reach addresses inside `network.probeCidr`: the copy keeps its production address, so a probe
//! of anything else could reach production and pass.

use std::time::Duration;

use super::plan;
use super::steps::guest_of;
use super::{Pass, reasons};
use crate::controllers::kit::time::elapsed;
use crate::controllers::pve::guest::{GuestFacts, GuestView, power_state};
use crate::controllers::pve::probe::{Probe, probe};
use crate::controllers::pve::task::{TaskView, poll_task};
use crate::crd::common::GuestType;
use crate::crd::health::{HealthCheck, HealthCheckType};
use crate::crd::restore_test::{CheckOutcome, RestorePhase, RestoreResult, RestoreResultDetail};
use crate::crd::service::PowerState;
use crate::proxmox::PveClient;

/// The host a TCP or HTTP check connects to.
fn probe_host(check: &HealthCheck) -> Option<String> {
    if let Some(tcp) = &check.tcp {
        return Some(tcp.host.clone());
    }
    let url = reqwest::Url::parse(&check.http.as_ref()?.url).ok()?;
    url.host_str().map(|h| h.trim_matches(['[', ']']).to_owned())
}

/// Whether every address `host` resolves to lies inside `cidr`; the reason otherwise.
async fn inside_probe_cidr(host: &str, cidr: Option<&str>) -> Result<(), String> {
    let Some(cidr) = cidr else {
        return Err("TCP and HTTP checks need network.probeCidr (the path into the isolated network)".into());
    };
    let addrs: Vec<std::net::IpAddr> = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => tokio::net::lookup_host((host, 0))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(format!("{host} resolves to no address"));
    }
    match addrs.iter().find(|ip| !plan::in_cidr(**ip, cidr)) {
        Some(outside) => Err(format!(
            "refused: {host} ({outside}) is outside network.probeCidr {cidr}; a probe there could reach production instead of the restored copy"
        )),
        None => Ok(()),
    }
}

impl Pass<'_> {
    async fn run_check(&self, check: &HealthCheck, view: &GuestView, client: &PveClient) -> CheckOutcome {
        let probe_result = if matches!(check.type_, HealthCheckType::Tcp | HealthCheckType::Http) {
            match probe_host(check) {
                None => Probe::fail("the check names no host"),
                Some(host) => match inside_probe_cidr(&host, self.spec.network.probe_cidr.as_deref()).await {
                    Err(why) => Probe::fail(why),
                    Ok(()) => probe(check, view, Some(client), &self.deps.health).await,
                },
            }
        } else {
            probe(check, view, Some(client), &self.deps.health).await
        };
        CheckOutcome {
            name: check.name.clone(),
            passed: probe_result.ok,
            message: probe_result.message,
        }
    }

    pub(super) async fn checking(
        &mut self,
        r: &mut RestoreResultDetail,
        target: Option<i64>,
        client: &PveClient,
    ) {
        let Some(guest) = guest_of(r) else {
            return self.fail(r, reasons::ABORTED, "no VMID recorded".into());
        };
        // A live restore: the VM runs while its restore task still writes.
        if let Some(upid) = r.upid.clone() {
            match poll_task(client, &upid).await {
                TaskView::Running(_) | TaskView::None => {}
                TaskView::Done { error: None, .. } => {
                    r.restored_time = Some(self.now);
                    r.upid = None;
                }
                TaskView::Done { error: Some(e), .. } => {
                    return self.fail(
                        r,
                        reasons::RESTORE_FAILED,
                        format!("the live restore failed: {e}"),
                    );
                }
            }
        }
        let status = match client.guest_status(&guest).await {
            Ok(s) => s,
            Err(e) if e.is_transient() => {
                r.message = format!("cannot read the copy's state: {e}");
                self.soon(self.proxmox.tuning.reconnect_min);
                return;
            }
            Err(e) => return self.fail(r, reasons::ABORTED, format!("the copy vanished: {e}")),
        };
        let power = power_state(&status.status, status.qmpstatus.as_deref());
        let view = GuestView::Found(GuestFacts {
            guest: guest.clone(),
            name: status.name.clone(),
            power,
            uptime: status.uptime,
            lock: status.lock.clone(),
            template: status.template,
        });
        let checks = plan::effective_checks(&self.spec.health_checks, r.type_, status.agent);
        let needs_agent = r.type_ == GuestType::Vm && plan::needs_agent(&checks);
        let running = power == PowerState::Running;
        let ready = running && (!needs_agent || client.agent_ping(&guest.node, guest.vmid).await.is_ok());
        if ready && r.guest_ready_time.is_none() {
            r.guest_ready_time = Some(self.now);
        }
        r.checks = if running {
            futures::future::join_all(checks.iter().map(|c| self.run_check(c, &view, client))).await
        } else {
            checks
                .iter()
                .map(|c| CheckOutcome {
                    name: c.name.clone(),
                    passed: false,
                    message: format!("the copy is {}", status.status),
                })
                .collect()
        };
        let failing: Vec<String> = r
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.message))
            .collect();
        if ready && failing.is_empty() {
            r.healthy_time = Some(self.now);
            r.finished_time = Some(self.now);
            plan::breakdown(r);
            // The run's target, as recorded when it started: an edit mid-run judges the next.
            let result = plan::judge(r.rto_seconds, target);
            r.result = Some(result);
            let rto = r.rto_seconds.unwrap_or(0);
            (r.reason, r.message) = match (result, target) {
                (RestoreResult::RtoExceeded, Some(t)) => (
                    reasons::TARGET_EXCEEDED.to_owned(),
                    format!("healthy after {rto} s, over the target of {t} s"),
                ),
                (_, Some(t)) => (
                    reasons::WITHIN_TARGET.to_owned(),
                    format!("healthy after {rto} s, within the target of {t} s"),
                ),
                (_, None) => (reasons::PASSED.to_owned(), format!("healthy after {rto} s")),
            };
            r.phase = RestorePhase::CleaningUp;
            self.deps
                .release_node(self.cluster_uid(), &r.node, self.input.uid);
            self.soon(Duration::ZERO);
            return;
        }
        let since = r.booted_time.unwrap_or(self.now);
        let limit = Duration::from_secs(u64::try_from(self.spec.boot_timeout_seconds).unwrap_or(600));
        if elapsed(since, self.now) >= limit {
            let (reason, message) = if ready {
                (
                    reasons::CHECK_FAILED,
                    format!(
                        "checks still failing after {} s: {}",
                        limit.as_secs(),
                        failing.join("; ")
                    ),
                )
            } else {
                (
                    reasons::BOOT_TIMEOUT,
                    format!(
                        "the copy was not ready within bootTimeoutSeconds ({} s): {}",
                        limit.as_secs(),
                        failing.join("; ")
                    ),
                )
            };
            return self.fail(r, reason, message);
        }
        r.message = format!("waiting for {}", failing.join("; "));
        self.soon(self.proxmox.tuning.task_poll.min(Duration::from_secs(5)));
    }
}
