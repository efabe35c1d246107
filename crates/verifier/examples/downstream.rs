//! A downstream service that trusts Gatehouse's access tokens: `GET /orders`
//! for any signed-in caller (checked with the published keys alone), and
//! `POST /payments` only for a session Gatehouse still knows (strict).
//!
//! Run Gatehouse with `GATEHOUSE__JWT__ALGORITHM=EdDSA make run`, then
//! `cargo run -p gatehouse-verifier --features actix --example downstream`
//! and call `http://127.0.0.1:8081/orders` with a login's access token.

use actix_web::{get, post, web, App, HttpServer, Responder};
use gatehouse_verifier::actix::{Authenticated, StrictlyAuthenticated};
use gatehouse_verifier::{Verifier, VerifierConfig};
use serde_json::json;

#[get("/orders")]
async fn orders(caller: Authenticated) -> impl Responder {
    web::Json(json!({ "user": caller.sub, "session": caller.sid, "orders": [] }))
}

/// Moving money: a token of a session revoked a second ago must not pass.
#[post("/payments")]
async fn pay(caller: StrictlyAuthenticated) -> impl Responder {
    web::Json(json!({ "paid_by": caller.sub }))
}

/// The service's routes (its tests mount them too).
pub fn routes(config: &mut web::ServiceConfig) {
    config.service(orders).service(pay);
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let gatehouse = std::env::var("GATEHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into());
    let verifier = Verifier::new(VerifierConfig::new(gatehouse)).map_err(std::io::Error::other)?;
    HttpServer::new(move || App::new().app_data(verifier.clone()).configure(routes))
        .bind(("127.0.0.1", 8081))?
        .run()
        .await
}
