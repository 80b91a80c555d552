//! The one error of the domain rules: a value that breaks one, with the
//! sentence that tells a person which and why (shown as is by the CLI, the
//! admin API's 422 body, and DICOM error comments).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl From<String> for Invalid {
    fn from(s: String) -> Invalid {
        Invalid(s)
    }
}

impl From<&str> for Invalid {
    fn from(s: &str) -> Invalid {
        Invalid(s.to_string())
    }
}

impl From<Invalid> for String {
    fn from(e: Invalid) -> String {
        e.0
    }
}

/// `Invalid(format!(...))`.
#[macro_export]
macro_rules! invalid {
    ($($t:tt)*) => {
        $crate::Invalid(format!($($t)*))
    };
}
