//! Validated identifiers: user ids, group ids, file names and passwords.
//!
//! Invariant: a value of one of these types is never empty, never longer than its limit and
//! never holds whitespace or control characters, whether it came from the REPL or the wire
//! (deserialization goes through the same check).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest user id, group id or file name, in bytes.
pub const MAX_ID_LEN: usize = 64;
/// The longest password, in bytes.
pub const MAX_PASSWORD_LEN: usize = 128;
/// The longest file name, in bytes (a common file system limit).
pub const MAX_FILE_NAME_LEN: usize = 255;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The string is empty.
    #[error("{kind} is empty")]
    Empty { kind: &'static str },
    /// The string is longer than allowed.
    #[error("{kind} is longer than {max} bytes")]
    TooLong { kind: &'static str, max: usize },
    /// The string holds whitespace or a control character (for a file name: whitespace
    /// other than inner spaces).
    #[error("{kind} contains whitespace or a control character")]
    BadChar { kind: &'static str },
    /// A file name that is `.`/`..` or holds a path separator.
    #[error("file name must not be '.', '..' or contain '/' or '\\'")]
    PathLike,
}

fn check(kind: &'static str, s: &str, max: usize) -> Result<(), IdError> {
    check_with(kind, s, max, |c| c.is_whitespace() || c.is_control())
}

fn check_with(
    kind: &'static str,
    s: &str,
    max: usize,
    bad: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > max {
        return Err(IdError::TooLong { kind, max });
    }
    if s.chars().any(bad) {
        return Err(IdError::BadChar { kind });
    }
    Ok(())
}

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&s)?;
                Ok(Self(s))
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
    };
}

validated_string!(
    /// A user's account name.
    UserId, "user id", |s| check("user id", s, MAX_ID_LEN)
);
validated_string!(
    /// A group's name.
    GroupId, "group id", |s| check("group id", s, MAX_ID_LEN)
);
validated_string!(
    /// The base name a file is shared under inside a group. Never a path. Plain spaces are
    /// allowed inside (not at either end); other whitespace and control characters are not.
    FileName, "file name", |s| {
        let kind = "file name";
        check_with(kind, s, MAX_FILE_NAME_LEN, |c| c != ' ' && (c.is_whitespace() || c.is_control()))?;
        if s.starts_with(' ') || s.ends_with(' ') {
            return Err(IdError::BadChar { kind });
        }
        if s == "." || s == ".." || s.contains('/') || s.contains('\\') {
            return Err(IdError::PathLike);
        }
        Ok(())
    }
);
validated_string!(
    /// A password in transit from the client to the tracker. Its `Debug` never shows it.
    Password, "password", |s| check("password", s, MAX_PASSWORD_LEN)
);

macro_rules! display_plain {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:?}", self.0)
            }
        }
    )*};
}
display_plain!(UserId, GroupId, FileName);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert_eq!(UserId::new("alice").unwrap().as_str(), "alice");
        assert!(GroupId::new("g-1_ü").is_ok());
        assert!(FileName::new("report.final.pdf").is_ok());
    }

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(UserId::new(""), Err(IdError::Empty { kind: "user id" }));
        assert_eq!(UserId::new("a b"), Err(IdError::BadChar { kind: "user id" }));
        assert_eq!(GroupId::new("a\u{7}"), Err(IdError::BadChar { kind: "group id" }));
        assert_eq!(
            UserId::new("x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong { kind: "user id", max: MAX_ID_LEN })
        );
        assert!(UserId::new("x".repeat(MAX_ID_LEN)).is_ok());
        assert!(FileName::new("my file.txt").is_ok());
        for bad in [" a", "a ", "a\tb", "a\nb"] {
            assert_eq!(FileName::new(bad), Err(IdError::BadChar { kind: "file name" }), "{bad:?}");
        }
        for bad in [".", "..", "a/b", "a\\b"] {
            assert_eq!(FileName::new(bad), Err(IdError::PathLike), "{bad}");
        }
    }

    #[test]
    fn password_debug_hides_the_secret() {
        let p = Password::new("hunter2").unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn deserialization_validates() {
        let bytes = postcard::to_stdvec(&String::from("a b")).unwrap();
        assert!(postcard::from_bytes::<UserId>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&String::from("ab")).unwrap();
        assert_eq!(postcard::from_bytes::<UserId>(&bytes).unwrap().as_str(), "ab");
    }
}
