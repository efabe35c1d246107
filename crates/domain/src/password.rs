//! Passwords and their hashes, with the rules of NIST SP 800-63B: length,
//! no composition rules, and no common or personal passwords.

use secrecy::{ExposeSecret, SecretString};
use std::fmt;

pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longer inputs are refused before any hashing, so they cannot be used to burn CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// zxcvbn's cost grows with length; a prefix this long already decides the score.
const STRENGTH_CHECK_CHARS: usize = 100;

/// A password that passed the policy. Its text never reaches a log.
#[derive(Clone)]
pub struct Password(PlainPassword);

/// A password as typed, e.g. at login: only the size limit applies, so that
/// old passwords still work after the policy changes.
#[derive(Clone)]
pub struct PlainPassword(SecretString);

/// A PHC-format password hash as stored.
#[derive(Clone)]
pub struct PasswordHash(SecretString);

/// What the policy can say about a password; the texts follow Django's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRule {
    #[error("This password is too short. It must contain at least 8 characters.")]
    TooShort,
    #[error("Ensure this field has no more than 1024 bytes.")]
    TooLong,
    #[error("This password is entirely numeric.")]
    EntirelyNumeric,
    #[error("This password is too common.")]
    TooCommon,
    #[error("The password is too similar to your email or name.")]
    TooSimilar,
}

/// Checks the size limit alone; shared by every field that carries a password.
fn check_size(raw: &str) -> Result<(), PasswordRule> {
    if raw.len() > MAX_PASSWORD_BYTES {
        Err(PasswordRule::TooLong)
    } else {
        Ok(())
    }
}

impl Password {
    /// Applies the whole policy. `personal` holds the user's email and names,
    /// which the password must not resemble. All broken rules are reported.
    pub fn parse(raw: &str, personal: &[&str]) -> Result<Self, Vec<PasswordRule>> {
        if let Err(rule) = check_size(raw) {
            return Err(vec![rule]);
        }
        let mut broken = Vec::new();
        if raw.chars().count() < MIN_PASSWORD_CHARS {
            broken.push(PasswordRule::TooShort);
        }
        if !raw.is_empty() && raw.chars().all(|c| c.is_ascii_digit()) {
            broken.push(PasswordRule::EntirelyNumeric);
        }
        if !raw.is_empty() {
            let probe: String = raw.chars().take(STRENGTH_CHECK_CHARS).collect();
            let weak = |inputs: &[&str]| zxcvbn::zxcvbn(&probe, inputs).score() <= zxcvbn::Score::One;
            if weak(&[]) {
                if !broken.contains(&PasswordRule::EntirelyNumeric) && !broken.contains(&PasswordRule::TooShort) {
                    broken.push(PasswordRule::TooCommon);
                }
            } else {
                let personal: Vec<&str> = personal.iter().copied().filter(|s| !s.trim().is_empty()).collect();
                if weak(&personal) {
                    broken.push(PasswordRule::TooSimilar);
                }
            }
        }
        if broken.is_empty() {
            Ok(Self(PlainPassword(SecretString::from(raw))))
        } else {
            Err(broken)
        }
    }

    pub fn plain(&self) -> &PlainPassword {
        &self.0
    }
}

impl PlainPassword {
    pub fn parse(raw: &str) -> Result<Self, PasswordRule> {
        check_size(raw)?;
        Ok(Self(SecretString::from(raw)))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl PasswordHash {
    pub fn new(phc: impl Into<String>) -> Self {
        Self(SecretString::from(phc.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

impl fmt::Debug for PlainPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PlainPassword([REDACTED])")
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash([REDACTED])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(raw: &str, personal: &[&str]) -> Vec<PasswordRule> {
        Password::parse(raw, personal).err().unwrap_or_default()
    }

    #[test]
    fn accepts_a_long_unusual_passphrase() {
        assert!(Password::parse("correct horse battery staple", &[]).is_ok());
        assert!(Password::parse("Tr1cky-Sunset-42", &["ada@example.com", "Ada", "Lovelace"]).is_ok());
    }

    #[test]
    fn rejects_short_passwords() {
        assert_eq!(rules("Xq9!zT", &[]), vec![PasswordRule::TooShort]);
    }

    #[test]
    fn rejects_entirely_numeric_passwords() {
        assert!(rules("84736291057", &[]).contains(&PasswordRule::EntirelyNumeric));
    }

    #[test]
    fn rejects_common_passwords() {
        assert_eq!(rules("password", &[]), vec![PasswordRule::TooCommon]);
        assert_eq!(rules("qwertyuiop", &[]), vec![PasswordRule::TooCommon]);
    }

    #[test]
    fn rejects_passwords_like_the_users_email_or_name() {
        let personal = ["ada.lovelace@example.com", "ada.lovelace", "Ada", "Lovelace"];
        assert_eq!(rules("ada.lovelace1", &personal), vec![PasswordRule::TooSimilar]);
    }

    #[test]
    fn rejects_over_1024_bytes_without_further_checks() {
        let long = "é".repeat(513);
        assert_eq!(rules(&long, &[]), vec![PasswordRule::TooLong]);
        assert_eq!(PlainPassword::parse(&long).err(), Some(PasswordRule::TooLong));
    }

    #[test]
    fn accepts_exactly_1024_bytes() {
        let mut long: String = "Zebra-Quartz-Violin-".repeat(52);
        long.truncate(MAX_PASSWORD_BYTES);
        assert!(Password::parse(&long, &[]).is_ok());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let password = Password::parse("correct horse battery staple", &[]).unwrap();
        assert!(!format!("{password:?}").contains("horse"));
        assert!(!format!("{:?}", PasswordHash::new("$argon2id$secret")).contains("secret"));
    }
}
