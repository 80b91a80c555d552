//! Users, their roles and API tokens: the web side's principals. A role is a
//! fixed set of [`Action`]s, so DIMSE peers and HTTP users are checked by the
//! same `Principal::may`.

use std::fmt;
use std::str::FromStr;

use crate::{Action, Permissions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Search, view, download.
    Radiologist,
    /// Store only.
    Uploader,
    /// The audit trail only.
    Auditor,
    /// The metrics only (a Prometheus scraper's token).
    Monitor,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Radiologist,
        Role::Uploader,
        Role::Auditor,
        Role::Monitor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Radiologist => "radiologist",
            Role::Uploader => "uploader",
            Role::Auditor => "auditor",
            Role::Monitor => "monitor",
        }
    }

    pub fn permissions(self) -> Permissions {
        use Action::*;
        match self {
            Role::Admin => Action::ALL.into_iter().collect(),
            // A radiologist saves what the viewer makes (measurements as SR,
            // segmentations, presentation states), not images.
            Role::Radiologist => [Echo, Find, Get, Move, StoreDerived].into_iter().collect(),
            // A modality's identity: storing, asking for commitment, reporting
            // performed steps.
            Role::Uploader => [Echo, Store, Commit, Mpps].into_iter().collect(),
            Role::Auditor => [Audit].into_iter().collect(),
            Role::Monitor => [Metrics].into_iter().collect(),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = crate::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                crate::invalid!(
                    "unknown role `{s}` (expected admin, radiologist, uploader, auditor or monitor)"
                )
            })
    }
}

/// A user account, for the web and for DICOM user identities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string; never the password.
    pub password_hash: String,
    pub disabled: bool,
    /// Unix seconds of the last password change.
    pub password_changed: i64,
}

/// An API token. The secret is shown once at creation; only its SHA-256 is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    /// Public identifier, part of the token text.
    pub id: String,
    pub user: String,
    /// Lower-case hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub read_only: bool,
    pub created: i64,
    /// Unix seconds after which the token is refused.
    pub expires: i64,
    pub revoked: bool,
}

/// Checks a user name: 1-64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn validate_user_name(name: &str) -> Result<String, crate::Invalid> {
    let n = name.trim();
    if n.is_empty() || n.len() > 64 {
        return Err("a user name has 1 to 64 characters".into());
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err("a user name may hold letters, digits, `.`, `_`, `-` and `@` only".into());
    }
    Ok(n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_grant_what_the_issue_says() {
        let r = Role::Radiologist.permissions();
        assert!(r.allows(Action::Find) && r.allows(Action::Get));
        assert!(!r.allows(Action::Store) && !r.allows(Action::Admin));
        let u = Role::Uploader.permissions();
        assert!(u.allows(Action::Store) && !u.allows(Action::Find));
        let a = Role::Auditor.permissions();
        assert!(a.allows(Action::Audit) && !a.allows(Action::Get));
        assert!(Role::Admin.permissions().allows(Action::Delete));
        assert_eq!("Radiologist".parse::<Role>(), Ok(Role::Radiologist));
        assert!("root".parse::<Role>().is_err());
        assert!(validate_user_name("../x").is_err());
        assert_eq!(validate_user_name(" alice ").unwrap(), "alice");
    }
}
