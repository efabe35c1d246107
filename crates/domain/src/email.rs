//! The email address: the login identifier.

use std::fmt;
use std::str::FromStr;

/// The longest address accepted, per RFC 5321's path limit.
pub const MAX_EMAIL_LEN: usize = 254;

/// A syntactically valid address: the local part as typed, the domain
/// lower-cased and in its Unicode form (IDNA, UTS 46), so that a domain's two
/// spellings (`exämple.com`, `xn--exmple-cua.com`) are one address.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

/// The case-insensitive identity of an address, unique across accounts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailKey(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("Enter a valid email address.")]
    Invalid,
    #[error("Ensure this field has no more than 254 characters.")]
    TooLong,
}

impl Email {
    pub fn parse(raw: &str) -> Result<Self, EmailError> {
        let raw = raw.trim();
        if raw.chars().count() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let parsed = email_address::EmailAddress::from_str(raw).map_err(|_| EmailError::Invalid)?;
        // Display names ("Ada <ada@example.com>") and quoted oddities are not logins.
        if parsed.as_str() != raw || raw.contains(['<', '>', ' ', '"']) {
            return Err(EmailError::Invalid);
        }
        let domain = parsed.domain();
        if (!domain.contains('.') && domain != "localhost") || domain.starts_with('[') {
            return Err(EmailError::Invalid);
        }
        let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::Invalid)?;
        let (domain, valid) = idna::domain_to_unicode(&ascii);
        valid.map_err(|_| EmailError::Invalid)?;
        Ok(Self(format!("{}@{}", parsed.local_part(), domain)))
    }

    /// Rebuilds an address read back from storage, where it was stored normalised.
    pub fn from_trusted(stored: String) -> Self {
        Self(stored)
    }

    pub fn key(&self) -> EmailKey {
        EmailKey(self.0.to_lowercase())
    }

    /// The part before the `@`, used by the password-similarity rule.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or(self.0.as_str(), |(local, _)| local)
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Addresses are personal data: logs show only the domain.
impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let domain = self.0.rsplit_once('@').map_or("", |(_, d)| d);
        write!(f, "Email(***@{domain})")
    }
}

impl EmailKey {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for EmailKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_local_part_and_lowercases_domain() {
        let email = Email::parse("Ada.Lovelace@Example.COM").unwrap();
        assert_eq!(email.as_ref(), "Ada.Lovelace@example.com");
        assert_eq!(email.key().as_str(), "ada.lovelace@example.com");
        assert_eq!(email.local_part(), "Ada.Lovelace");
    }

    #[test]
    fn a_domain_in_either_spelling_is_one_address() {
        let unicode = Email::parse("Ada@Exämple.COM").unwrap();
        let punycode = Email::parse("ada@XN--EXMPLE-CUA.com").unwrap();
        assert_eq!(unicode.as_ref(), "Ada@exämple.com");
        assert_eq!(punycode.as_ref(), "ada@exämple.com");
        assert_eq!(unicode.key(), punycode.key());
        assert_eq!(Email::parse("ada@xn--invalid-.com"), Err(EmailError::Invalid), "not a valid IDNA label");
    }

    #[test]
    fn trims_surrounding_whitespace() {
        assert_eq!(Email::parse("  ada@example.com ").unwrap().as_ref(), "ada@example.com");
    }

    #[test]
    fn rejects_malformed_addresses() {
        for raw in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@@example.com",
            "Ada <ada@example.com>",
            "a b@example.com",
            "a\u{0}b@example.com",
            "ada@exa\u{0}mple.com",
            "ada\t@example.com",
        ] {
            assert_eq!(Email::parse(raw), Err(EmailError::Invalid), "{raw:?}");
        }
    }

    #[test]
    fn rejects_addresses_over_254_characters() {
        let raw = format!("{}@{}.com", "a".repeat(64), "b".repeat(190));
        assert_eq!(Email::parse(&raw), Err(EmailError::TooLong));
    }

    #[test]
    fn debug_hides_the_local_part() {
        let email = Email::parse("ada@example.com").unwrap();
        assert_eq!(format!("{email:?}"), "Email(***@example.com)");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Address-like text: ASCII local parts, domains with and without
        /// non-ASCII letters, in any letter case.
        const ADDRESS: &str = "[a-zA-Z0-9._+-]{1,24}@([a-zA-Z0-9äöüßéÅ-]{1,20}\\.){1,3}[a-zA-Z]{2,8}";

        proptest! {
            /// Any text gets an answer, and an accepted address is bounded,
            /// has no space, control character or angle bracket, and reads
            /// back as itself.
            #[test]
            fn any_text_is_answered_and_accepted_addresses_read_back_as_themselves(
                raw in prop_oneof!["\\PC{0,300}", ".{0,64}", ADDRESS]
            ) {
                if let Ok(email) = Email::parse(&raw) {
                    let text = email.as_ref();
                    prop_assert!(text.chars().count() <= MAX_EMAIL_LEN);
                    prop_assert!(!text.contains([' ', '<', '>', '"']) && !text.chars().any(char::is_control));
                    prop_assert_eq!(Email::parse(text), Ok(email.clone()));
                }
            }

            /// One mailbox, one key: the domain's letter case and its IDNA
            /// spelling do not make another account.
            #[test]
            fn the_domain_s_case_and_spelling_do_not_change_the_key(raw in ADDRESS) {
                let Ok(email) = Email::parse(&raw) else { return Ok(()) };
                let (local, domain) = email.as_ref().rsplit_once('@').unwrap();
                // Letter case only: `ß` shouted is `SS`, another domain under IDNA 2008.
                let upper = |c: char| {
                    let mut upper = c.to_uppercase();
                    match (upper.next(), upper.next()) {
                        (Some(u), None) if u.to_lowercase().eq([c]) => u,
                        _ => c,
                    }
                };
                let shouted = format!("{local}@{}", domain.chars().map(upper).collect::<String>());
                let punycode = format!("{local}@{}", idna::domain_to_ascii(domain).unwrap());
                for other in [shouted, punycode] {
                    if let Ok(other) = Email::parse(&other) {
                        prop_assert_eq!(other.key(), email.key());
                    }
                }
            }
        }
    }
}
