//! The OpenAPI document lists every route the service answers, and /docs renders it offline.

use serde_json::{json, Value};

use crate::helpers::{spawn_app, Backend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_registered_route() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.client.get(app.url("/api/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let document: Value = response.json().await.unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    assert!(document["components"]["securitySchemes"]["bearer"].is_object());
    assert!(document["components"]["schemas"]["ErrorResponse"].is_object());
    for (method, path) in gatehouse_api::routes::ROUTES {
        let operation = &document["paths"][path][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {path} is missing from the document");
        assert!(operation["responses"].is_object(), "{method} {path} has no responses");
    }
    let documented: usize =
        document["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum();
    assert_eq!(documented, gatehouse_api::routes::ROUTES.len(), "nothing documented that is not served");
}

/// The answers every operation of a kind can give, and none it cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_lists_the_answers_it_can_give() {
    let app = spawn_app(Backend::Sqlite).await;
    let document: Value = app.client.get(app.url("/api/openapi.json")).send().await.unwrap().json().await.unwrap();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let answers = operation["responses"].as_object().unwrap();
            let has = |status: &str| answers.contains_key(status);
            let route = format!("{method} {path}");
            if operation.get("requestBody").is_some() {
                for status in ["400", "408", "413", "415"] {
                    assert!(has(status), "{route} reads a body: {status}");
                }
            }
            if let Some(security) = operation.get("security") {
                assert!(has("401"), "{route} takes a bearer token: 401");
                let schemes: Vec<&str> = security
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|s| s.as_object().unwrap().keys())
                    .map(|k| k.as_str())
                    .collect();
                assert_eq!(schemes, ["bearer", "cookie"], "{route}: either a bearer token or the access cookie");
                if method != "get" {
                    assert!(has("403"), "{route} by cookie needs its CSRF token: 403");
                    let parameters = operation["parameters"].as_array().unwrap();
                    assert!(parameters.iter().any(|p| p["name"] == "X-CSRF-Token" && p["in"] == "header"), "{route}");
                }
            }
            assert_eq!(has("503"), path.starts_with("/api/v1/") || path == "/health/ready", "{route}: 503");
        }
    }
    for path in ["/api/v1/auth/signup", "/api/v1/auth/email/verify/resend", "/api/v1/auth/password/reset"] {
        assert!(document["paths"][path]["post"]["responses"]["429"].is_object(), "{path} sends mail: 429");
    }
    let page_size = document["paths"]["/api/v1/admin/users"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "page_size")
        .unwrap()
        .clone();
    assert_eq!(page_size["schema"]["minimum"], 1);
    assert_eq!(document["components"]["schemas"]["PageView"]["properties"]["page_size"]["maximum"], 100);
    let cookie = &document["components"]["securitySchemes"]["cookie"];
    assert_eq!((cookie["type"].as_str(), cookie["in"].as_str()), (Some("apiKey"), Some("cookie")));
    assert_eq!(cookie["name"], "__Host-gh_access");
    for body in ["SignupBody", "LoginBody", "RefreshBody"] {
        let transport = &document["components"]["schemas"][body]["properties"]["transport"];
        assert!(transport.is_object(), "{body} takes a transport");
    }
    let transport = &document["components"]["schemas"]["Transport"];
    assert_eq!(transport["enum"], json!(["body", "cookie"]), "{transport}");
    let signup = &document["components"]["schemas"]["SignupBody"]["properties"];
    assert_eq!((signup["password"]["minLength"].clone(), signup["email"]["maxLength"].clone()), (8.into(), 254.into()));
}

/// /docs is an API explorer whose every asset comes from the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explorer_is_served_from_the_binary() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(policy.starts_with("default-src 'none'") && policy.contains("script-src 'self';"), "{policy}");
    let page = response.text().await.unwrap();
    let assets: Vec<&str> =
        page.split(['"', '\'']).filter(|part| part.starts_with("/docs/") || part.contains("://")).collect();
    assert!(assets.len() >= 4, "{page}");
    for asset in assets {
        assert!(asset.starts_with("/docs/"), "{asset}: no outside asset");
        let answer = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{asset}");
    }
    let initializer = app.client.get(app.url("/docs/swagger-initializer.js")).send().await.unwrap();
    assert!(initializer.text().await.unwrap().contains("\"/api/openapi.json\""));
    let missing = app.client.get(app.url("/docs/nothing.js")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.json::<Value>().await.unwrap()["code"], "not_found");
}

/// A real browser runs the explorer under its content policy and renders
/// every operation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_renders_every_operation_in_the_explorer() {
    let app = spawn_app(Backend::Sqlite).await;
    let dom = crate::helpers::render_in_chromium(&app.url("/docs")).await;
    assert!(dom.contains("opblock-summary-path"), "the explorer ran: {}", &dom[..dom.len().min(2000)]);
    for (_, path) in gatehouse_api::routes::ROUTES {
        // The explorer breaks a path before each `/` with a zero-width space.
        let rendered = path.replace('/', "\u{200b}/");
        assert!(dom.contains(path) || dom.contains(&rendered), "{path} rendered");
    }
}
