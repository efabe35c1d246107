//! Gatehouse's HTTP API on actix-web: request and response mapping,
//! configuration, and the start-up wiring of the adapters.

pub mod body;
pub mod cli;
pub mod config;
pub mod console;
pub mod cookies;
pub mod error;
pub mod extract;
pub mod metrics;
pub mod openapi;
pub mod request_id;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod views;
pub mod wire;

pub use config::Settings;
pub use startup::Application;
