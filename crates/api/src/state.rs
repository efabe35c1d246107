//! What every handler can reach.

use std::sync::Arc;

use gatehouse_domain::admin::AdminService;
use gatehouse_domain::ports::StoreHealth;
use gatehouse_domain::AuthService;

/// Shared by all workers; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub auth: AuthService,
    pub admin: AdminService,
    pub health: Arc<dyn StoreHealth>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("auth", &self.auth).finish_non_exhaustive()
    }
}
