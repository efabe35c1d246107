//! What the account use cases take and give: requests parsed field by field, and their outcomes.

use crate::email::Email;
use crate::error::{collect, FieldErrors, NON_FIELD_ERRORS};
use crate::password::{Password, PlainPassword};
use crate::session::{OpaqueToken, SessionId};
use crate::user::{parse_name, User, UserId};

/// A signup body as it came in.
#[derive(Debug, Clone, Default)]
pub struct RawSignup<'a> {
    pub email: &'a str,
    pub password: &'a str,
    pub password2: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
    /// Terms and conditions; when sent it must be true.
    pub tc: Option<bool>,
}

/// A signup that passed every field rule.
#[derive(Debug, Clone)]
pub struct SignupRequest {
    pub email: Email,
    pub password: Password,
    pub first_name: String,
    pub last_name: String,
}

impl SignupRequest {
    pub fn parse(raw: RawSignup<'_>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let email = collect(&mut errors, "email", Email::parse(raw.email));
        let first_name = collect(&mut errors, "first_name", parse_name(raw.first_name.unwrap_or_default()));
        let last_name = collect(&mut errors, "last_name", parse_name(raw.last_name.unwrap_or_default()));
        let personal = [
            raw.email,
            email.as_ref().map_or("", |e| e.local_part()),
            first_name.as_deref().unwrap_or_default(),
            last_name.as_deref().unwrap_or_default(),
        ];
        let password = match Password::parse(raw.password, &personal) {
            Ok(password) => Some(password),
            Err(rules) => {
                errors.add_all("password", &rules);
                None
            }
        };
        if raw.password2.is_some_and(|p2| p2 != raw.password) {
            errors.add(NON_FIELD_ERRORS, "Passwords do not match.");
        }
        if raw.tc == Some(false) {
            errors.add("tc", "You must accept the terms and conditions.");
        }
        match (email, password, first_name, last_name) {
            (Some(email), Some(password), Some(first_name), Some(last_name)) if errors.is_empty() => {
                Ok(Self { email, password, first_name, last_name })
            }
            _ => Err(errors),
        }
    }
}

/// Login credentials that passed the size and syntax checks.
#[derive(Debug, Clone)]
pub struct LoginRequest {
    pub email: Email,
    pub password: PlainPassword,
}

impl LoginRequest {
    pub fn parse(email: &str, password: &str) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let email = collect(&mut errors, "email", Email::parse(email));
        let password = collect(&mut errors, "password", PlainPassword::parse(password));
        match (email, password) {
            (Some(email), Some(password)) => Ok(Self { email, password }),
            _ => Err(errors),
        }
    }
}

/// A token pair handed to a client.
#[derive(Debug, Clone)]
pub struct TokenPair {
    /// The session the pair belongs to (a browser session's CSRF token is bound to it).
    pub session_id: SessionId,
    pub access: OpaqueToken,
    pub refresh: OpaqueToken,
    pub expires_in: u64,
}

/// A logged-in user with their fresh tokens.
#[derive(Debug, Clone)]
pub struct LoginOutcome {
    pub user: User,
    pub tokens: TokenPair,
}

#[derive(Debug)]
pub struct SignupOutcome {
    /// The address as stored (domain lower-cased).
    pub email: Email,
    /// Present when the account may log in at once (verification not required).
    pub login: Option<LoginOutcome>,
}

/// The caller behind a live access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: UserId,
    pub session_id: SessionId,
}
