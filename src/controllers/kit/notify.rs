//! Notifications to where a homelab already looks: Discord, Slack, ntfy or any webhook, their
//! URLs read from a Kubernetes Secret (keys `discord`, `slack`, `ntfy`, `webhook`), with a
//! cooldown per event and subject so a failing nightly job does not page every few minutes.
//!
//! The URLs carry tokens: they never appear in logs, status, Events or error messages (errors
//! name the channel and the HTTP status only).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use jiff::Timestamp;
use serde_json::json;

use super::time::elapsed;

/// Secret keys, one per channel kind.
pub const KEYS: [&str; 4] = ["discord", "slack", "ntfy", "webhook"];

/// Where a notice goes.
#[derive(Clone, PartialEq, Eq)]
pub enum Channel {
    /// A Discord webhook URL (`{"content": …}`).
    Discord(String),
    /// A Slack incoming webhook URL (`{"text": …}`).
    Slack(String),
    /// An ntfy topic URL (plain text body, `Title`, `Priority` and `Tags` headers).
    Ntfy(String),
    /// Any URL that takes a JSON object (`event`, `title`, `message`, `severity`, `labels`, `time`).
    Webhook(String),
}

impl std::fmt::Debug for Channel {
    // Never print the URL: it is a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Channel {
    /// The channel kind, as named in the Secret.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Discord(_) => "discord",
            Self::Slack(_) => "slack",
            Self::Ntfy(_) => "ntfy",
            Self::Webhook(_) => "webhook",
        }
    }
}

/// The channels a Secret's data configures (unknown keys are ignored; empty values too), or
/// which key is not a usable `http(s)://` URL.
pub fn channels(data: &BTreeMap<String, Vec<u8>>) -> Result<Vec<Channel>, String> {
    let mut out = Vec::new();
    for key in KEYS {
        let Some(raw) = data.get(key) else {
            continue;
        };
        let url = String::from_utf8_lossy(raw).trim().to_owned();
        if url.is_empty() {
            continue;
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "key {key} is not an http(s):// URL; put the webhook URL there"
            ));
        }
        out.push(match key {
            "discord" => Channel::Discord(url),
            "slack" => Channel::Slack(url),
            "ntfy" => Channel::Ntfy(url),
            _ => Channel::Webhook(url),
        });
    }
    Ok(out)
}

/// What to tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Event name, e.g. `BackupFailed`.
    pub event: String,
    /// One line, e.g. `Backup of nextcloud failed`.
    pub title: String,
    /// The details.
    pub message: String,
    /// Whether something is wrong.
    pub warning: bool,
    /// Where it comes from (`namespace`, `backuppolicy`, `service`...).
    pub labels: BTreeMap<String, String>,
    /// When it happened.
    pub time: Timestamp,
}

fn client() -> &'static Result<reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT.get_or_init(|| {
        let config = crate::proxmox::rustls_client_config(&crate::proxmox::TlsVerify::SystemRoots)
            .map_err(|e| format!("no TLS roots for notifications: {e}"))?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(config)
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("homelab-autopilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the notification HTTP client: {e}"))
    })
}

/// Sends `notice` to every channel; returns one line per channel that failed (channel name and
/// what happened, never the URL).
pub async fn send(channels: &[Channel], notice: &Notice) -> Vec<String> {
    let http = match client() {
        Ok(c) => c,
        Err(e) => return vec![e.clone()],
    };
    let mut failures = Vec::new();
    for channel in channels {
        let text = format!("{}\n{}", notice.title, notice.message);
        let request = match channel {
            Channel::Discord(url) => http.post(url).json(&json!({ "content": text })),
            Channel::Slack(url) => http.post(url).json(&json!({ "text": text })),
            Channel::Ntfy(url) => http
                .post(url)
                .header("Title", header_safe(&notice.title))
                .header("Priority", if notice.warning { "high" } else { "default" })
                .header(
                    "Tags",
                    if notice.warning {
                        "warning"
                    } else {
                        "white_check_mark"
                    },
                )
                .body(notice.message.clone()),
            Channel::Webhook(url) => http.post(url).json(&json!({
                "event": notice.event,
                "title": notice.title,
                "message": notice.message,
                "severity": if notice.warning { "warning" } else { "info" },
                "labels": notice.labels,
                "time": notice.time.to_string(),
            })),
        };
        match request.send().await {
            Ok(resp) if resp.status().is_success() => {}
            Ok(resp) => failures.push(format!("{}: HTTP {}", channel.name(), resp.status().as_u16())),
            // Without the URL: it holds the channel's token.
            Err(e) => failures.push(format!("{}: {}", channel.name(), e.without_url())),
        }
    }
    failures
}

fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii() && !c.is_ascii_control() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// When each (owner, event, subject) was last notified: a notice within `cooldown` of the last
/// one of the same key is dropped.
#[derive(Debug, Default)]
pub struct Cooldowns(Mutex<HashMap<String, Timestamp>>);

impl Cooldowns {
    /// Whether a notice for `key` may go out at `now`; records it when it may.
    pub fn allow(&self, key: &str, now: Timestamp, cooldown: Duration) -> bool {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(last) = map.get(key)
            && *last <= now
            && elapsed(*last, now) < cooldown
        {
            return false;
        }
        map.insert(key.to_owned(), now);
        true
    }

    /// Forgets every key starting with `owner` (the object was deleted).
    pub fn forget(&self, owner: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|k, _| !k.starts_with(owner));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_come_from_known_keys_and_bad_urls_are_named_without_their_value() {
        let mut data = BTreeMap::new();
        data.insert(
            "discord".to_owned(),
            b"https://discord.example/api/webhooks/1/tok".to_vec(),
        );
        data.insert("ntfy".to_owned(), b" https://ntfy.sh/homelab \n".to_vec());
        data.insert("slack".to_owned(), Vec::new());
        data.insert("other".to_owned(), b"https://x".to_vec());
        let list = channels(&data).unwrap();
        assert_eq!(format!("{list:?}"), "[discord, ntfy]", "Debug never shows a URL");
        data.insert("webhook".to_owned(), b"ftp://secret-token@host".to_vec());
        let err = channels(&data).unwrap_err();
        assert!(err.contains("webhook") && !err.contains("secret-token"), "{err}");
    }

    #[test]
    fn cooldown_drops_repeats_of_one_key_only() {
        let c = Cooldowns::default();
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let hour = Duration::from_secs(3600);
        assert!(c.allow("p/BackupFailed/a", t0, hour));
        assert!(!c.allow(
            "p/BackupFailed/a",
            super::super::time::add(t0, Duration::from_secs(60)),
            hour
        ));
        assert!(c.allow("p/BackupFailed/b", t0, hour), "another Service");
        assert!(c.allow("p/BackupFailed/a", super::super::time::add(t0, hour), hour));
        c.forget("p/");
        assert!(c.allow("p/BackupFailed/a", t0, hour));
    }
}
