//! Authentication the way `PVE::HTTPServer::auth_handler` does it: `PVEAuthCookie` tickets
//! (cookie or `Authorization` header) with a `CSRFPreventionToken` header on every non-GET, or
//! `Authorization: PVEAPIToken=user@realm!tokenid=secret` (no CSRF). Tickets live 2 hours of
//! simulated time and can be invalidated early (fault injection).
//!
//! Tickets are `PVE:<user>:<8 hex time>::<base64 signature>` like the real ones; the signature is a
//! keyed SHA-256 instead of RSA (nobody but the simulator verifies it).

use std::collections::BTreeMap;
use std::sync::Mutex;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::http::{ApiError, Params};

/// Ticket lifetime (`$ticket_lifetime = 3600 * 2` in PVE::AccessControl).
pub(crate) const TICKET_LIFETIME_SECS: i64 = 2 * 3600;
/// Clock skew allowed for tickets issued "in the future" (`$auth_graceperiod`).
const GRACE_SECS: i64 = 300;

/// One user of the simulated PVE (`user.cfg`).
#[derive(Clone, Default)]
pub(crate) struct User {
    pub(crate) password: String,
    /// Token name -> secret.
    pub(crate) tokens: BTreeMap<String, String>,
    /// The user's ACL (`None`: every privilege, the simulator's default for its users).
    pub(crate) acl: Option<Vec<AclEntry>>,
    /// Privilege-separated tokens (`privsep=1`) and their own ACL; a token not listed here has
    /// its user's privileges.
    pub(crate) token_acls: BTreeMap<String, Vec<AclEntry>>,
}

/// One ACL entry: privileges granted on a path (`/`, `/storage/pbs`, `/vms/100`), and below it
/// when `propagate` (PVE's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AclEntry {
    pub(crate) path: String,
    pub(crate) privs: Vec<String>,
    pub(crate) propagate: bool,
}

impl AclEntry {
    fn grants(&self, path: &str, privilege: &str) -> bool {
        let own = self.path.trim_end_matches('/');
        let applies = path == self.path
            || path.trim_end_matches('/') == own
            || (self.propagate && (own.is_empty() || path.starts_with(&format!("{own}/"))));
        applies && self.privs.iter().any(|p| p == privilege)
    }
}

fn acl_grants(acl: Option<&[AclEntry]>, path: &str, privilege: &str) -> bool {
    acl.is_none_or(|entries| entries.iter().any(|e| e.grants(path, privilege)))
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tokens: Vec<&String> = self.tokens.keys().collect();
        f.debug_struct("User")
            .field("password", &"***")
            .field("tokens", &tokens)
            .finish()
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Caller {
    /// `/access/ticket` and friends: no credentials needed.
    Anonymous,
    /// A ticket holder.
    User { userid: String },
    /// An API token.
    Token { userid: String, tokenid: String },
}

impl Caller {
    /// The user as it appears inside a UPID (`user@realm!tokenid` for tokens).
    pub(crate) fn upid_user(&self) -> String {
        match self {
            Caller::Anonymous => "root@pam".into(),
            Caller::User { userid } => userid.clone(),
            Caller::Token { userid, tokenid } => format!("{userid}!{tokenid}"),
        }
    }

    /// Whether the caller authenticated with an API token.
    pub(crate) fn is_token(&self) -> bool {
        matches!(self, Caller::Token { .. })
    }
}

/// Users plus the ticket signing key.
pub(crate) struct Auth {
    users: BTreeMap<String, User>,
    /// Signing key; rotating it invalidates every ticket (like PVE's auth key rotation).
    key: Mutex<[u8; 32]>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users)
            .field("key", &"***")
            .finish()
    }
}

impl Auth {
    pub(crate) fn new(users: BTreeMap<String, User>, key: [u8; 32]) -> Self {
        Self {
            users,
            key: Mutex::new(key),
        }
    }

    fn key(&self) -> [u8; 32] {
        *self.key.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `$rpcenv->check($user, $path, [$privilege])`: `root@pam` may do anything; others need
    /// the privilege on `path` (a privilege-separated token: in its user's ACL and its own).
    /// Fails like PVE: HTTP 403 `Permission check failed (<path>, <privilege>)`.
    pub(crate) fn check(&self, caller: &Caller, path: &str, privilege: &str) -> Result<(), ApiError> {
        let allowed = match caller {
            Caller::Anonymous => false,
            Caller::User { userid } => {
                userid == "root@pam"
                    || self
                        .users
                        .get(userid)
                        .is_some_and(|u| acl_grants(u.acl.as_deref(), path, privilege))
            }
            Caller::Token { userid, tokenid } => self.users.get(userid).is_some_and(|u| {
                let user_ok = userid == "root@pam" || acl_grants(u.acl.as_deref(), path, privilege);
                let token_ok = u
                    .token_acls
                    .get(tokenid)
                    .is_none_or(|acl| acl_grants(Some(acl), path, privilege));
                user_ok && token_ok
            }),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::forbidden(&format!("{path}, {privilege}")))
        }
    }

    /// Invalidates every ticket issued so far by rotating the signing key.
    pub(crate) fn expire_tickets(&self) {
        let mut key = self.key.lock().unwrap_or_else(|p| p.into_inner());
        *key = Sha256::digest(*key).into();
    }

    fn sign(&self, data: &str) -> Vec<u8> {
        let mut hasher = Sha256::new();
        hasher.update(self.key());
        hasher.update(data.as_bytes());
        hasher.finalize().to_vec()
    }

    /// A new ticket and CSRF token for `userid`.
    #[cfg(test)]
    pub(crate) fn issue(&self, userid: &str, now: i64) -> (String, String) {
        self.issue_for("PVE", userid, now)
    }

    /// A new ticket of `product` (`PVE`, or `PBS` for the simulated backup server) and its
    /// CSRF token.
    fn issue_for(&self, product: &str, userid: &str, now: i64) -> (String, String) {
        let stamp = format!("{:08X}", now.max(0));
        let plain = format!("{product}:{userid}:{stamp}");
        let ticket = format!("{plain}::{}", STANDARD.encode(self.sign(&plain)));
        let csrf_sig = STANDARD_NO_PAD.encode(self.sign(&format!("{stamp}:{userid}")));
        (ticket, format!("{stamp}:{csrf_sig}"))
    }

    fn stamp_valid(&self, stamp: &str, now: i64) -> bool {
        let Ok(time) = i64::from_str_radix(stamp, 16) else {
            return false;
        };
        let age = now - time;
        stamp.len() == 8 && age > -GRACE_SECS && age < TICKET_LIFETIME_SECS
    }

    /// The user a ticket belongs to, if it is genuine and not expired.
    pub(crate) fn verify_ticket(&self, ticket: &str, now: i64) -> Option<String> {
        self.verify_ticket_for("PVE", ticket, now)
    }

    fn verify_ticket_for(&self, product: &str, ticket: &str, now: i64) -> Option<String> {
        let (plain, sig) = ticket.split_once("::")?;
        let rest = plain.strip_prefix(product)?.strip_prefix(':')?;
        let (userid, stamp) = rest.rsplit_once(':')?;
        let sig = STANDARD.decode(sig).ok()?;
        (sig == self.sign(plain) && self.stamp_valid(stamp, now) && self.users.contains_key(userid))
            .then(|| userid.to_string())
    }

    fn verify_csrf(&self, userid: &str, token: Option<&str>, now: i64) -> bool {
        let Some((stamp, sig)) = token.and_then(|t| t.split_once(':')) else {
            return false;
        };
        let expected = STANDARD_NO_PAD.encode(self.sign(&format!("{stamp}:{userid}")));
        sig == expected && self.stamp_valid(stamp, now)
    }

    fn verify_token(&self, value: &str) -> Result<Caller, ApiError> {
        let (full, secret) = value
            .rsplit_once('=')
            .ok_or_else(|| ApiError::unauthorized("no tokenid specified"))?;
        self.verify_token_parts(full, secret)
    }

    /// A PBS API token (`Authorization: PBSAPIToken=user@realm!name:secret`, or with a space
    /// instead of `=`), checked against the same users as PVE's tokens.
    pub(crate) fn authenticate_pbs(&self, authorization: Option<&str>) -> Result<Caller, ApiError> {
        let value = authorization
            .map(str::trim)
            .and_then(|h| h.strip_prefix("PBSAPIToken"))
            .and_then(|rest| rest.strip_prefix('=').or_else(|| rest.strip_prefix(' ')))
            .ok_or_else(|| {
                ApiError::unauthorized("authentication failed - no authentication credentials provided.")
            })?;
        let (full, secret) = value
            .trim()
            .split_once(':')
            .ok_or_else(|| ApiError::unauthorized("authentication failed - invalid API token"))?;
        self.verify_token_parts(full, secret)
    }

    fn verify_token_parts(&self, full: &str, secret: &str) -> Result<Caller, ApiError> {
        let (userid, tokenid) = split_tokenid(full).ok_or_else(|| {
            ApiError::unauthorized(format!(
                "'{full}' is not a valid token ID - not able to split into user and token parts"
            ))
        })?;
        let user = self
            .users
            .get(userid)
            .ok_or_else(|| ApiError::unauthorized(format!("no such user ('{userid}')")))?;
        let expected = user.tokens.get(tokenid).ok_or_else(|| {
            ApiError::unauthorized(format!("no such token '{tokenid}' for user '{userid}'"))
        })?;
        if !constant_time_eq(expected.as_bytes(), secret.as_bytes()) {
            return Err(ApiError::unauthorized("invalid token value!"));
        }
        Ok(Caller::Token {
            userid: userid.to_string(),
            tokenid: tokenid.to_string(),
        })
    }

    /// Authenticates a request (`auth_handler`); errors are 401s without body.
    pub(crate) fn authenticate(
        &self,
        method: &str,
        rel_path: &str,
        cookie: Option<&str>,
        authorization: Option<&str>,
        csrf: Option<&str>,
        now: i64,
    ) -> Result<Caller, ApiError> {
        let open = (rel_path == "/access/ticket" && (method == "GET" || method == "POST"))
            || (rel_path == "/access/domains" && method == "GET");
        if open {
            return Ok(Caller::Anonymous);
        }
        let ticket = extract_auth_value(cookie, "PVEAuthCookie")
            .or_else(|| extract_auth_value(authorization, "PVEAuthCookie"));
        if ticket.is_none()
            && let Some(token) = extract_auth_value(authorization, "PVEAPIToken")
        {
            return self.verify_token(&token);
        }
        let ticket = ticket.ok_or_else(|| ApiError::unauthorized("No ticket"))?;
        let userid = self
            .verify_ticket(&ticket, now)
            .ok_or_else(|| ApiError::unauthorized("permission denied - invalid PVE ticket"))?;
        if method != "GET" && !self.verify_csrf(&userid, csrf, now) {
            return Err(ApiError::unauthorized("Permission denied - invalid csrf token"));
        }
        Ok(Caller::User { userid })
    }

    /// `POST /access/ticket`: password login or ticket renewal.
    pub(crate) fn login(&self, params: &Params, cluster_name: &str, now: i64) -> Result<Value, ApiError> {
        let (username, ticket, csrf) = self.login_for("PVE", params, now)?;
        Ok(json!({
            "username": username,
            "ticket": ticket,
            "CSRFPreventionToken": csrf,
            "clustername": cluster_name,
        }))
    }

    /// The simulated PBS's `POST /access/ticket`: a `PBS:` ticket for the same users.
    pub(crate) fn login_pbs(&self, params: &Params, now: i64) -> Result<Value, ApiError> {
        let (username, ticket, csrf) = self.login_for("PBS", params, now)?;
        Ok(json!({ "username": username, "ticket": ticket, "CSRFPreventionToken": csrf }))
    }

    /// PBS requests with a ticket: cookie `PBSAuthCookie` (or `__Host-PBSAuthCookie`), plus the
    /// `CSRFPreventionToken` header on every non-GET.
    pub(crate) fn authenticate_pbs_ticket(
        &self,
        method: &str,
        cookie: &str,
        csrf: Option<&str>,
        now: i64,
    ) -> Option<Result<Caller, ApiError>> {
        let ticket = extract_auth_value(Some(cookie), "__Host-PBSAuthCookie")
            .or_else(|| extract_auth_value(Some(cookie), "PBSAuthCookie"))?;
        let Some(userid) = self.verify_ticket_for("PBS", &ticket, now) else {
            return Some(Err(ApiError::unauthorized(
                "authentication failed - invalid ticket",
            )));
        };
        if method != "GET" && !self.verify_csrf(&userid, csrf, now) {
            return Some(Err(ApiError::unauthorized(
                "authentication failed - invalid CSRF token",
            )));
        }
        Some(Ok(Caller::User { userid }))
    }

    fn login_for(
        &self,
        product: &str,
        params: &Params,
        now: i64,
    ) -> Result<(String, String, String), ApiError> {
        let failure = || ApiError::with_status(401, "authentication failure\n");
        let mut username = params.str("username").ok_or_else(failure)?;
        if !username.contains('@')
            && let Some(realm) = params.str("realm")
        {
            username = format!("{username}@{realm}");
        }
        let password = params.str("password").ok_or_else(failure)?;
        let user = self.users.get(&username).ok_or_else(failure)?;
        let renewal = password.starts_with(&format!("{product}:"))
            && self.verify_ticket_for(product, &password, now).as_deref() == Some(&username);
        if !renewal && !constant_time_eq(user.password.as_bytes(), password.as_bytes()) {
            return Err(failure());
        }
        let (ticket, csrf) = self.issue_for(product, &username, now);
        Ok((username, ticket, csrf))
    }
}

/// `PVE::APIServer::Formatter::extract_auth_value`: `NAME=value` or `NAME value` after start or
/// whitespace, up to `;`, URI-unescaped.
pub(crate) fn extract_auth_value(header: Option<&str>, name: &str) -> Option<String> {
    let header = header?;
    let mut search = 0;
    while let Some(found) = header[search..].find(name) {
        let start = search + found;
        let after = start + name.len();
        let boundary_ok = start == 0 || header[..start].ends_with(char::is_whitespace);
        let sep_ok = matches!(header[after..].chars().next(), Some('=') | Some(' '));
        if boundary_ok && sep_ok {
            let rest = &header[after + 1..];
            let value = rest.split(';').next().unwrap_or("");
            let decoded = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            return (!decoded.is_empty()).then_some(decoded);
        }
        search = after;
    }
    None
}

/// Splits `user@realm!tokenid` (PVE's `$token_full_regex`).
pub(crate) fn split_tokenid(full: &str) -> Option<(&str, &str)> {
    let (userid, tokenid) = full.split_once('!')?;
    let (user, realm) = userid.rsplit_once('@')?;
    let word = |s: &str, first_alpha: bool| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            && (!first_alpha || s.starts_with(|c: char| c.is_ascii_alphabetic()))
    };
    let user_ok = !user.is_empty() && !user.contains([':', '/']) && !user.chars().any(char::is_whitespace);
    let long_enough = realm.len() > 1 && tokenid.len() > 1;
    (user_ok && long_enough && word(realm, true) && word(tokenid, true)).then_some((userid, tokenid))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        let mut users = BTreeMap::new();
        let mut tokens = BTreeMap::new();
        tokens.insert("ci".to_string(), "s3cret".to_string());
        users.insert(
            "root@pam".to_string(),
            User {
                password: "pw".into(),
                tokens,
                ..User::default()
            },
        );
        Auth::new(users, [7; 32])
    }

    #[test]
    fn privilege_checks_follow_acl_paths_and_token_separation() {
        let entry = |path: &str, privs: &[&str]| AclEntry {
            path: path.into(),
            privs: privs.iter().map(|p| (*p).to_string()).collect(),
            propagate: true,
        };
        let mut users = BTreeMap::new();
        let mut token_acls = BTreeMap::new();
        token_acls.insert(
            "backup".to_string(),
            vec![entry("/storage/pbs", &["Datastore.Allocate"])],
        );
        users.insert(
            "ops@pve".to_string(),
            User {
                acl: Some(vec![entry("/", &["Sys.Modify", "Datastore.Allocate"])]),
                token_acls,
                ..User::default()
            },
        );
        let auth = Auth::new(users, [7; 32]);
        let user = Caller::User {
            userid: "ops@pve".into(),
        };
        let token = Caller::Token {
            userid: "ops@pve".into(),
            tokenid: "backup".into(),
        };
        let full = Caller::Token {
            userid: "ops@pve".into(),
            tokenid: "other".into(),
        };
        assert!(auth.check(&user, "/", "Sys.Modify").is_ok());
        assert!(auth.check(&user, "/storage/local", "Datastore.Allocate").is_ok());
        assert!(
            auth.check(&full, "/", "Sys.Modify").is_ok(),
            "no privsep: the user's privileges"
        );
        let e = auth.check(&token, "/", "Sys.Modify").unwrap_err();
        assert_eq!(
            (e.status, e.message.as_str()),
            (403, "Permission check failed (/, Sys.Modify)\n")
        );
        assert!(auth.check(&token, "/storage/pbs", "Datastore.Allocate").is_ok());
        assert!(
            auth.check(&token, "/storage/local", "Datastore.Allocate")
                .is_err()
        );
        assert!(auth.check(&user, "/", "VM.Backup").is_err());
        assert!(
            auth.check(
                &Caller::User {
                    userid: "root@pam".into()
                },
                "/",
                "Sys.Modify"
            )
            .is_ok()
        );
    }

    #[test]
    fn token_header_authenticates_and_bad_secret_is_401() {
        let a = auth();
        let ok = a.authenticate(
            "POST",
            "/nodes",
            None,
            Some("PVEAPIToken=root@pam!ci=s3cret"),
            None,
            0,
        );
        assert_eq!(
            ok,
            Ok(Caller::Token {
                userid: "root@pam".into(),
                tokenid: "ci".into()
            })
        );
        let bad = a.authenticate(
            "GET",
            "/nodes",
            None,
            Some("PVEAPIToken=root@pam!ci=nope"),
            None,
            0,
        );
        assert_eq!(
            bad.map_err(|e| e.reason()),
            Err("invalid token value!".to_string())
        );
        let none = a.authenticate("GET", "/nodes", None, None, None, 0);
        assert_eq!(
            none.map_err(|e| (e.status, e.reason())),
            Err((401, "No ticket".to_string()))
        );
    }

    #[test]
    fn ticket_needs_csrf_on_writes_and_expires_after_two_hours() {
        let a = auth();
        let now = 1_700_000_000;
        let (ticket, csrf) = a.issue("root@pam", now);
        let cookie = format!(
            "PVEAuthCookie={}",
            percent_encoding::utf8_percent_encode(&ticket, percent_encoding::NON_ALPHANUMERIC)
        );
        assert!(
            a.authenticate("GET", "/version", Some(&cookie), None, None, now)
                .is_ok()
        );
        let no_csrf = a.authenticate("POST", "/x", Some(&cookie), None, None, now);
        assert_eq!(
            no_csrf.map_err(|e| e.reason()),
            Err("Permission denied - invalid csrf token".into())
        );
        assert!(
            a.authenticate("POST", "/x", Some(&cookie), None, Some(&csrf), now)
                .is_ok()
        );
        let late = a.authenticate(
            "GET",
            "/version",
            Some(&cookie),
            None,
            None,
            now + TICKET_LIFETIME_SECS,
        );
        assert_eq!(
            late.map_err(|e| e.reason()),
            Err("permission denied - invalid PVE ticket".into())
        );
        a.expire_tickets();
        assert!(a.verify_ticket(&ticket, now + 1).is_none());
    }

    #[test]
    fn login_accepts_password_or_ticket_and_rejects_others() {
        let a = auth();
        let mut p = Params::default();
        p.merge_urlencoded("username=root&realm=pam&password=pw");
        let res = a.login(&p, "c", 100).unwrap_or_default();
        assert_eq!(res["username"], "root@pam");
        let ticket = res["ticket"].as_str().unwrap_or_default().to_string();
        let mut renew = Params::default();
        renew.insert("username", json!("root@pam"));
        renew.insert("password", json!(ticket));
        assert!(a.login(&renew, "c", 200).is_ok());
        let mut wrong = Params::default();
        wrong.merge_urlencoded("username=root@pam&password=x");
        assert_eq!(a.login(&wrong, "c", 100).map_err(|e| e.status), Err(401));
    }

    #[test]
    fn extract_auth_value_and_split_tokenid_follow_pve() {
        assert_eq!(
            extract_auth_value(Some("a=b; PVEAuthCookie=PVE%3Ax"), "PVEAuthCookie").as_deref(),
            Some("PVE:x")
        );
        assert_eq!(
            extract_auth_value(Some("XPVEAuthCookie=1"), "PVEAuthCookie"),
            None
        );
        assert_eq!(split_tokenid("root@pam!ci"), Some(("root@pam", "ci")));
        assert_eq!(split_tokenid("root!ci"), None);
        assert!(
            format!(
                "{:?}",
                User {
                    password: "topsecret".into(),
                    ..User::default()
                }
            )
            .contains("***")
        );
    }
}
