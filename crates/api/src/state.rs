//! What every handler can reach.

use std::sync::Arc;

use gatehouse_domain::admin::AdminService;
use gatehouse_domain::ports::{Outbox, StoreHealth};
use gatehouse_hash_argon2::Argon2Hasher;
use gatehouse_token_jwt::JwtAccessTokens;

use crate::cookies::BrowserCookies;
use crate::startup::PoolGauge;
use gatehouse_domain::AuthService;

/// Shared by all workers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthService,
    pub admin: AdminService,
    pub health: Arc<dyn StoreHealth>,
    pub outbox: Arc<dyn Outbox>,
    /// The hash pool, for its queue length.
    pub hash_queue: Arc<Argon2Hasher>,
    /// The signing keys, for the published JWK Set.
    pub tokens: Arc<JwtAccessTokens>,
    pub pool: PoolGauge,
    /// The cookies of browser sessions, and who may use them.
    pub browser: BrowserCookies,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("auth", &self.auth).finish_non_exhaustive()
    }
}
