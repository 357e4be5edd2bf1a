//! Password storage: PBKDF2-HMAC-SHA1 with a per-user random salt and a configurable (high)
//! iteration count, compared in constant time.
//!
//! Invariant: no password is ever stored or logged; only `Credential`s are.

use pbkdf2::pbkdf2_hmac;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use common::Password;

/// The default PBKDF2 iteration count, OWASP's 2023 recommendation for PBKDF2-HMAC-SHA1.
pub const DEFAULT_ITERATIONS: u32 = 1_300_000;

/// What the tracker keeps of a password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credential {
    salt: [u8; 16],
    iterations: u32,
    hash: [u8; 20],
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential(pbkdf2-sha1, {} iterations)", self.iterations)
    }
}

impl Credential {
    /// Derives a credential for `password` with a fresh random salt.
    pub fn derive(password: &Password, iterations: u32) -> Result<Credential, getrandom::Error> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)?;
        Ok(Credential::with_salt(password, salt, iterations))
    }

    fn with_salt(password: &Password, salt: [u8; 16], iterations: u32) -> Credential {
        let mut hash = [0u8; 20];
        pbkdf2_hmac::<Sha1>(password.as_str().as_bytes(), &salt, iterations, &mut hash);
        Credential { salt, iterations, hash }
    }

    /// Whether `password` is the one this credential was derived from (constant time in the
    /// hash comparison).
    pub fn verify(&self, password: &Password) -> bool {
        let candidate = Credential::with_salt(password, self.salt, self.iterations);
        bool::from(candidate.hash.ct_eq(&self.hash))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_only_the_right_password() {
        let pw = Password::new("s3cret").unwrap();
        let cred = Credential::derive(&pw, 1000).unwrap();
        assert!(cred.verify(&pw));
        assert!(!cred.verify(&Password::new("s3cret!").unwrap()));
    }

    #[test]
    fn salts_differ_per_derivation() {
        let pw = Password::new("same").unwrap();
        let a = Credential::derive(&pw, 1000).unwrap();
        let b = Credential::derive(&pw, 1000).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn matches_rfc6070_vector() {
        // RFC 6070: P = "password", S = "salt", c = 4096.
        let mut out = [0u8; 20];
        pbkdf2_hmac::<Sha1>(b"password", b"salt", 4096, &mut out);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "4b007901b765489abead49d926f721d065a429c1");
    }
}
