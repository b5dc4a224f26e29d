//! Credentials and the authentication state of a client.
//!
//! Two ways to authenticate (pve-access-control, pve-http-server):
//! - API token: header `Authorization: PVEAPIToken=user@realm!tokenid=secret`; no CSRF token.
//! - User/password: `POST /access/ticket` gives a ticket (cookie `PVEAuthCookie`) valid for 2 h
//!   and a `CSRFPreventionToken` header value required on every non-GET request. A ticket is
//!   renewed by posting it as the password; we renew well before it expires.
//!
//! Every secret lives in a [`Secret`], whose `Debug`/`Display` print `***`, and every text that comes
//! back from the server passes through a [`Redactor`] that masks the secrets we hold.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, COOKIE, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Deserializer};

use super::error::Error;

/// A secret string. Prints as `***`; read it only where it goes on the wire.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself. Only for putting it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self)
    }
}

/// How the client authenticates (the ProxmoxCluster credentials Secret holds `tokenId` +
/// `tokenSecret`, or `username` + `password`).
#[derive(Clone, Debug)]
pub enum Credentials {
    /// An API token (recommended: no ticket to renew, no CSRF token).
    ApiToken {
        /// `user@realm!tokenid`.
        token_id: String,
        /// The token's secret (a UUID).
        secret: Secret,
    },
    /// A user and password, exchanged for a ticket.
    Password {
        /// `user@realm`.
        username: String,
        /// The password.
        password: Secret,
    },
}

fn bad_id(s: &str) -> bool {
    s.is_empty() || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '=' || c == ':')
}

impl Credentials {
    /// Checks the shape of the ids (not the secrets, which only PVE can check).
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self {
            Self::ApiToken { token_id, secret } => {
                let ok = token_id.split_once('!').is_some_and(|(user, name)| {
                    user.split_once('@')
                        .is_some_and(|(u, r)| !bad_id(u) && !bad_id(r))
                        && !bad_id(name)
                });
                if !ok {
                    return Err(Error::Config {
                        field: "credentials.tokenId",
                        message: format!(
                            "{token_id:?} is not `user@realm!tokenid`; copy the token id from PVE"
                        ),
                    });
                }
                if secret.expose().trim().is_empty() {
                    return Err(Error::Config {
                        field: "credentials.tokenSecret",
                        message: "is empty; set the token's secret".into(),
                    });
                }
            }
            Self::Password { username, password } => {
                let ok = username
                    .split_once('@')
                    .is_some_and(|(u, r)| !bad_id(u) && !bad_id(r));
                if !ok {
                    return Err(Error::Config {
                        field: "credentials.username",
                        message: format!("{username:?} is not `user@realm` (e.g. `root@pam`)"),
                    });
                }
                if password.expose().is_empty() {
                    return Err(Error::Config {
                        field: "credentials.password",
                        message: "is empty".into(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Masks the secrets a client holds in any text that came from the server or the network.
#[derive(Clone, Debug, Default)]
pub(crate) struct Redactor(Arc<RwLock<Vec<Secret>>>);

impl Redactor {
    /// Adds a secret to mask (ignored when too short to be a real secret).
    pub(crate) fn add(&self, secret: &Secret) {
        if secret.expose().len() >= 4 {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .push(secret.clone());
        }
    }

    /// `text` with every known secret replaced by `***`.
    pub(crate) fn redact(&self, text: &str) -> String {
        let secrets = self.0.read().unwrap_or_else(PoisonError::into_inner);
        let mut out = text.to_owned();
        for s in secrets.iter() {
            if out.contains(s.expose()) {
                out = out.replace(s.expose(), "***");
            }
        }
        out
    }
}

/// Header carrying the CSRF token on non-GET requests with ticket auth.
pub(crate) const CSRF_HEADER: HeaderName = HeaderName::from_static("csrfpreventiontoken");

/// A ticket is valid for 2 h (`$ticket_lifetime = 3600*2`); renew it after this age.
pub(crate) const TICKET_RENEW_AFTER: Duration = Duration::from_secs(90 * 60);

/// A ticket and its CSRF token, as returned by `POST /access/ticket`.
#[derive(Clone, Debug)]
pub(crate) struct Ticket {
    pub(crate) ticket: Secret,
    pub(crate) csrf: Secret,
    /// When to renew it, on our monotonic clock.
    renew_at: Instant,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Ticket {
    /// A ticket just received from PVE. PVE stamps a ticket with the time on *its* clock and
    /// expires it 2 h later; PVE always stamps "now", so we count the age from when we received
    /// it, on *our* monotonic clock. Comparing the stamp with our wall clock instead would renew
    /// on every call when the server's clock lags ours by more than the renewal age, and renew
    /// too late when it runs ahead.
    pub(crate) fn new(ticket: Secret, csrf: Secret) -> Self {
        Self {
            ticket,
            csrf,
            renew_at: Instant::now() + TICKET_RENEW_AFTER,
        }
    }

    /// Whether the ticket is old enough to renew.
    pub(crate) fn needs_renewal(&self) -> bool {
        Instant::now() >= self.renew_at
    }

    /// Pretends the ticket was received `by` earlier (tests of the renewal path).
    #[cfg(test)]
    pub(crate) fn age(&mut self, by: Duration) {
        self.renew_at = self.renew_at.checked_sub(by).unwrap_or_else(Instant::now);
    }
}

fn sensitive(value: &str, field: &'static str) -> Result<HeaderValue, Error> {
    let mut v = HeaderValue::from_str(value).map_err(|_| Error::Config {
        field,
        message: "contains characters that cannot be sent in an HTTP header".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// The `Authorization` header for an API token, marked sensitive.
pub(crate) fn token_header(token_id: &str, secret: &Secret) -> Result<HeaderMap, Error> {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        sensitive(
            &format!("PVEAPIToken={token_id}={}", secret.expose()),
            "credentials.tokenSecret",
        )?,
    );
    Ok(h)
}

/// The PBS API token header: `PBSAPIToken=user@realm!name:secret` (a colon before the secret,
/// where PVE has `=`).
pub(crate) fn pbs_token_header(token_id: &str, secret: &Secret) -> Result<HeaderMap, Error> {
    let mut h = HeaderMap::new();
    h.insert(
        AUTHORIZATION,
        sensitive(
            &format!("PBSAPIToken={token_id}:{}", secret.expose()),
            "credentials.tokenSecret",
        )?,
    );
    Ok(h)
}

/// The cookie (and, for non-GET requests, the CSRF header) for a ticket, marked sensitive.
pub(crate) fn ticket_headers(ticket: &Ticket, with_csrf: bool) -> Result<HeaderMap, Error> {
    ticket_headers_named("PVEAuthCookie", ticket, with_csrf)
}

/// [`ticket_headers`] with another cookie name (PBS: `PBSAuthCookie`).
pub(crate) fn ticket_headers_named(
    cookie: &str,
    ticket: &Ticket,
    with_csrf: bool,
) -> Result<HeaderMap, Error> {
    let mut h = HeaderMap::new();
    h.insert(
        COOKIE,
        sensitive(&format!("{cookie}={}", ticket.ticket.expose()), "ticket")?,
    );
    if with_csrf {
        h.insert(
            CSRF_HEADER,
            sensitive(ticket.csrf.expose(), "CSRFPreventionToken")?,
        );
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("0b7a5b5e-1234-4a5b-9c8d-deadbeef0001");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        let c = Credentials::ApiToken {
            token_id: "ap@pve!op".into(),
            secret: s.clone(),
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains(s.expose()) && dbg.contains("ap@pve!op"), "{dbg}");
    }

    #[test]
    fn credentials_validate_names_the_field() {
        let token = |id: &str| Credentials::ApiToken {
            token_id: id.into(),
            secret: "x-secret".into(),
        };
        assert!(token("root@pam!op").validate().is_ok());
        for bad in [
            "root@pam",
            "root!op",
            "@pam!op",
            "root@pam!",
            "root@pam!o=p",
            "ro ot@pam!op",
        ] {
            let e = token(bad).validate().unwrap_err();
            assert!(e.to_string().contains("credentials.tokenId"), "{bad}: {e}");
        }
        let e = Credentials::ApiToken {
            token_id: "a@b!c".into(),
            secret: "".into(),
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("tokenSecret"));
        let pw = |u: &str| Credentials::Password {
            username: u.into(),
            password: "pw".into(),
        };
        assert!(pw("root@pam").validate().is_ok());
        assert!(
            pw("root")
                .validate()
                .unwrap_err()
                .to_string()
                .contains("credentials.username")
        );
    }

    #[test]
    fn redactor_masks_known_secrets() {
        let r = Redactor::default();
        r.add(&Secret::new("s3cr3t-value"));
        r.add(&Secret::new("ab")); // too short to mask
        assert_eq!(
            r.redact("bad token PVEAPIToken=a@b!c=s3cr3t-value here"),
            "bad token PVEAPIToken=a@b!c=*** here"
        );
        assert_eq!(r.redact("ab"), "ab");
    }

    #[test]
    fn ticket_age_counts_from_receipt_not_from_the_stamp() {
        // A stamp from 2012 (a server clock far behind ours) does not make the ticket look old.
        let mut t = Ticket::new(
            "PVE:root@pam:4EEC61E2::rsKoApxDTLYPn6H3NNT6iP2mv".into(),
            "4EEC61E2:x".into(),
        );
        assert!(!t.needs_renewal());
        t.age(Duration::from_secs(60));
        assert!(!t.needs_renewal());
        t.age(Duration::from_secs(89 * 60));
        assert!(t.needs_renewal());
    }

    #[test]
    fn auth_headers_are_sensitive() {
        let h = token_header("a@b!c", &Secret::new("sec")).unwrap();
        assert!(h[AUTHORIZATION].is_sensitive());
        assert_eq!(h[AUTHORIZATION], "PVEAPIToken=a@b!c=sec");
        let t = Ticket::new("PVE:a@b:00000000::sig".into(), "00000000:csrf".into());
        let h = ticket_headers(&t, true).unwrap();
        assert!(h[COOKIE].is_sensitive() && h[CSRF_HEADER].is_sensitive());
        assert_eq!(h[CSRF_HEADER], "00000000:csrf");
        assert!(!ticket_headers(&t, false).unwrap().contains_key(CSRF_HEADER));
    }
}
