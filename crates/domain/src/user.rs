//! The user, their profile, and the rules on the fields they may edit.

use crate::email::Email;
use crate::error::{collect, FieldErrors};
use std::fmt;
use time::OffsetDateTime;

/// The integer primary key of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(i64);

impl UserId {
    /// A user's key as the database holds it.
    pub const fn new(raw: i64) -> Self {
        Self(raw)
    }

    pub const fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The group every new account joins.
pub const REGULAR_USER_GROUP: &str = "Regular User";
/// The group holding every permission.
pub const ADMIN_USER_GROUP: &str = "Admin User";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub first_name: String,
    pub last_name: String,
    pub is_active: bool,
    pub is_staff: bool,
    pub is_superuser: bool,
    pub is_verified: bool,
    /// A second factor (TOTP) is asked for at login.
    pub mfa_enabled: bool,
    pub date_joined: OffsetDateTime,
    pub last_login: Option<OffsetDateTime>,
    pub groups: Vec<String>,
    pub profile: Profile,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub phone: Option<String>,
    pub gender: Option<String>,
    pub bio: String,
}

pub const MAX_NAME_CHARS: usize = 150;
pub const MAX_GENDER_CHARS: usize = 32;
pub const MAX_BIO_CHARS: usize = 500;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileRule {
    #[error("Ensure this field has no more than {0} characters.")]
    TooLong(usize),
    #[error("Enter a phone number in E.164 format: + and 8 to 15 digits.")]
    Phone,
    #[error("Remove the control characters (such as NUL): they have no place in this field.")]
    ControlCharacter,
}

/// One line of text (a name, a label, a search): no control character at
/// all, since none has a place in it and PostgreSQL cannot store NUL.
pub fn single_line(raw: &str, max: usize) -> Result<String, ProfileRule> {
    if raw.chars().any(char::is_control) {
        return Err(ProfileRule::ControlCharacter);
    }
    at_most(raw, max)
}

/// Free text over several lines: line breaks and tabs, no other control character.
fn multi_line(raw: &str, max: usize) -> Result<String, ProfileRule> {
    if raw.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err(ProfileRule::ControlCharacter);
    }
    at_most(raw, max)
}

fn at_most(raw: &str, max: usize) -> Result<String, ProfileRule> {
    if raw.chars().count() > max {
        Err(ProfileRule::TooLong(max))
    } else {
        Ok(raw.to_owned())
    }
}

/// A first or last name, trimmed.
pub fn parse_name(raw: &str) -> Result<String, ProfileRule> {
    single_line(raw.trim(), MAX_NAME_CHARS)
}

/// E.164: a `+` then 8 to 15 digits, the first not zero.
pub fn parse_phone(raw: &str) -> Result<String, ProfileRule> {
    let digits = raw.strip_prefix('+').ok_or(ProfileRule::Phone)?;
    let well_formed =
        (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if well_formed {
        Ok(raw.to_owned())
    } else {
        Err(ProfileRule::Phone)
    }
}

pub fn parse_gender(raw: &str) -> Result<String, ProfileRule> {
    single_line(raw.trim(), MAX_GENDER_CHARS)
}

pub fn parse_bio(raw: &str) -> Result<String, ProfileRule> {
    multi_line(raw, MAX_BIO_CHARS)
}

/// A partial update of the caller's own account; `None` leaves a field alone,
/// `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfilePatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub phone: Option<Option<String>>,
    pub gender: Option<Option<String>>,
    pub bio: Option<String>,
}

/// The raw values of a patch as they came in, before the rules are applied.
#[derive(Debug, Clone, Default)]
pub struct RawProfilePatch<'a> {
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    pub phone: Option<Option<&'a str>>,
    pub gender: Option<Option<&'a str>>,
    pub bio: Option<&'a str>,
}

impl ProfilePatch {
    pub fn parse(raw: RawProfilePatch<'_>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let mut patch = ProfilePatch::default();
        if let Some(name) = raw.first_name {
            patch.first_name = collect(&mut errors, "first_name", parse_name(name));
        }
        if let Some(name) = raw.last_name {
            patch.last_name = collect(&mut errors, "last_name", parse_name(name));
        }
        if let Some(phone) = raw.phone {
            patch.phone = match phone {
                None => Some(None),
                Some(p) => collect(&mut errors, "profile.phone", parse_phone(p)).map(Some),
            };
        }
        if let Some(gender) = raw.gender {
            patch.gender = match gender {
                None => Some(None),
                Some(g) => collect(&mut errors, "profile.gender", parse_gender(g)).map(Some),
            };
        }
        if let Some(bio) = raw.bio {
            patch.bio = collect(&mut errors, "profile.bio", parse_bio(bio));
        }
        errors.finish(patch)
    }

    pub fn is_empty(&self) -> bool {
        self == &ProfilePatch::default()
    }

    /// Whether it names a profile field, beyond the names kept on the user.
    pub fn touches_profile(&self) -> bool {
        self.phone.is_some() || self.gender.is_some() || self.bio.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_must_be_e164() {
        assert!(parse_phone("+14155550123").is_ok());
        assert!(parse_phone("+12345678").is_ok());
        for bad in ["14155550123", "+1234567", "+1234567890123456", "+1 415 555", "+0123456789", "+"] {
            assert_eq!(parse_phone(bad), Err(ProfileRule::Phone), "{bad}");
        }
    }

    #[test]
    fn limits_are_in_characters() {
        assert!(parse_gender(&"é".repeat(32)).is_ok());
        assert_eq!(parse_gender(&"é".repeat(33)), Err(ProfileRule::TooLong(32)));
        assert!(parse_bio(&"b".repeat(500)).is_ok());
        assert_eq!(parse_bio(&"b".repeat(501)), Err(ProfileRule::TooLong(500)));
        assert_eq!(parse_name(&"n".repeat(151)), Err(ProfileRule::TooLong(150)));
    }

    #[test]
    fn control_characters_are_refused_but_a_bio_keeps_its_lines() {
        for name in ["a\u{0}b", "tab\there", "bell\u{7}", "del\u{7f}", "c1\u{85}x"] {
            assert_eq!(parse_name(name), Err(ProfileRule::ControlCharacter), "{name:?}");
            assert_eq!(parse_gender(name), Err(ProfileRule::ControlCharacter), "{name:?}");
        }
        assert_eq!(parse_bio("line one\r\nline two\tend").as_deref(), Ok("line one\r\nline two\tend"));
        assert_eq!(parse_bio("a\u{0}b"), Err(ProfileRule::ControlCharacter));
        assert_eq!(parse_name("  Zoë Ñandú  ").as_deref(), Ok("Zoë Ñandú"));
    }

    #[test]
    fn patch_collects_every_error_under_dotted_keys() {
        let raw = RawProfilePatch {
            phone: Some(Some("555")),
            bio: Some(&"x".repeat(501)),
            first_name: Some("Ada"),
            ..Default::default()
        };
        let errors = ProfilePatch::parse(raw).unwrap_err();
        assert!(errors.contains("profile.phone"));
        assert!(errors.contains("profile.bio"));
        assert!(!errors.contains("first_name"));
    }

    #[test]
    fn patch_can_clear_nullable_fields() {
        let raw = RawProfilePatch { phone: Some(None), gender: Some(None), ..Default::default() };
        let patch = ProfilePatch::parse(raw).unwrap();
        assert_eq!(patch.phone, Some(None));
        assert_eq!(patch.gender, Some(None));
        assert!(!patch.is_empty());
    }
}
