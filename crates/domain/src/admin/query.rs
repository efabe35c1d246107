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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const FIELDS: [&str; 7] = ["search", "is_active", "is_verified", "is_staff", "ordering", "page", "page_size"];

    /// A query value: anything, or something near what the list reads.
    fn value() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(prop_oneof![
            "\\PC{0,40}",
            ".{0,8}",
            "[+-]?[0-9]{1,12}",
            Just("true".to_owned()),
            "-?(email|date_joined|last_login)",
        ])
    }

    proptest! {
        /// Whatever the query string holds, the list answers: a page from 1
        /// of 1 to 100 users, or errors naming only the list's own fields.
        #[test]
        fn any_query_is_a_bounded_page_or_errors_on_its_own_fields(
            values in proptest::collection::vec(value(), 7)
        ) {
            let at = |i: usize| values[i].as_deref();
            let raw = RawUserQuery {
                search: at(0), is_active: at(1), is_verified: at(2), is_staff: at(3),
                ordering: at(4), page: at(5), page_size: at(6),
            };
            match UserQuery::parse(raw) {
                Ok(query) => {
                    prop_assert!(query.page >= 1);
                    prop_assert!((1..=MAX_PAGE_SIZE).contains(&query.page_size));
                }
                Err(errors) => {
                    prop_assert!(!errors.is_empty());
                    for (field, _) in errors.iter() {
                        prop_assert!(FIELDS.contains(&field), "{field}");
                    }
                }
            }
        }

        /// A page size is read as given up to the maximum, then as the maximum.
        #[test]
        fn a_page_size_is_capped_not_refused(size in 1u32..=u32::MAX) {
            let text = size.to_string();
            let query = UserQuery::parse(RawUserQuery { page_size: Some(&text), ..RawUserQuery::default() });
            prop_assert_eq!(query.map(|q| q.page_size), Ok(size.min(MAX_PAGE_SIZE)));
        }
    }
}
