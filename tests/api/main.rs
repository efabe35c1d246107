//! Black-box tests of the whole service over HTTP, on both stores, with a
//! real SMTP server on loopback.

// Test code throughout: a failed unwrap is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod account_flow;
mod admin;
mod admin_groups;
mod admin_users;
mod audit;
mod bad_input;
mod browser;
mod browser_session;
mod console;
mod console_browser;
mod cookies;
mod credentials;
mod database_outage;
mod docs;
mod dotenv;
mod downstream;
mod email_change;
mod hardening;
mod import_django;
mod logs;
mod metrics;
mod mfa;
mod overload;
mod reset;
mod sessions;
mod shutdown;
mod signing_keys;
mod throttling;
