//! Each persistence port of the domain, implemented once on [`crate::SqlStore`].

mod accounts;
mod admin;
mod audit;
mod import;
mod outbox;
mod sessions;
