//! The operator's small HTTP server: `/metrics` (Prometheus text format), `/healthz` (liveness)
//! and `/readyz` (readiness).

use std::{
    fmt,
    future::Future,
    sync::{Arc, PoisonError, RwLock},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;

use crate::metrics::Metrics;

/// Where the operator is in its life; `/readyz` answers from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Connecting, nothing checked yet.
    Starting,
    /// Waiting for these CustomResourceDefinitions to be established.
    WaitingForCrds(Vec<String>),
    /// CRDs are established; another replica holds the leader lease and this one stands by.
    Standby,
    /// This replica runs the controllers.
    Leading,
    /// Shutting down.
    Stopping,
}

impl Readiness {
    /// Ready means the pod may count as available: CRDs are there and it either runs the
    /// controllers or stands by for the lease. A standby must be ready, else a rollout (new pod
    /// must be ready before the old one, which holds the lease, is stopped) never completes.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Standby | Self::Leading)
    }
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Starting => f.write_str("starting"),
            Self::WaitingForCrds(crds) => write!(
                f,
                "waiting for CustomResourceDefinitions to be established: {}",
                crds.join(", ")
            ),
            Self::Standby => f.write_str("standby: another replica holds the leader lease"),
            Self::Leading => f.write_str("leading: controllers running"),
            Self::Stopping => f.write_str("stopping"),
        }
    }
}

/// Shared, cheap-to-clone readiness state.
#[derive(Clone, Debug)]
pub struct Health {
    state: Arc<RwLock<Readiness>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Starts in [`Readiness::Starting`].
    pub fn new() -> Self {
        Self {
            state: Arc::new(RwLock::new(Readiness::Starting)),
        }
    }

    /// The current state.
    pub fn get(&self) -> Readiness {
        // A plain value swap cannot leave the state half-written, so a poisoned lock is usable.
        self.state.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Moves to `state`.
    pub fn set(&self, state: Readiness) {
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = state;
    }
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    health: Health,
}

/// The router: `/metrics`, `/healthz`, `/readyz`.
pub fn router(metrics: Metrics, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, health })
}

/// Serves [`router`] on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Health,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn metrics_handler(State(state): State<AppState>) -> Response {
    match state.metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let readiness = state.health.get();
    let code = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{readiness}\n")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_standby_and_leading_are_ready_others_not() {
        assert!(Readiness::Standby.is_ready());
        assert!(Readiness::Leading.is_ready());
        assert!(!Readiness::Starting.is_ready());
        assert!(!Readiness::WaitingForCrds(vec!["a.b".into()]).is_ready());
        assert!(!Readiness::Stopping.is_ready());
    }

    #[test]
    fn readiness_waiting_names_the_crds() {
        let r = Readiness::WaitingForCrds(vec!["services.autopilot.homelab.dev".into()]);
        assert!(r.to_string().contains("services.autopilot.homelab.dev"));
    }

    #[test]
    fn health_set_then_get_returns_new_state() {
        let h = Health::new();
        assert_eq!(h.get(), Readiness::Starting);
        h.clone().set(Readiness::Leading);
        assert_eq!(h.get(), Readiness::Leading);
    }
}
