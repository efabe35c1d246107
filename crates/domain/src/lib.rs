//! Gatehouse's core: the user and its credential rules, the ports through which
//! the outside world is reached, and the use cases that tie them together.
//!
//! Nothing here performs I/O or names a framework: adapters implement the
//! ports, and the `api` crate wires them at start-up.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod email;
pub mod error;
pub mod import;
pub mod mail;
pub mod mfa;
pub mod outbox;
pub mod password;
pub mod ports;
pub mod session;
pub mod user;

#[cfg(feature = "store-contract")]
pub mod contract;

pub use auth::{AuthPolicy, AuthService};
pub use email::{Email, EmailKey};
pub use error::{FieldErrors, PortError};
pub use password::{Password, PasswordHash, PlainPassword};
pub use session::{ClientInfo, OpaqueToken, ServerKey, SessionId, TokenHash};
pub use user::{Profile, User, UserId};
