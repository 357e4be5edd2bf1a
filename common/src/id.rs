//! Validated identifiers: user ids, group ids, file names and passwords.
//!
//! Invariant: a value of one of these types is never empty, never longer than its limit and
//! never holds whitespace or control characters, whether it came from the REPL or the wire
//! (deserialization goes through the same check).
//! Invariant: a user id, group id or file name is in Unicode normalization form C and holds
//! no invisible or bidirectional formatting character (issue 21), so two names that look
//! the same are the same string. Text a user typed is put in NFC when the value is created
//! (`new`, `FromStr`); a value from the wire or from disk (`TryFrom<String>`, which serde
//! uses) is only checked, and refused when it is not NFC already.

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

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
    /// The string holds whitespace or a control character, `code` (for a file name:
    /// whitespace other than inner spaces).
    #[error("{kind} contains whitespace or a control character (U+{code:04X})")]
    BadChar { kind: &'static str, code: u32 },
    /// The name holds `code`, a character that shows as nothing or reorders the text around
    /// it: a format character (Unicode category Cf, the bidirectional controls among them)
    /// or another default-ignorable one (zero-width spaces and joiners, variation
    /// selectors, Hangul fillers, ...).
    #[error("{kind} contains U+{code:04X}, an invisible or bidirectional formatting character")]
    Invisible { kind: &'static str, code: u32 },
    /// A name from the wire or disk that is not in Unicode normalization form C.
    #[error("{kind} is not in Unicode normalization form C (NFC)")]
    NotNfc { kind: &'static str },
    /// A file name that is `.`/`..` or holds a path separator.
    #[error("file name must not be '.', '..' or contain '/' or '\\'")]
    PathLike,
}

/// The default-ignorable code points of Unicode (`Default_Ignorable_Code_Point` in
/// DerivedCoreProperties.txt, Unicode 16): characters that render as nothing. Unicode
/// reserves these ranges in advance, unassigned ones included, so the table does not age.
const DEFAULT_IGNORABLE: &[(u32, u32)] = &[
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
];

/// Whether `c` is invisible or a formatting character: Unicode category Cf (which holds
/// every bidirectional control: U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069) or
/// default-ignorable.
pub fn is_invisible(c: char) -> bool {
    let code = u32::from(c);
    c.general_category() == GeneralCategory::Format
        || DEFAULT_IGNORABLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
}

/// `s` in Unicode normalization form C; `s` itself when it is already (the usual case).
fn to_nfc(s: String) -> String {
    if unicode_normalization::is_nfc(&s) {
        s
    } else {
        s.nfc().collect()
    }
}

/// The checks every name passes: not empty, at most `max` bytes, no character that `bad`
/// refuses (whitespace and controls) and no invisible one, and in NFC.
fn check_name(
    kind: &'static str,
    s: &str,
    max: usize,
    bad: impl Fn(char) -> bool,
) -> Result<(), IdError> {
    check_with(kind, s, max, bad)?;
    if let Some(c) = s.chars().find(|&c| is_invisible(c)) {
        return Err(IdError::Invisible { kind, code: c.into() });
    }
    if !unicode_normalization::is_nfc(s) {
        return Err(IdError::NotNfc { kind });
    }
    Ok(())
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
    if let Some(c) = s.chars().find(|&c| bad(c)) {
        return Err(IdError::BadChar { kind, code: c.into() });
    }
    Ok(())
}

fn whitespace_or_control(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, prepare: $prepare:expr, check: $check:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Wraps `s`, text a user typed: prepared (a name is put in NFC) and validated.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let prepare: fn(String) -> String = $prepare;
                Self::checked(prepare(s.into()))
            }

            /// Validates `s` as it is and wraps it.
            fn checked(s: String) -> Result<Self, IdError> {
                let check: fn(&str) -> Result<(), IdError> = $check;
                check(&s)?;
                Ok(Self(s))
            }

            /// The validated string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        /// From the wire or from disk: validated as it is, never changed (a name not in
        /// NFC is refused, not normalised).
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::checked(s).inspect_err(|e| crate::codec::note_refusal(e))
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        /// From text a user typed, as `new`.
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
    UserId,
    prepare: to_nfc,
    check: |s| check_name("user id", s, MAX_ID_LEN, whitespace_or_control)
);
validated_string!(
    /// A group's name.
    GroupId,
    prepare: to_nfc,
    check: |s| check_name("group id", s, MAX_ID_LEN, whitespace_or_control)
);
validated_string!(
    /// The base name a file is shared under inside a group. Never a path. Plain spaces are
    /// allowed inside (not at either end); other whitespace and control characters are not.
    FileName,
    prepare: to_nfc,
    check: |s| {
        let kind = "file name";
        check_name(kind, s, MAX_FILE_NAME_LEN, |c| c != ' ' && whitespace_or_control(c))?;
        if s.starts_with(' ') || s.ends_with(' ') {
            return Err(IdError::BadChar { kind, code: 0x20 });
        }
        if s == "." || s == ".." || s.contains('/') || s.contains('\\') {
            return Err(IdError::PathLike);
        }
        Ok(())
    }
);
validated_string!(
    /// A password in transit from the client to the tracker. Its `Debug` never shows it.
    /// It is taken as typed: no normalization, so that the hash of an existing password
    /// still matches.
    Password,
    prepare: std::convert::identity,
    check: |s| check_with("password", s, MAX_PASSWORD_LEN, whitespace_or_control)
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
    use proptest::prelude::*;

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
        assert_eq!(UserId::new("a b"), Err(IdError::BadChar { kind: "user id", code: 0x20 }));
        assert_eq!(GroupId::new("a\u{7}"), Err(IdError::BadChar { kind: "group id", code: 7 }));
        assert_eq!(
            UserId::new("x".repeat(MAX_ID_LEN + 1)),
            Err(IdError::TooLong { kind: "user id", max: MAX_ID_LEN })
        );
        assert!(UserId::new("x".repeat(MAX_ID_LEN)).is_ok());
        assert!(FileName::new("my file.txt").is_ok());
        for (bad, code) in [(" a", 0x20), ("a ", 0x20), ("a\tb", 9), ("a\nb", 10)] {
            let error = IdError::BadChar { kind: "file name", code };
            assert_eq!(FileName::new(bad), Err(error), "{bad:?}");
        }
        for bad in [".", "..", "a/b", "a\\b"] {
            assert_eq!(FileName::new(bad), Err(IdError::PathLike), "{bad}");
        }
    }

    /// Issue 21: a name that shows as another (`bob\u{200b}` as `bob`) or whose text runs
    /// backwards (`invoice\u{202e}txt.exe`) is refused, naming the character.
    #[test]
    fn invisible_and_bidirectional_characters_are_refused_by_code_point() {
        let user = |code| Err(IdError::Invisible { kind: "user id", code });
        assert_eq!(UserId::new("bob\u{200b}"), user(0x200B));
        for (name, code) in [
            ("a\u{ad}b", 0xAD),       // soft hyphen
            ("a\u{34f}b", 0x34F),     // combining grapheme joiner
            ("a\u{61c}b", 0x61C),     // Arabic letter mark
            ("a\u{180e}b", 0x180E),   // Mongolian vowel separator
            ("a\u{200c}b", 0x200C),   // zero-width non-joiner
            ("a\u{200d}b", 0x200D),   // zero-width joiner
            ("a\u{200e}b", 0x200E),   // left-to-right mark
            ("a\u{200f}b", 0x200F),   // right-to-left mark
            ("a\u{202a}b", 0x202A),   // left-to-right embedding
            ("a\u{202e}b", 0x202E),   // right-to-left override
            ("a\u{2060}b", 0x2060),   // word joiner
            ("a\u{2066}b", 0x2066),   // left-to-right isolate
            ("a\u{2069}b", 0x2069),   // pop directional isolate
            ("a\u{3164}b", 0x3164),   // Hangul filler
            ("a\u{fe0f}b", 0xFE0F),   // variation selector 16
            ("\u{feff}ab", 0xFEFF),   // byte order mark
            ("a\u{fff9}b", 0xFFF9),   // interlinear annotation anchor (Cf)
            ("a\u{110bd}b", 0x110BD), // Kaithi number sign (Cf)
            ("a\u{1d173}b", 0x1D173), // musical symbol begin beam
            ("a\u{e0001}b", 0xE0001), // language tag
            ("a\u{e0100}b", 0xE0100), // variation selector 17
        ] {
            assert_eq!(UserId::new(name), user(code), "{name:?}");
            assert_eq!(GroupId::new(name), Err(IdError::Invisible { kind: "group id", code }));
            assert_eq!(FileName::new(name), Err(IdError::Invisible { kind: "file name", code }));
        }
        let error = FileName::new("invoice\u{202e}txt.exe").unwrap_err();
        assert_eq!(error, IdError::Invisible { kind: "file name", code: 0x202E });
        assert_eq!(
            error.to_string(),
            "file name contains U+202E, an invisible or bidirectional formatting character"
        );
        assert_eq!(
            GroupId::new("g\u{1}").unwrap_err().to_string(),
            "group id contains whitespace or a control character (U+0001)"
        );
        // C1 controls and the separators of lines and paragraphs are refused too.
        for name in ["a\u{85}b", "a\u{9f}b", "a\u{2028}b", "a\u{2029}b", "a\u{a0}b"] {
            assert!(matches!(UserId::new(name), Err(IdError::BadChar { .. })), "{name:?}");
        }
        // Visible letters of every script, and marks that combine with them, stay.
        for name in ["ümlaut", "日本語", "עברית", "العربية", "e\u{301}\u{302}", "👍🏽"]
        {
            assert!(UserId::new(name).is_ok(), "{name:?}");
        }
    }

    /// Issue 21: two spellings of one name (a precomposed `é`, or `e` and a combining
    /// accent) are one name: typed text is put in NFC, and the wire takes only NFC.
    #[test]
    fn names_are_put_in_nfc_when_typed_and_refused_from_the_wire_when_not() {
        let decomposed = "cafe\u{301}";
        assert_eq!(UserId::new(decomposed).unwrap().as_str(), "caf\u{e9}");
        assert_eq!(GroupId::new(decomposed), GroupId::new("caf\u{e9}"));
        assert_eq!("cafe\u{301}.txt".parse::<FileName>().unwrap().as_str(), "caf\u{e9}.txt");
        // The longest name is measured after normalization.
        let nfc = UserId::new("\u{e9}".repeat(MAX_ID_LEN / 2)).unwrap();
        assert_eq!(UserId::new("e\u{301}".repeat(MAX_ID_LEN / 2)), Ok(nfc));

        assert_eq!(
            UserId::try_from(decomposed.to_string()),
            Err(IdError::NotNfc { kind: "user id" })
        );
        let bytes = postcard::to_stdvec(&String::from(decomposed)).unwrap();
        assert!(postcard::from_bytes::<UserId>(&bytes).is_err());
        assert!(postcard::from_bytes::<GroupId>(&bytes).is_err());
        assert!(postcard::from_bytes::<FileName>(&bytes).is_err());
        let bytes = postcard::to_stdvec(&String::from("caf\u{e9}")).unwrap();
        assert_eq!(postcard::from_bytes::<GroupId>(&bytes).unwrap().as_str(), "caf\u{e9}");
        // Passwords are taken as typed: an existing account's password hash still matches.
        assert_eq!(Password::new(decomposed).unwrap().as_str(), decomposed);
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

    /// Strings that are likely to hit the rules: ASCII, accents both ways, invisible and
    /// bidirectional characters, whitespace, controls, and any character at all.
    fn tricky() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => Just('e'),
            1 => Just('\u{301}'),
            1 => Just('\u{e9}'),
            1 => Just('\u{200b}'),
            1 => Just('\u{202e}'),
            1 => Just('\u{fe0f}'),
            1 => Just(' '),
            1 => Just('.'),
            1 => Just('/'),
            1 => Just('\u{7}'),
            2 => any::<char>(),
        ];
        proptest::collection::vec(c, 0..80).prop_map(|v| v.into_iter().collect())
    }

    #[track_caller]
    fn check_accepted(s: &str) {
        assert!(unicode_normalization::is_nfc(s), "{s:?}");
        assert!(!s.chars().any(|c| is_invisible(c) || c.is_control()), "{s:?}");
        assert!(!s.is_empty());
    }

    proptest! {
        /// Whatever is typed, an accepted name is NFC and holds no invisible or control
        /// character, and a refusal is an error, never a panic.
        #[test]
        fn an_accepted_name_is_nfc_and_visible(s in tricky()) {
            if let Ok(user) = UserId::new(s.as_str()) {
                check_accepted(user.as_str());
                prop_assert!(!user.as_str().chars().any(char::is_whitespace));
            }
            if let Ok(group) = GroupId::new(s.as_str()) {
                check_accepted(group.as_str());
            }
            if let Ok(file) = FileName::new(s.as_str()) {
                check_accepted(file.as_str());
                prop_assert!(file.as_str().len() <= MAX_FILE_NAME_LEN);
            }
            let _ = Password::new(s.as_str());
        }

        /// The wire never changes a name: it takes exactly the names that typing would
        /// give unchanged, and anything it takes survives a round trip.
        #[test]
        fn the_wire_takes_only_what_typing_leaves_unchanged(s in tricky()) {
            let bytes = postcard::to_stdvec(&s).unwrap();
            let typed = GroupId::new(s.as_str());
            match postcard::from_bytes::<GroupId>(&bytes) {
                Ok(group) => {
                    prop_assert_eq!(group.as_str(), s.as_str());
                    prop_assert_eq!(typed, Ok(group.clone()));
                    let again = postcard::to_stdvec(&group).unwrap();
                    prop_assert_eq!(postcard::from_bytes::<GroupId>(&again).unwrap(), group);
                }
                Err(_) => prop_assert!(!typed.is_ok_and(|g| g.as_str() == s)),
            }
            let _ = postcard::from_bytes::<FileName>(&bytes);
            let _ = postcard::from_bytes::<UserId>(&bytes);
        }

        /// Arbitrary bytes never make deserialization panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = postcard::from_bytes::<UserId>(&bytes);
            let _ = postcard::from_bytes::<FileName>(&bytes);
        }
    }
}
