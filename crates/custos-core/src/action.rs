//! The actions a principal can be granted, shared by every protocol.

use std::fmt;
use std::str::FromStr;

/// One operation on the archive. DIMSE services map onto echo, store, find,
/// get, move, commit, worklist and mpps one to one; DICOMweb routes map onto the same set
/// (QIDO = find, WADO = get, STOW = store); delete, admin, audit and
/// store-derived exist only for users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Echo,
    Store,
    Find,
    Get,
    Move,
    /// Delete studies or series.
    Delete,
    /// Manage peers, users, tokens; read statistics.
    Admin,
    /// Read the audit trail.
    Audit,
    /// Store only derived objects a viewer makes — structured reports,
    /// segmentations, presentation states, key object selections
    /// ([`crate::derived::is_derived`]) — over STOW-RS. `store` includes it.
    StoreDerived,
    /// Ask the archive to commit to instances it holds (Storage Commitment
    /// Push Model, N-ACTION): it checks each one and reports by N-EVENT-REPORT.
    Commit,
    /// Query the modality worklist (C-FIND on the Modality Worklist model),
    /// and, for users, manage its items through the admin API.
    Worklist,
    /// Report performed procedure steps (MPPS N-CREATE and N-SET).
    Mpps,
    /// Read the server's metrics (`/metrics`): counts and latencies, never
    /// patient data.
    Metrics,
    /// De-identify studies (PS3.15 Annex E): download a de-identified copy,
    /// or (with `store`) keep one in the archive.
    Deidentify,
}

impl Action {
    pub const ALL: [Action; 14] = [
        Action::Echo,
        Action::Store,
        Action::Find,
        Action::Get,
        Action::Move,
        Action::Delete,
        Action::Admin,
        Action::Audit,
        Action::StoreDerived,
        Action::Commit,
        Action::Worklist,
        Action::Mpps,
        Action::Metrics,
        Action::Deidentify,
    ];

    /// What a DICOM peer can be granted.
    pub const DIMSE: [Action; 8] = [
        Action::Echo,
        Action::Store,
        Action::Find,
        Action::Get,
        Action::Move,
        Action::Commit,
        Action::Worklist,
        Action::Mpps,
    ];

    /// What a read-only token keeps of its user's rights: reading, listed
    /// rather than what changes things taken away, so a right added later is
    /// not read-only by omission (MPPS reports, C-MOVE's sends and storage
    /// commitment's held reports once slipped through that way). The
    /// worklist is left out: managing the schedule changes it.
    pub fn reads_only(self) -> bool {
        matches!(
            self,
            Action::Echo
                | Action::Find
                | Action::Get
                | Action::Audit
                | Action::Metrics
                | Action::Deidentify
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::Echo => "echo",
            Action::Store => "store",
            Action::Find => "find",
            Action::Get => "get",
            Action::Move => "move",
            Action::Delete => "delete",
            Action::Admin => "admin",
            Action::Audit => "audit",
            Action::StoreDerived => "store-derived",
            Action::Commit => "commit",
            Action::Worklist => "worklist",
            Action::Mpps => "mpps",
            Action::Metrics => "metrics",
            Action::Deidentify => "deidentify",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Action {
    type Err = crate::Invalid;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                crate::invalid!("unknown action `{s}` (expected echo, store, find, get, move, delete, admin, audit, store-derived, commit, worklist, mpps, metrics or deidentify)")
            })
    }
}

/// A set of granted actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Permissions(u16);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);

    pub fn allows(self, action: Action) -> bool {
        self.0 & action.bit() != 0
            // Storing anything includes storing derived objects.
            || (action == Action::StoreDerived && self.0 & Action::Store.bit() != 0)
    }

    pub fn with(self, action: Action) -> Self {
        Permissions(self.0 | action.bit())
    }

    pub fn without(self, action: Action) -> Self {
        Permissions(self.0 & !action.bit())
    }

    /// Actions granted in both sets.
    pub fn intersect(self, other: Permissions) -> Self {
        Permissions(self.0 & other.0)
    }

    /// The actions granted as such (not those implied: `store` lists no
    /// `store-derived`).
    pub fn actions(self) -> impl Iterator<Item = Action> {
        Action::ALL
            .into_iter()
            .filter(move |a| self.0 & a.bit() != 0)
    }
}

impl FromIterator<Action> for Permissions {
    fn from_iter<T: IntoIterator<Item = Action>>(iter: T) -> Self {
        iter.into_iter().fold(Permissions::NONE, Permissions::with)
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.actions().map(Action::name).collect();
        f.write_str(&names.join(","))
    }
}

impl FromStr for Permissions {
    type Err = crate::Invalid;
    /// Parses a comma-separated list such as `echo,store`; empty means none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_lists() {
        let p: Permissions = "store, echo".parse().unwrap();
        assert!(p.allows(Action::Store) && p.allows(Action::Echo));
        assert!(!p.allows(Action::Find));
        assert_eq!(p.to_string(), "echo,store");
        assert!("store,bogus".parse::<Permissions>().is_err());
        assert_eq!("".parse::<Permissions>().unwrap(), Permissions::NONE);
    }
}
