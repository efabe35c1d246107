//! Errors shared by every use case: field validation and port failures.

use std::collections::BTreeMap;

/// The boxed source of an unexpected failure, kept for the logs only.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A port could not do its work. Adapters translate their own errors into this
/// before crossing the port, so no driver type ever reaches a use case.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The backing service is down or saturated; the caller may retry later.
    #[error("a backing service is unavailable")]
    Unavailable(#[source] BoxError),
    /// Anything else: a bug or a broken invariant.
    #[error("unexpected failure in a port")]
    Unexpected(#[source] BoxError),
}

impl PortError {
    pub fn unexpected(source: impl Into<BoxError>) -> Self {
        Self::Unexpected(source.into())
    }

    pub fn unavailable(source: impl Into<BoxError>) -> Self {
        Self::Unavailable(source.into())
    }

    /// When a saturated port says a retry may succeed, after how many seconds.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::Unavailable(source) => source.downcast_ref::<Overloaded>().map(|overloaded| overloaded.retry_after),
            Self::Unexpected(_) => None,
        }
    }
}

/// The source of a [`PortError::Unavailable`] from a port that is saturated
/// rather than down: a retry after `retry_after` seconds may succeed.
#[derive(Debug, thiserror::Error)]
#[error("{what}; retry in {retry_after} s")]
pub struct Overloaded {
    pub what: &'static str,
    pub retry_after: u64,
}

/// Human messages per request field (`non_field_errors` for the whole body),
/// in the order they were found. Dotted keys name nested fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<String, Vec<String>>);

/// The key for errors that belong to no single field.
pub const NON_FIELD_ERRORS: &str = "non_field_errors";

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: &str, message: impl Into<String>) -> Self {
        let mut errors = Self::new();
        errors.add(field, message);
        errors
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.entry(field.to_owned()).or_default().push(message.into());
    }

    /// Every rule a field broke (a password's, say), each as its message.
    pub fn add_all(&mut self, field: &str, rules: &[impl std::fmt::Display]) {
        rules.iter().for_each(|rule| self.add(field, rule.to_string()));
    }

    pub fn broken(field: &str, rules: &[impl std::fmt::Display]) -> Self {
        let mut errors = Self::new();
        errors.add_all(field, rules);
        errors
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn merge(&mut self, other: FieldErrors) {
        for (field, messages) in other.0 {
            self.0.entry(field).or_default().extend(messages);
        }
    }

    /// `Ok(value)` when no error was recorded, so parsing can end with `errors.finish(value)`.
    pub fn finish<T>(self, value: T) -> Result<T, FieldErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    pub fn into_map(self) -> BTreeMap<String, Vec<String>> {
        self.0
    }
}

/// Records the error of a parse under `field` and yields the value if it parsed.
pub fn collect<T, E: std::fmt::Display>(errors: &mut FieldErrors, field: &str, result: Result<T, E>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(error) => {
            errors.add(field, error.to_string());
            None
        }
    }
}
