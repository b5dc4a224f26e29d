//! `/access/ticket`: logging in with user and password, and renewing the ticket.

use serde::Deserialize;

use crate::proxmox::auth::{Secret, Ticket};
use crate::proxmox::client::{AuthState, PveClient};
use crate::proxmox::error::{Error, Result};
use crate::proxmox::ops;
use crate::proxmox::request::Call;

/// `POST /access/ticket` response. Secrets stay in [`Secret`]s.
#[derive(Debug, Clone, Deserialize)]
pub struct TicketResponse {
    /// The authenticated user.
    pub username: String,
    /// The ticket (absent in verify mode).
    #[serde(default)]
    pub ticket: Option<Secret>,
    /// The CSRF token for non-GET requests.
    #[serde(default, rename = "CSRFPreventionToken")]
    pub csrf_prevention_token: Option<Secret>,
    /// Cluster name, when clustered.
    #[serde(default)]
    pub clustername: Option<String>,
    /// Set when a second factor is still required.
    #[serde(
        default,
        rename = "NeedTFA",
        deserialize_with = "crate::proxmox::decode::bool_lenient"
    )]
    pub need_tfa: bool,
}

impl PveClient {
    /// Exchanges `password` (or a still-valid ticket, to renew it) for a ticket.
    async fn login(&self, username: &str, password: &Secret) -> Result<Ticket> {
        let mut call = Call::new(ops::ACCESS_TICKET, &[])
            .arg("username", username)
            .arg("password", password.expose());
        call.authenticated = false;
        call.sensitive_response = true;
        let resp: TicketResponse = self.run(call).await?;
        if resp.need_tfa {
            return Err(Error::Unauthorized {
                message: format!("{username} requires a second factor (TFA); use an API token instead"),
            });
        }
        let (Some(ticket), Some(csrf)) = (resp.ticket, resp.csrf_prevention_token) else {
            return Err(Error::Decode {
                what: ops::ACCESS_TICKET.to_string(),
                detail: "no ticket or CSRFPreventionToken in the response".into(),
            });
        };
        self.redactor().add(&ticket);
        self.redactor().add(&csrf);
        Ok(Ticket::new(ticket, csrf))
    }

    /// A valid ticket: the cached one, a renewed one when it is getting old, or a fresh login.
    pub(crate) async fn ticket(&self) -> Result<Ticket> {
        let AuthState::Ticket {
            username,
            password,
            ticket,
        } = self.auth_state()
        else {
            return Err(Error::InvalidRequest {
                message: "the client uses an API token, not tickets".into(),
            });
        };
        let mut cached = ticket.lock().await;
        if let Some(t) = cached.as_ref() {
            if !t.needs_renewal() {
                return Ok(t.clone());
            }
            match self.login(username, &t.ticket).await {
                Ok(renewed) => {
                    tracing::debug!("renewed PVE ticket");
                    *cached = Some(renewed.clone());
                    return Ok(renewed);
                }
                Err(e) => tracing::info!(error = %e, "renewing the PVE ticket failed; logging in again"),
            }
        }
        let fresh = self.login(username, password).await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }

    /// Pretends the cached ticket was received `by` earlier (tests of the renewal path).
    #[cfg(test)]
    pub(crate) async fn age_ticket(&self, by: std::time::Duration) {
        if let AuthState::Ticket { ticket, .. } = self.auth_state()
            && let Some(t) = ticket.lock().await.as_mut()
        {
            t.age(by);
        }
    }

    /// Drops `used` from the cache (after a 401), unless another call already replaced it.
    pub(crate) async fn forget_ticket(&self, used: &Ticket) {
        if let AuthState::Ticket { ticket, .. } = self.auth_state() {
            let mut cached = ticket.lock().await;
            if cached.as_ref().is_some_and(|t| t.ticket == used.ticket) {
                *cached = None;
            }
        }
    }
}
