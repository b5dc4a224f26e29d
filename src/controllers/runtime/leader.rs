//! Leader election on a `coordination.k8s.io/v1` Lease, so that two replicas never act at once,
//! even during a rollout (see ARCHITECTURE.md).
//!
//! The algorithm is client-go's `leaderelection`: every write is a compare-and-swap on the Lease's
//! resourceVersion, and expiry is judged on the *local monotonic clock* from the moment this
//! replica first observed the current record, never from the timestamps in it (clocks of two
//! nodes may disagree). The leader renews every `renew_interval`; if it cannot renew within
//! `renew_deadline` (< `lease_duration`) it steps down, so it stops acting at least
//! `lease_duration - renew_deadline` before any candidate may take over. A released Lease (no
//! holder) is taken at once.
//!
//! (The `kube-lease-manager` crate was considered: it keeps reporting leadership while it cannot
//! reach the API server, so a partitioned leader would go on acting after its lease expired.)

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::error::{Error, kube_error_is_transient};

/// Timing and identity of the leader election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// How long a holder's claim lasts after a candidate observed it (written into the Lease).
    pub lease_duration: Duration,
    /// The leader steps down if it could not renew for this long. Less than `lease_duration`.
    pub renew_deadline: Duration,
    /// How often the leader renews. Less than `renew_deadline`.
    pub renew_interval: Duration,
    /// How often a candidate retries, and a leader retries a failed renewal.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The production timing: lease 15 s, renew every 5 s, step down after 10 s without renewal,
    /// candidates retry every 2 s.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            renew_interval: Duration::from_secs(5),
            retry_period: Duration::from_secs(2),
        }
    }

    /// The same with the leader stepping down after `deadline` without a renewal: the Lease lasts
    /// 5 s longer (the margin between stepping down and a takeover), and the leader renews
    /// every 5 s or twice per deadline, whichever is more often.
    pub fn with_renew_deadline(mut self, deadline: Duration) -> Self {
        self.renew_deadline = deadline;
        self.lease_duration = deadline + Duration::from_secs(5);
        self.renew_interval = (deadline / 2).min(Duration::from_secs(5));
        self
    }

    /// Checks the timing relations the safety argument rests on.
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() {
            return Err("the leader election identity is empty; set POD_NAME".into());
        }
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            return Err("lease_duration must be a whole number of seconds, at least 1".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err("renew_deadline must be shorter than lease_duration".into());
        }
        if self.renew_interval >= self.renew_deadline || self.retry_period.is_zero() {
            return Err("renew_interval must be shorter than renew_deadline, retry_period above 0".into());
        }
        Ok(())
    }
}

/// Outcome of one [`LeaderElector::try_acquire_or_renew`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// We hold the lease (acquired or renewed).
    Leading,
    /// Another replica holds a lease that has not expired in our observation.
    HeldBy(String),
    /// Another writer changed the Lease between our read and our write.
    Conflict,
}

#[derive(Debug)]
struct Observed {
    resource_version: Option<String>,
    holder: Option<String>,
    duration: Duration,
    /// Local time at which this record was first seen (or, for our own writes, sent).
    at: Instant,
}

/// One replica's side of the election.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
    last_renew: Option<Instant>,
}

impl LeaderElector {
    /// An elector for `config.namespace/config.name`.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
            last_renew: None,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// True if our last read or write of the Lease showed us as holder.
    pub fn is_leader(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| o.holder.as_deref() == Some(self.config.identity.as_str()))
    }

    /// One step: create the Lease if missing, renew it if ours, take it if released or expired
    /// in our observation, else report who holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let started = Instant::now();
        let Some(current) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => Ok(self.won(&created, started)),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
                Err(e) => Err(e),
            };
        };
        self.observe(&current, Instant::now());
        let spec = current.spec.clone().unwrap_or_default();
        if let Some(holder) = spec.holder_identity.as_deref().filter(|h| !h.is_empty())
            && holder != self.config.identity
        {
            let valid = self
                .observed
                .as_ref()
                .is_some_and(|o| o.at.elapsed() < o.duration);
            if valid {
                return Ok(Attempt::HeldBy(holder.to_owned()));
            }
            info!(lease = %self.config.name, previous = holder, "leader lease expired; taking over");
        }
        let mut next = current;
        next.spec = Some(self.record(Some(&spec)));
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => Ok(self.won(&written, started)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Conflict),
            Err(e) => Err(e),
        }
    }

    /// Retries until this replica leads (`true`) or `shutdown` fires (`false`). API errors that
    /// retrying cannot fix (no RBAC, namespace missing) end the wait with an error.
    pub async fn acquire(&mut self, shutdown: &CancellationToken) -> Result<bool, Error> {
        let mut announced = None;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(Attempt::Leading) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "acquired leader lease");
                    return Ok(true);
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if announced.as_ref() != Some(&holder) {
                        info!(lease = %self.config.name, %holder, "standing by: leader lease held by another replica");
                        announced = Some(holder);
                    }
                }
                Ok(Attempt::Conflict) => {
                    debug!(lease = %self.config.name, "leader lease changed concurrently")
                }
                Err(e) if kube_error_is_transient(&e) => {
                    warn!(lease = %self.config.name, error = %e, "cannot reach leader lease; retrying");
                }
                Err(source) => return Err(self.lease_error(source)),
            }
            let pause = self
                .config
                .retry_period
                .mul_f64(rand::rng().random_range(1.0..1.2));
            tokio::select! {
                () = shutdown.cancelled() => return Ok(false),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Renews the lease until leadership is lost, then returns why. Never returns while we lead.
    /// Call it after [`LeaderElector::acquire`]; without the lease it returns at once.
    pub async fn hold(&mut self) -> Error {
        if !self.is_leader() {
            return self.lost("this replica does not hold it".into());
        }
        let mut pause = self.config.renew_interval;
        loop {
            let last = self.last_renew.unwrap_or_else(Instant::now);
            let remaining = self.config.renew_deadline.saturating_sub(last.elapsed());
            tokio::time::sleep(pause.min(remaining)).await;
            let remaining = self.config.renew_deadline.saturating_sub(last.elapsed());
            if remaining.is_zero() {
                return self.lost(format!("not renewed within {:?}", self.config.renew_deadline));
            }
            pause = self.config.retry_period.min(self.config.renew_interval);
            match tokio::time::timeout(remaining, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Leading)) => pause = self.config.renew_interval,
                Ok(Ok(Attempt::HeldBy(holder))) => return self.lost(format!("now held by {holder}")),
                Ok(Ok(Attempt::Conflict)) => {
                    debug!(lease = %self.config.name, "renewal conflicted; retrying")
                }
                Ok(Err(e)) => {
                    warn!(lease = %self.config.name, error = %e, "cannot renew leader lease; retrying")
                }
                Err(_) => return self.lost(format!("not renewed within {:?}", self.config.renew_deadline)),
            }
        }
    }

    /// Gives the lease up if we hold it (graceful shutdown), so a standby takes over at once.
    /// Returns whether it was ours.
    pub async fn release(&mut self) -> Result<bool, Error> {
        if !self.is_leader() {
            return Ok(false);
        }
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
                return Ok(false);
            };
            let mut spec = lease.spec.clone().unwrap_or_default();
            if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
                return Ok(false);
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(Timestamp::now()));
            lease.spec = Some(spec);
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        .await;
        self.observed = None;
        self.last_renew = None;
        match result {
            Ok(released) => {
                if released {
                    info!(lease = %self.config.name, identity = %self.config.identity, "released leader lease");
                }
                Ok(released)
            }
            Err(source) => Err(self.lease_error(source)),
        }
    }

    fn record(&self, old: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let ours = old.and_then(|o| o.holder_identity.as_deref()) == Some(self.config.identity.as_str());
        let transitions = old.and_then(|o| o.lease_transitions).unwrap_or(0);
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if ours {
                old.and_then(|o| o.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(match old {
                Some(_) if !ours => transitions.saturating_add(1),
                _ => transitions,
            }),
            ..LeaseSpec::default()
        }
    }

    fn observe(&mut self, lease: &Lease, at: Instant) {
        let rv = lease.metadata.resource_version.clone();
        if self.observed.as_ref().is_some_and(|o| o.resource_version == rv) {
            return;
        }
        let spec = lease.spec.as_ref();
        let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
        self.observed = Some(Observed {
            resource_version: rv,
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty()),
            duration: Duration::from_secs(u64::try_from(seconds).unwrap_or(0)),
            at,
        });
    }

    fn won(&mut self, lease: &Lease, sent: Instant) -> Attempt {
        self.observed = None;
        self.observe(lease, sent);
        self.last_renew = Some(sent);
        Attempt::Leading
    }

    fn lost(&mut self, reason: String) -> Error {
        self.observed = None;
        self.last_renew = None;
        Error::LeadershipLost {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            reason,
        }
    }

    fn lease_error(&self, source: kube::Error) -> Error {
        Error::Lease {
            namespace: self.config.namespace.clone(),
            name: self.config.name.clone(),
            source,
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;
