//! SIGTERM while requests are in flight: every one of them is answered, then the process exits cleanly.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_load_drops_no_in_flight_request() {
    let dir = std::env::temp_dir().join(format!("gatehouse-shutdown-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = Command::new(env!("CARGO_BIN_EXE_gatehouse"))
        .arg("serve")
        .current_dir(&dir)
        .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_JWT_SECRET", crate::helpers::JWT_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the gatehouse binary runs");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    while client.get(format!("{base}/health/live")).send().await.is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "the server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Failed logins each cost a full argon2 verification: a queue of real work.
    let requests: Vec<_> = (0..80)
        .map(|n| {
            let request = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({ "email": format!("load{n}@example.com"), "password": "not a real password" }));
            tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status().unwrap();
    assert!(killed.success());

    for request in requests {
        let status = request.await.unwrap().expect("an in-flight request was dropped");
        assert_eq!(status, 401);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(status) = server.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the server did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "clean exit: {exit:?}");
    assert!(client.get(format!("{base}/health/live")).send().await.is_err(), "no longer listening");
    let _ = std::fs::remove_dir_all(&dir);
}
