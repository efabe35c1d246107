//! The OpenAPI document lists every route the service answers, and /docs renders it offline.

use serde_json::Value;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_is_self_contained() {
    let app = spawn_app(Backend::Sqlite).await;
    let response = app.client.get(app.url("/docs")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = response.text().await.unwrap();
    for (_, path) in gatehouse_api::routes::ROUTES {
        assert!(page.contains(path), "{path} on the page");
    }
    assert!(!page.contains("<script") && !page.contains("http://") && !page.contains("https://"), "no outside asset");
}
