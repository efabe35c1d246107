//! Each persistence port of the domain, implemented once on [`crate::SqlStore`].

mod accounts;
mod admin;
mod audit;
mod import;
mod mfa;
mod outbox;
mod sessions;
