//! The user list's query: filters, search, ordering and paging, parsed from the query string.

use crate::error::{collect, FieldErrors};
use crate::user::{single_line, User};

/// Fields the user list may be ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserOrderField {
    Email,
    DateJoined,
    LastLogin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserOrdering {
    pub field: UserOrderField,
    pub descending: bool,
}

impl UserOrdering {
    /// `email`, `date_joined` or `last_login`, with `-` for descending.
    pub fn parse(raw: &str) -> Option<Self> {
        let (descending, name) = raw.strip_prefix('-').map_or((false, raw), |rest| (true, rest));
        let field = match name {
            "email" => UserOrderField::Email,
            "date_joined" => UserOrderField::DateJoined,
            "last_login" => UserOrderField::LastLogin,
            _ => return None,
        };
        Some(Self { field, descending })
    }
}

impl Default for UserOrdering {
    fn default() -> Self {
        Self { field: UserOrderField::DateJoined, descending: true }
    }
}

pub const DEFAULT_PAGE_SIZE: u32 = 20;
pub const MAX_PAGE_SIZE: u32 = 100;

/// One page of the user list, filtered and ordered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    /// Case-insensitive substring of email, first or last name; `%` and `_` are literal.
    pub search: Option<String>,
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_staff: Option<bool>,
    pub ordering: UserOrdering,
    /// From 1.
    pub page: u32,
    pub page_size: u32,
}

impl Default for UserQuery {
    fn default() -> Self {
        Self {
            search: None,
            is_active: None,
            is_verified: None,
            is_staff: None,
            ordering: UserOrdering::default(),
            page: 1,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl UserQuery {
    pub fn offset(&self) -> i64 {
        i64::from(self.page.saturating_sub(1)) * i64::from(self.page_size)
    }
}

/// Raw query-string values, before the list rules are applied.
#[derive(Debug, Clone, Default)]
pub struct RawUserQuery<'a> {
    pub search: Option<&'a str>,
    pub is_active: Option<&'a str>,
    pub is_verified: Option<&'a str>,
    pub is_staff: Option<&'a str>,
    pub ordering: Option<&'a str>,
    pub page: Option<&'a str>,
    pub page_size: Option<&'a str>,
}

fn parse_flag(errors: &mut FieldErrors, field: &str, raw: Option<&str>) -> Option<bool> {
    match raw? {
        "true" => Some(true),
        "false" => Some(false),
        _ => {
            errors.add(field, "Must be true or false.");
            None
        }
    }
}

/// A page number or size: absent is the default, anything but a whole number from 1 up is an error.
pub(crate) fn parse_positive(errors: &mut FieldErrors, field: &str, raw: Option<&str>, default: u32) -> u32 {
    match raw.map(str::parse::<u32>) {
        None => default,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            errors.add(field, "Must be a whole number of at least 1.");
            default
        }
    }
}

impl UserQuery {
    /// Applies the list rules; a page size over the maximum is capped, not refused.
    pub fn parse(raw: RawUserQuery<'_>) -> Result<Self, FieldErrors> {
        let mut errors = FieldErrors::new();
        let ordering = match raw.ordering.filter(|o| !o.is_empty()) {
            None => UserOrdering::default(),
            Some(o) => UserOrdering::parse(o).unwrap_or_else(|| {
                errors.add("ordering", "Order by email, date_joined or last_login, with - for descending.");
                UserOrdering::default()
            }),
        };
        let query = Self {
            search: raw.search.map(str::trim).filter(|s| !s.is_empty()).and_then(|s| {
                let parsed = single_line(s, usize::MAX);
                collect(&mut errors, "search", parsed)
            }),
            is_active: parse_flag(&mut errors, "is_active", raw.is_active),
            is_verified: parse_flag(&mut errors, "is_verified", raw.is_verified),
            is_staff: parse_flag(&mut errors, "is_staff", raw.is_staff),
            ordering,
            page: parse_positive(&mut errors, "page", raw.page, 1),
            page_size: parse_positive(&mut errors, "page_size", raw.page_size, DEFAULT_PAGE_SIZE).min(MAX_PAGE_SIZE),
        };
        errors.finish(query)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPage {
    /// Matches over all pages.
    pub count: i64,
    pub results: Vec<User>,
}
