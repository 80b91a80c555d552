//! Query semantics shared by C-FIND and QIDO-RS: levels, keys and the
//! matching kinds of PS3.4 C.2.2.2 (single value, wildcard, range, UID list,
//! universal). The index turns a [`Query`] into its own query language.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Patient,
    Study,
    Series,
    Image,
}

impl Level {
    pub fn parse(s: &str) -> Option<Level> {
        match s.trim().to_ascii_uppercase().as_str() {
            "PATIENT" => Some(Level::Patient),
            "STUDY" => Some(Level::Study),
            "SERIES" => Some(Level::Series),
            "IMAGE" | "INSTANCE" => Some(Level::Image),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }
}

/// How a key's values compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Case-sensitive text with wildcards.
    Text,
    /// Person name: wildcards, compared case-insensitively (as Orthanc and
    /// dcm4chee do by default; what users expect when typing a name).
    PersonName,
    Date,
    Time,
    Uid,
    Integer,
    /// Computed by the archive (counts, modalities in study): returned, matched only for ModalitiesInStudy.
    Computed,
}

macro_rules! keys {
    ($( $name:ident = ($g:literal, $e:literal, $level:ident, $kind:ident) ),* $(,)?) => {
        /// Every attribute the index can match on or return.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Key { $( $name ),* }

        impl Key {
            pub const ALL: &'static [Key] = &[ $( Key::$name ),* ];

            /// The DICOM tag (group, element).
            pub fn tag(self) -> (u16, u16) {
                match self { $( Key::$name => ($g, $e) ),* }
            }

            /// The level the attribute belongs to.
            pub fn level(self) -> Level {
                match self { $( Key::$name => Level::$level ),* }
            }

            pub fn kind(self) -> KeyKind {
                match self { $( Key::$name => KeyKind::$kind ),* }
            }

            pub fn from_tag(group: u16, element: u16) -> Option<Key> {
                Key::ALL.iter().copied().find(|k| k.tag() == (group, element))
            }

            pub fn name(self) -> &'static str {
                match self { $( Key::$name => stringify!($name) ),* }
            }
        }
    };
}

keys! {
    PatientName = (0x0010, 0x0010, Patient, PersonName),
    PatientID = (0x0010, 0x0020, Patient, Text),
    PatientBirthDate = (0x0010, 0x0030, Patient, Date),
    PatientSex = (0x0010, 0x0040, Patient, Text),
    NumberOfPatientRelatedStudies = (0x0020, 0x1200, Patient, Computed),
    NumberOfPatientRelatedSeries = (0x0020, 0x1202, Patient, Computed),
    NumberOfPatientRelatedInstances = (0x0020, 0x1204, Patient, Computed),
    StudyInstanceUID = (0x0020, 0x000D, Study, Uid),
    StudyDate = (0x0008, 0x0020, Study, Date),
    StudyTime = (0x0008, 0x0030, Study, Time),
    AccessionNumber = (0x0008, 0x0050, Study, Text),
    StudyID = (0x0020, 0x0010, Study, Text),
    StudyDescription = (0x0008, 0x1030, Study, Text),
    ReferringPhysicianName = (0x0008, 0x0090, Study, PersonName),
    ModalitiesInStudy = (0x0008, 0x0061, Study, Computed),
    NumberOfStudyRelatedSeries = (0x0020, 0x1206, Study, Computed),
    NumberOfStudyRelatedInstances = (0x0020, 0x1208, Study, Computed),
    SeriesInstanceUID = (0x0020, 0x000E, Series, Uid),
    Modality = (0x0008, 0x0060, Series, Text),
    SeriesNumber = (0x0020, 0x0011, Series, Integer),
    SeriesDescription = (0x0008, 0x103E, Series, Text),
    BodyPartExamined = (0x0018, 0x0015, Series, Text),
    SeriesDate = (0x0008, 0x0021, Series, Date),
    SeriesTime = (0x0008, 0x0031, Series, Time),
    NumberOfSeriesRelatedInstances = (0x0020, 0x1209, Series, Computed),
    SOPInstanceUID = (0x0008, 0x0018, Image, Uid),
    SOPClassUID = (0x0008, 0x0016, Image, Uid),
    InstanceNumber = (0x0020, 0x0013, Image, Integer),
    NumberOfFrames = (0x0028, 0x0008, Image, Integer),
}

/// One matching condition (PS3.4 C.2.2.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matcher {
    /// Empty value: every record matches.
    Universal,
    /// Exact value.
    Single(String),
    /// Value with `*` (any run) and `?` (one character).
    Wildcard(String),
    /// Inclusive range of dates or times; either end may be open.
    Range {
        from: Option<String>,
        to: Option<String>,
    },
    /// Any of several UIDs (backslash-separated in DICOM).
    List(Vec<String>),
}

impl Matcher {
    /// Interprets a raw query value for a key of the given kind.
    pub fn parse(kind: KeyKind, raw: &str) -> Result<Matcher, crate::Invalid> {
        let v = raw.trim_matches(|c: char| c == ' ' || c == '\0');
        if v.is_empty() || v == "*" {
            return Ok(Matcher::Universal);
        }
        match kind {
            KeyKind::Uid => {
                let uids: Vec<String> = v
                    .split('\\')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect();
                if uids
                    .iter()
                    .any(|u| !u.chars().all(|c| c.is_ascii_digit() || c == '.'))
                {
                    return Err(crate::invalid!("`{v}` is not a UID or list of UIDs"));
                }
                Ok(if uids.len() == 1 {
                    Matcher::Single(uids[0].clone())
                } else {
                    Matcher::List(uids)
                })
            }
            KeyKind::Date | KeyKind::Time => {
                let clean = |s: &str| -> Result<String, crate::Invalid> {
                    let s: String = s.chars().filter(|c| *c != ':').collect();
                    if s.chars().all(|c| c.is_ascii_digit() || c == '.') {
                        Ok(s)
                    } else {
                        Err(crate::invalid!("`{v}` is not a valid date or time"))
                    }
                };
                if let Some((from, to)) = v.split_once('-') {
                    let from = if from.is_empty() {
                        None
                    } else {
                        Some(clean(from)?)
                    };
                    let to = if to.is_empty() {
                        None
                    } else {
                        Some(clean(to)?)
                    };
                    Ok(Matcher::Range { from, to })
                } else {
                    Ok(Matcher::Single(clean(v)?))
                }
            }
            KeyKind::Integer => v
                .parse::<i64>()
                .map(|_| Matcher::Single(v.to_string()))
                .map_err(|_| crate::invalid!("`{v}` is not an integer")),
            KeyKind::Text | KeyKind::PersonName | KeyKind::Computed => {
                if v.contains('*') || v.contains('?') {
                    Ok(Matcher::Wildcard(v.to_string()))
                } else {
                    Ok(Matcher::Single(v.to_string()))
                }
            }
        }
    }
}

/// A query at one level: conditions plus a cap on the number of answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub level: Level,
    pub conditions: Vec<(Key, Matcher)>,
    /// Return at most this many matches.
    pub limit: usize,
    pub offset: usize,
    /// Sort keys, `true` for descending (QIDO-RS `orderby`, as dcm4chee
    /// offers it); empty: the order things were stored in.
    pub order: Vec<(Key, bool)>,
}

impl Level {
    /// The unique key of this level (PS3.4 C.4.2.2.1: the one a retrieve
    /// at this level must name).
    pub fn unique_key(self) -> Key {
        match self {
            Level::Patient => Key::PatientID,
            Level::Study => Key::StudyInstanceUID,
            Level::Series => Key::SeriesInstanceUID,
            Level::Image => Key::SOPInstanceUID,
        }
    }
}

impl Key {
    /// Text matched without regard to case: descriptions, which users type
    /// as they remember them ("chest" for "CHEST CT"), as Orthanc matches
    /// them. Other text keys (IDs, accession numbers, codes) stay exact.
    pub fn any_case(self) -> bool {
        matches!(self, Key::StudyDescription | Key::SeriesDescription)
    }

    /// Whether results can be sorted by this key at `level`: a stored
    /// attribute of that level or above (computed ones are not).
    pub fn sortable_at(self, level: Level) -> bool {
        self.kind() != KeyKind::Computed && self.level() <= level && level != Level::Patient
    }
}

impl Query {
    /// A retrieve (C-GET, C-MOVE) must name what it retrieves: the level's
    /// unique key with one value or a list of values, never empty or
    /// wildcarded (an empty STUDY-level retrieve would select the archive).
    pub fn check_retrieve(&self) -> Result<(), crate::Invalid> {
        let key = self.level.unique_key();
        let named = self.conditions.iter().any(|(k, m)| {
            *k == key
                && match m {
                    Matcher::Single(_) => true,
                    Matcher::List(v) => !v.is_empty(),
                    _ => false,
                }
        });
        if named {
            Ok(())
        } else {
            Err(crate::invalid!(
                "a {}-level retrieve needs {} with one or more values (no wildcards)",
                self.level.name(),
                key.name()
            ))
        }
    }
}

/// One match: every key of its level and the levels above, as text.
pub type Row = BTreeMap<Key, String>;

/// `*` any run, `?` one character.
pub fn wildcard(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Normal form of a person name or text for case-insensitive matching.
pub fn fold_case(s: &str) -> String {
    s.to_uppercase()
}

/// Normal form of a person name for matching: case folded, and the empty
/// trailing components and groups some senders pad with dropped
/// (`DOE^JOHN^^`, `DOE^JOHN^^^^=`): PS3.5 6.2.1 lets them be left out, so
/// they are the same name as `DOE^JOHN`. Index migration 18 applies the
/// same to names stored before.
pub fn fold_name(s: &str) -> String {
    let folded = fold_case(s);
    let groups: Vec<&str> = folded
        .split('=')
        .map(|g| g.trim_end_matches([' ', '^']))
        .collect();
    let joined = groups.join("=");
    joined.trim_end_matches(['=', ' ']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_without_their_empty_trailing_components() {
        assert_eq!(fold_name("Doe^John^^"), "DOE^JOHN");
        assert_eq!(fold_name("DOE^JOHN^^^^="), "DOE^JOHN");
        assert_eq!(
            fold_name("Yamada^Tarou^^=山田^太郎^^"),
            "YAMADA^TAROU=山田^太郎"
        );
        assert_eq!(fold_name("^John"), "^JOHN");
        assert_eq!(fold_name("DOE^JOHN "), "DOE^JOHN");
        assert_eq!(fold_name(""), "");
    }

    #[test]
    fn wildcards() {
        assert!(wildcard("DOE*", "DOE^JOHN"));
        assert!(wildcard("*JOHN", "DOE^JOHN"));
        assert!(wildcard("D?E*", "DOE^JOHN"));
        assert!(!wildcard("DOE", "DOE^JOHN"));
        assert!(wildcard("*", ""));
        assert!(!wildcard("?", ""));
    }

    #[test]
    fn matchers() {
        assert_eq!(
            Matcher::parse(KeyKind::PersonName, "").unwrap(),
            Matcher::Universal
        );
        assert_eq!(
            Matcher::parse(KeyKind::PersonName, "*").unwrap(),
            Matcher::Universal
        );
        assert_eq!(
            Matcher::parse(KeyKind::PersonName, "DOE^J*").unwrap(),
            Matcher::Wildcard("DOE^J*".into())
        );
        assert_eq!(
            Matcher::parse(KeyKind::Date, "20200101-").unwrap(),
            Matcher::Range {
                from: Some("20200101".into()),
                to: None
            }
        );
        assert_eq!(
            Matcher::parse(KeyKind::Time, "-10:30").unwrap(),
            Matcher::Range {
                from: None,
                to: Some("1030".into())
            }
        );
        assert_eq!(
            Matcher::parse(KeyKind::Uid, "1.2.3\\1.2.4").unwrap(),
            Matcher::List(vec!["1.2.3".into(), "1.2.4".into()])
        );
        assert!(Matcher::parse(KeyKind::Uid, "1.2.x").is_err());
        assert!(Matcher::parse(KeyKind::Date, "2020-01-01x").is_err());
        assert_eq!(Key::from_tag(0x0010, 0x0010), Some(Key::PatientName));
        assert_eq!(Key::StudyInstanceUID.level(), Level::Study);
        let q = |level, conditions| Query {
            level,
            conditions,
            limit: 10,
            offset: 0,
            order: Vec::new(),
        };
        assert!(q(Level::Study, vec![]).check_retrieve().is_err());
        assert!(
            q(
                Level::Study,
                vec![(Key::StudyInstanceUID, Matcher::Universal)]
            )
            .check_retrieve()
            .is_err()
        );
        assert!(
            q(
                Level::Patient,
                vec![(Key::PatientID, Matcher::Wildcard("P*".into()))]
            )
            .check_retrieve()
            .is_err()
        );
        assert!(
            q(
                Level::Series,
                vec![
                    (Key::StudyInstanceUID, Matcher::Single("1.2".into())),
                    (Key::SeriesInstanceUID, Matcher::List(vec!["1.2.3".into()]))
                ]
            )
            .check_retrieve()
            .is_ok()
        );
        assert!(
            q(
                Level::Series,
                vec![(Key::StudyInstanceUID, Matcher::Single("1.2".into()))]
            )
            .check_retrieve()
            .is_err()
        );
    }
}
