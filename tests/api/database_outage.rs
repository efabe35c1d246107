//! The database going away gives 503, never a 500, and the service recovers by itself.

use std::sync::Arc;

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

use crate::helpers::{assert_error, database_url, spawn_app_with, Backend, Options};

/// A TCP relay in front of PostgreSQL that the test can cut and restore.
struct Relay {
    port: u16,
    target: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let relay = Self { port, target, tasks: Arc::default() };
        relay.serve(listener).await;
        relay
    }

    async fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target.clone(), self.tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().await.push(pipe);
            }
        });
        self.tasks.lock().await.push(accept);
    }

    /// Closes the listener and every relayed connection.
    async fn cut(&self) {
        for task in self.tasks.lock().await.drain(..) {
            task.abort();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_gives_503_and_recovers() {
    let direct = database_url(Backend::Postgres).await;
    // postgres://user@host:port/db → relay host:port.
    let authority = direct.split('@').nth(1).unwrap().split('/').next().unwrap().to_owned();
    let relay = Relay::start(authority.clone()).await;
    let relayed = direct.replace(&authority, &format!("127.0.0.1:{}", relay.port));
    let app = spawn_app_with(Backend::Postgres, Options { database_url: Some(relayed), ..Options::default() }).await;
    let login = app.verified_login("ada@example.com").await;
    let access = login["access"].as_str().unwrap();

    relay.cut().await;
    let ready = app.client.get(app.url("/health/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["checks"]["database"], "unavailable");
    assert_error(app.get_auth("/api/v1/auth/me", access).await, 503, "service_unavailable").await;
    assert_error(app.login("ada@example.com", "whatever-password").await, 503, "service_unavailable").await;

    relay.restore().await;
    let mut recovered = false;
    for _ in 0..50 {
        if app.client.get(app.url("/health/ready")).send().await.unwrap().status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recovered, "ready again once the database is back");
    assert_eq!(app.get_auth("/api/v1/auth/me", access).await.status(), 200);
}
