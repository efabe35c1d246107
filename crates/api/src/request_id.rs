//! A request id per request: generated at the edge, returned as
//! `X-Request-Id`, attached to the request's log span, and reachable from the
//! error mapping so a 500's body can carry it. The same middleware records
//! the request's metrics, and lets the hashes it asks for know when its
//! client has gone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use async_trait::async_trait;
use gatehouse_domain::error::Overloaded;
use gatehouse_domain::ports::{PasswordCheck, PasswordHasher};
use gatehouse_domain::{PasswordHash, PlainPassword, PortError};
use gatehouse_hash_argon2::Argon2Hasher;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

use crate::metrics::METRICS;
use crate::wire::HangUp;

pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

tokio::task_local! {
    static REQUEST_ID: String;
    static CLIENT: Option<Arc<HangUp>>;
}

/// Request ids are a random per-process base plus a counter: unique, and
/// with no call into the OS random source on every request. They only
/// correlate log lines, so they need not be unpredictable.
static ID_BASE: LazyLock<u128> = LazyLock::new(|| uuid::Uuid::new_v4().as_u128());
static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

fn next_id() -> String {
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    uuid::Uuid::from_u128(ID_BASE.wrapping_add(u128::from(n))).simple().to_string()
}

/// The id of the request being handled, if any.
pub fn current() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let id = next_id();
    let span = tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.path());
    let started = std::time::Instant::now();
    let client = req.request().conn_data::<Arc<HangUp>>().cloned();
    let handled = CLIENT.scope(client, REQUEST_ID.scope(id.clone(), next.call(req)));
    // A hash's queue deadline counts from here, what the request waited before asking included.
    let handled = gatehouse_hash_argon2::arrived_at(started, handled);
    let mut response = handled.instrument(span.clone()).await?;
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    // The route template, never the raw path: ids stay out of the label set.
    let route = response.request().match_pattern().unwrap_or_else(|| "unmatched".into());
    METRICS.observe_request(&route, response.request().method().as_str(), status, elapsed);
    span.in_scope(|| tracing::info!(status, elapsed_ms = elapsed.as_secs_f64() * 1000.0, "request finished"));
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, value);
    }
    Ok(response)
}

/// The password hasher as the use cases see it: a hash whose client hangs
/// up is not waited for.
#[derive(Debug, Clone)]
pub struct RequestAwareHasher(pub Arc<Argon2Hasher>);

/// Waits for `work` unless the client hangs up first: then `work` is
/// dropped, and a hash still queued is never started (see `Argon2Hasher`'s
/// `client_gone` refusals).
async fn hashing<T>(work: impl std::future::Future<Output = Result<T, PortError>>) -> Result<T, PortError> {
    let Some(client) = CLIENT.try_with(Clone::clone).ok().flatten() else { return work.await };
    tokio::select! {
        biased;
        done = work => done,
        // Nobody reads this answer; as "overloaded" it is counted, not logged as an outage.
        () = client.wait() => Err(PortError::unavailable(Overloaded { what: "the client hung up", retry_after: 1 })),
    }
}

#[async_trait]
impl PasswordHasher for RequestAwareHasher {
    async fn hash(&self, password: &PlainPassword) -> Result<PasswordHash, PortError> {
        hashing(self.0.hash(password)).await
    }

    async fn verify(&self, password: &PlainPassword, hash: &PasswordHash) -> Result<PasswordCheck, PortError> {
        hashing(self.0.verify(password, hash)).await
    }

    async fn verify_dummy(&self, password: &PlainPassword) -> Result<(), PortError> {
        hashing(self.0.verify_dummy(password)).await
    }

    fn check_format(&self, hash: &PasswordHash) -> Result<(), String> {
        self.0.check_format(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_distinct_32_hex_digits() {
        let ids: Vec<String> = (0..1000).map(|_| next_id()).collect();
        assert!(ids.iter().all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())));
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
    }
}
