//! A stand-in for a guest's web service on loopback: answers every HTTP request with a status
//! and body that can be changed at run time (a healthy Nextcloud `status.php` by default), and
//! accepts plain TCP connections. The demo points the examples' HTTP and TCP health checks at
//! it; tests use it as the "real local listener" of a check.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU16, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse};
use tokio::{net::TcpListener, task::JoinHandle};

/// The body a healthy Nextcloud serves at `/status.php`.
pub const NEXTCLOUD_STATUS: &str = r#"{"installed":true,"maintenance":false,"needsDbUpgrade":false,"version":"31.0.0.18","productname":"Nextcloud"}"#;

#[derive(Debug)]
struct Reply {
    status: AtomicU16,
    body: Mutex<String>,
}

/// A running stand-in; dropping it stops the server.
#[derive(Debug)]
pub struct StandIn {
    addr: SocketAddr,
    reply: Arc<Reply>,
    server: JoinHandle<()>,
}

async fn answer(State(reply): State<Arc<Reply>>) -> impl IntoResponse {
    let status = StatusCode::from_u16(reply.status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK);
    let body = reply.body.lock().unwrap_or_else(PoisonError::into_inner).clone();
    (status, body)
}

impl StandIn {
    /// Starts serving on `127.0.0.1:0` (HTTP 200 with [`NEXTCLOUD_STATUS`]).
    pub async fn start() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let reply = Arc::new(Reply {
            status: AtomicU16::new(200),
            body: Mutex::new(NEXTCLOUD_STATUS.to_owned()),
        });
        let app = Router::new().fallback(answer).with_state(Arc::clone(&reply));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "stand-in HTTP server stopped");
            }
        });
        Ok(Self { addr, reply, server })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The HTTP status of the next answers.
    pub fn set_status(&self, status: u16) {
        self.reply.status.store(status, Ordering::Relaxed);
    }

    /// The body of the next answers.
    pub fn set_body(&self, body: &str) {
        *self.reply.body.lock().unwrap_or_else(PoisonError::into_inner) = body.to_owned();
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.server.abort();
    }
}
