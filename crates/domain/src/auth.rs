//! Accounts, roles, tokens and the `Principal` that every domain call receives.

use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest as _, Sha256};

use crate::{Error, Result};

/// What a token may do. Ordered: `Read < Write < Admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
    Admin,
}

impl Role {
    /// Parses `read`, `write` or `admin`.
    pub fn parse(text: &str) -> Result<Self> {
        match text {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            other => Err(Error::invalid(format!("invalid role {other:?}: expected read, write or admin"))),
        }
    }
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

/// The signed-in caller of one request.
#[derive(Clone, Debug)]
pub enum Principal {
    /// No token was sent.
    Anonymous,
    /// A valid, unexpired, unrevoked token.
    User(UserPrincipal),
}

/// A user acting through one token.
#[derive(Clone, Debug)]
pub struct UserPrincipal {
    pub user_id: i64,
    pub name: String,
    /// Whether the user is a site administrator.
    pub is_admin: bool,
    /// The token's role, which caps what the user may do through it.
    pub role: Role,
    pub token_id: i64,
    pub token_name: String,
    /// When the token expires (`None`: never); tokens it creates expire no later.
    pub token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The orgs the user belongs to, by name.
    pub orgs: Vec<String>,
    /// The org this request acts for (`OpenAI-Organization`), one of `orgs`: the files, vector
    /// stores and responses it creates belong to that org, and its lists show the org's.
    pub workspace: Option<String>,
}

impl UserPrincipal {
    /// The account that owns what this request creates: the org it acts for, else the user.
    pub fn owner(&self) -> &str {
        self.workspace.as_deref().unwrap_or(&self.name)
    }

    /// Whether what `owner` owns is this user's to use: its own, or one of its orgs'.
    pub fn shares(&self, owner: &str) -> bool {
        self.name == owner || self.orgs.iter().any(|org| org == owner)
    }
}

impl Principal {
    /// The name written in audit rows.
    pub fn actor(&self) -> String {
        match self {
            Principal::Anonymous => "anonymous".to_owned(),
            Principal::User(user) => user.name.clone(),
        }
    }
    /// The same caller acting for `org` (an org it belongs to), or 401 naming the mismatch.
    pub fn acting_for(self, org: &str) -> Result<Principal> {
        match self {
            Principal::User(mut user) if user.orgs.iter().any(|o| o == org) => {
                user.workspace = Some(org.to_owned());
                Ok(Principal::User(user))
            }
            _ => Err(Error::Unauthenticated(format!("the token's user is not a member of org {org:?} (OpenAI-Organization)"))),
        }
    }
    /// The user, or 401.
    pub fn user(&self) -> Result<&UserPrincipal> {
        match self {
            Principal::Anonymous => Err(Error::Unauthenticated("a token is required".into())),
            Principal::User(user) => Ok(user),
        }
    }
    /// The user acting as site administrator (admin user through an admin token), or 401/403.
    pub fn site_admin(&self) -> Result<&UserPrincipal> {
        let user = self.user()?;
        if user.is_admin && user.role == Role::Admin {
            Ok(user)
        } else {
            Err(Error::forbidden("this needs an admin token of a site administrator"))
        }
    }
    /// Whether the caller may see private repos of `namespace` (owner, org member, or site admin).
    pub fn can_see_namespace(&self, namespace: &str) -> bool {
        match self {
            Principal::Anonymous => false,
            Principal::User(user) => (user.is_admin && user.role == Role::Admin) || user.name == namespace || user.orgs.iter().any(|org| org == namespace),
        }
    }
    /// Whether the caller may write to repos of `namespace`: a write or admin token of the owner or an
    /// org member, or a site admin's admin token.
    pub fn can_write_namespace(&self, namespace: &str) -> bool {
        match self {
            Principal::Anonymous => false,
            Principal::User(user) => user.role >= Role::Write && self.can_see_namespace(namespace),
        }
    }
}

/// A freshly generated token secret. It is shown once and stored only as its hash.
pub fn generate_token() -> String {
    format!("mnt_{}", Alphanumeric.sample_string(&mut rand::thread_rng(), 40))
}

/// The at-rest form of a token: sha256 hex. Tokens carry 238 bits of entropy, so a fast hash is
/// enough; a slow password hash would only slow every request.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Parses durations like `30d`, `12h`, `45m`, `90s` for token expiry.
pub fn parse_duration(text: &str) -> Result<chrono::Duration> {
    let bad = || Error::invalid(format!("invalid duration {text:?}: expected a number and one of s, m, h, d"));
    let (number, unit) = text.char_indices().last().map(|(at, _)| text.split_at(at)).ok_or_else(bad)?;
    let number: i64 = number.parse().map_err(|_| bad())?;
    if number <= 0 || number > 100_000 {
        return Err(bad());
    }
    match unit {
        "s" => Ok(chrono::Duration::seconds(number)),
        "m" => Ok(chrono::Duration::minutes(number)),
        "h" => Ok(chrono::Duration::hours(number)),
        "d" => Ok(chrono::Duration::days(number)),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hash_stably_and_differ() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).len(), 64);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d").unwrap(), chrono::Duration::days(30));
        // Regression (#11, found by schemathesis): a multibyte last character is an error, not a panic.
        assert!(parse_duration("5é").is_err() && parse_duration("é").is_err() && parse_duration("").is_err());
        assert_eq!(parse_duration("5m").unwrap(), chrono::Duration::minutes(5));
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("-3d").is_err());
        assert!(parse_duration("3w").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn roles_order() {
        assert!(Role::Read < Role::Write && Role::Write < Role::Admin);
        assert!(Role::parse("owner").is_err());
    }
}
