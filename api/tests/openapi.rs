//! The OpenAPI document describes exactly the routes the router serves.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use common::domain::Role;
use support::TestApi;

/// `/api/users/{id}` as the document writes it: with the original's trailing slash (but not
/// after a file name, as the docs page's script).
fn documented(path: &str) -> String {
    if path.starts_with("/api/") && !path.ends_with(".js") {
        format!("{path}/")
    } else {
        path.to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_lists_every_route_with_its_schemas_and_nothing_else() {
    let api = TestApi::start().await;
    let (_, admin) = api.user_with_token("admin", Role::Admin).await;

    let resp = api.call("GET", "/api/schema/", None, None).await;
    assert_eq!(resp.status, StatusCode::OK);
    let doc = resp.json;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();

    for (method, path) in api::routes::ROUTES {
        let operation = &paths
            .get(&documented(path))
            .unwrap_or_else(|| panic!("{path} is not in the document"))[method.to_lowercase()];
        assert!(
            operation.is_object(),
            "{method} {path} is not in the document"
        );
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| !r.is_empty()),
            "{method} {path} has no responses"
        );
        if matches!(*method, "POST" | "PATCH" | "PUT") {
            assert!(
                operation["requestBody"]["content"]["application/json"]["schema"].is_object(),
                "{method} {path} has no request schema"
            );
        }
        if path.starts_with("/api/")
            && !path.starts_with("/api/auth")
            && !path.starts_with("/api/schema")
            && !path.starts_with("/api/docs")
        {
            assert!(
                operation["security"].is_array(),
                "{method} {path} does not say it needs a token"
            );
        }

        // The router serves this path (another method is 405, not 404) and this method
        // (anonymously: 401 for a protected route, never the 404 of an unknown path).
        let concrete = path.replace("{id}", "999999");
        let other = api.call("TRACE", &concrete, Some(&admin), None).await;
        assert_eq!(
            other.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "TRACE {concrete}: {}",
            other.text
        );
        let this = api.call(method, &concrete, None, None).await;
        assert!(
            this.status != StatusCode::METHOD_NOT_ALLOWED && this.status != StatusCode::NOT_FOUND,
            "{method} {concrete}: {}",
            this.status
        );
    }

    let served: std::collections::HashSet<(String, String)> = api::routes::ROUTES
        .iter()
        .map(|(m, p)| (m.to_lowercase(), documented(p)))
        .collect();
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            assert!(
                served.contains(&(method.clone(), path.clone())),
                "{method} {path} is documented but not served"
            );
        }
    }
    // Response schemas name the wire shapes.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in [
        "Alert",
        "Event",
        "User",
        "NewEvent",
        "StatusChange",
        "TokenPair",
    ] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    let alert = &schemas["Alert"]["properties"];
    for field in [
        "id",
        "event_id",
        "eventType",
        "severity",
        "status",
        "created_at",
    ] {
        assert!(alert.get(field).is_some(), "Alert.{field} missing");
    }

    let docs = api.call("GET", "/api/docs/", None, None).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(
        docs.text.contains("<html") || docs.text.contains("<!doctype html"),
        "an HTML page"
    );
}

/// What each operation can answer is declared, with DRF's error bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_declares_its_error_statuses_with_their_bodies() {
    let api = TestApi::start().await;
    let doc = api.call("GET", "/api/schema/", None, None).await.json;
    for (method, path) in api::routes::ROUTES {
        let operation = &doc["paths"][documented(path)][method.to_lowercase()];
        let responses = operation["responses"].as_object().unwrap();
        let declares = |status: &str| responses.contains_key(status);
        let what = format!("{method} {path}");
        if operation["security"].is_array() {
            assert!(declares("401"), "{what}: 401");
            assert!(declares("503"), "{what}: 503 (the database)");
        }
        if operation["requestBody"].is_object() {
            for status in ["400", "413", "415"] {
                assert!(declares(status), "{what}: {status}");
            }
        }
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if parameters.iter().any(|p| p["name"] == "page") {
            assert!(declares("400"), "{what}: 400 for a bad page");
            assert!(declares("404"), "{what}: 404 for a page past the end");
        }
        for (status, response) in responses {
            assert!(
                !response["description"].as_str().unwrap_or("").is_empty(),
                "{what}: {status} has no description"
            );
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]["application/json"]["schema"].is_object(),
                    "{what}: {status} has no body schema"
                );
            }
        }
    }
    assert!(
        doc["paths"]["/api/auth/login/"]["post"]["responses"]
            .get("429")
            .is_some()
    );
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Detail"]["required"], serde_json::json!(["detail"]));
    assert!(schemas["FieldErrors"]["additionalProperties"].is_object());
}

/// The docs page and its script come from the api itself, with types and cache headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_and_its_script_are_served_by_the_api() {
    let api = TestApi::start().await;
    let page = api.call("GET", "/api/docs/", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(page.headers["cache-control"], "no-cache");
    assert!(page.text.contains(api::openapi::DOCS_SCRIPT_PATH));
    assert!(!page.text.contains("https://"), "nothing from elsewhere");

    let script = api
        .call("GET", api::openapi::DOCS_SCRIPT_PATH, None, None)
        .await;
    assert_eq!(script.status, StatusCode::OK);
    assert_eq!(
        script.headers["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(script.headers["cache-control"], "public, max-age=86400");
    // The embedded bundle is the pinned release that the ETag names.
    let version = format!(" ReDoc Version: \",\"{}\"", api::openapi::REDOC_VERSION);
    assert!(script.text.contains(&version), "the bundle is {version}");
    let etag = script.headers["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, format!("\"redoc-{}\"", api::openapi::REDOC_VERSION));

    let request = axum::http::Request::builder()
        .uri(api::openapi::DOCS_SCRIPT_PATH)
        .header("if-none-match", &etag)
        .body(axum::body::Body::empty())
        .unwrap();
    let cached = api.send(request).await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.text.is_empty());
}
