//! Who may do what: every endpoint for every kind of caller, tampered tokens, deactivation
//! and demotion taking effect at once, and failed-login limits.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use axum::http::StatusCode;
use common::domain::Role;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use support::TestApi;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anonymous,
    Analyst,
    Admin,
    Deactivated,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Allowed {
    Anyone,
    AnyUser,
    AdminOnly,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_each_kind_of_caller_as_the_brief_says() {
    let api = TestApi::start().await;
    let (_, analyst) = api.user_with_token("analyst", Role::Analyst).await;
    let (_, admin) = api.user_with_token("admin", Role::Admin).await;
    let (gone, gone_token) = api.user_with_token("leaver", Role::Admin).await;
    let target = api.create_user("target", Role::Analyst).await;
    let deactivate = common::storage::UserChanges {
        is_active: Some(false),
        ..Default::default()
    };
    api.state
        .storage
        .update_user(gone.id, &deactivate, chrono::Utc::now())
        .await
        .unwrap();
    // One event with its alert, to address by id.
    let alert = api.stored_alert("e1").await;
    let (event_id, alert_id, user_id) = (alert.event_id, alert.id, target.id);

    let new_event = json!({"sourceName": "fw", "eventType": "x", "severity": "LOW"});
    let table: Vec<(&str, String, Option<Value>, Allowed, StatusCode)> = vec![
        (
            "GET",
            "/api/events/".into(),
            None,
            Allowed::AdminOnly,
            StatusCode::OK,
        ),
        (
            "POST",
            "/api/events/".into(),
            Some(new_event),
            Allowed::AdminOnly,
            StatusCode::ACCEPTED,
        ),
        (
            "GET",
            format!("/api/events/{event_id}/"),
            None,
            Allowed::AdminOnly,
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/alerts/".into(),
            None,
            Allowed::AnyUser,
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/alerts".into(),
            None,
            Allowed::AnyUser,
            StatusCode::OK,
        ),
        (
            "GET",
            format!("/api/alerts/{alert_id}/"),
            None,
            Allowed::AnyUser,
            StatusCode::OK,
        ),
        (
            "GET",
            format!("/api/alerts/{alert_id}/history/"),
            None,
            Allowed::AnyUser,
            StatusCode::OK,
        ),
        (
            "PATCH",
            format!("/api/alerts/{alert_id}/"),
            Some(json!({"status": "ACKNOWLEDGED"})),
            Allowed::AdminOnly,
            StatusCode::OK,
        ),
        (
            "PUT",
            format!("/api/alerts/{alert_id}/"),
            Some(json!({"status": "OPEN"})),
            Allowed::AdminOnly,
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/users/".into(),
            None,
            Allowed::AdminOnly,
            StatusCode::OK,
        ),
        (
            "POST",
            "/api/users/".into(),
            Some(
                json!({"username": "new", "email": "n@example.com", "password": "a long password", "role": "ANALYST"}),
            ),
            Allowed::AdminOnly,
            StatusCode::CREATED,
        ),
        (
            "GET",
            format!("/api/users/{user_id}/"),
            None,
            Allowed::AdminOnly,
            StatusCode::OK,
        ),
        (
            "PATCH",
            format!("/api/users/{user_id}/"),
            Some(json!({"email": "t@example.com"})),
            Allowed::AdminOnly,
            StatusCode::OK,
        ),
        (
            "DELETE",
            format!("/api/users/{user_id}/"),
            None,
            Allowed::AdminOnly,
            StatusCode::NO_CONTENT,
        ),
        (
            "GET",
            "/api/schema/".into(),
            None,
            Allowed::Anyone,
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/docs/".into(),
            None,
            Allowed::Anyone,
            StatusCode::OK,
        ),
        (
            "GET",
            "/healthz".into(),
            None,
            Allowed::Anyone,
            StatusCode::OK,
        ),
        (
            "GET",
            "/readyz".into(),
            None,
            Allowed::Anyone,
            StatusCode::OK,
        ),
    ];

    let mut created = 0;
    for caller in [
        Caller::Anonymous,
        Caller::Analyst,
        Caller::Deactivated,
        Caller::Admin,
    ] {
        let token = match caller {
            Caller::Anonymous => None,
            Caller::Analyst => Some(analyst.as_str()),
            Caller::Admin => Some(admin.as_str()),
            Caller::Deactivated => Some(gone_token.as_str()),
        };
        for (method, path, body, allowed, success) in &table {
            let mut body = body.clone();
            // Each admin POST of a user needs a fresh username.
            if let Some(Value::Object(map)) = &mut body
                && map.contains_key("username")
            {
                created += 1;
                map.insert("username".into(), json!(format!("new{created}")));
            }
            let resp = api.call(method, path, token, body).await;
            let expected = match (allowed, caller) {
                (Allowed::Anyone, _) => *success,
                (_, Caller::Anonymous | Caller::Deactivated) => StatusCode::UNAUTHORIZED,
                (Allowed::AdminOnly, Caller::Analyst) => StatusCode::FORBIDDEN,
                _ => *success,
            };
            assert_eq!(
                resp.status, expected,
                "{method} {path} as {caller:?}: {}",
                resp.text
            );
            if expected == StatusCode::UNAUTHORIZED {
                assert!(resp.json["detail"].is_string(), "{}", resp.text);
            }
            if caller == Caller::Anonymous && expected == StatusCode::UNAUTHORIZED {
                assert_eq!(
                    resp.json["detail"],
                    "Authentication credentials were not provided."
                );
                assert_eq!(resp.headers["www-authenticate"], "Bearer realm=\"api\"");
            }
            if expected == StatusCode::FORBIDDEN {
                assert_eq!(
                    resp.json["detail"],
                    "You do not have permission to perform this action."
                );
            }
        }
    }
}

fn forge(claims: &Value, key: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    // URL-safe base64 without padding, as JWT segments are.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_expired_revoked_and_wrong_type_tokens_are_refused() {
    let api = TestApi::start().await;
    let (admin, access) = api.user_with_token("admin", Role::Admin).await;
    let (_, refresh) = api.login("admin").await;
    let now = chrono::Utc::now().timestamp();
    let claims = |token_type: &str, exp: i64| {
        json!({"token_type": token_type, "exp": exp, "iat": now - 10, "jti": "j1",
               "user_id": admin.id, "sub": admin.id.to_string(), "username": "admin", "role": "ADMIN"})
    };

    // Sanity: a token made the same way with the right key works, so each refusal below is
    // for the reason named.
    let genuine = forge(&claims("access", now + 600), support::TEST_SECRET_KEY);
    assert_eq!(
        api.call("GET", "/api/alerts/", Some(&genuine), None)
            .await
            .status,
        StatusCode::OK
    );

    let mut parts: Vec<String> = access.split('.').map(str::to_owned).collect();
    parts[2] = b64(b"not the signature at all, not at all");
    let forged_signature = parts.join(".");
    let alg_none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims("access", now + 600).to_string().as_bytes())
    );
    let other_key = forge(
        &claims("access", now + 600),
        "another-key-that-is-also-thirty-two-bytes",
    );
    let expired = forge(&claims("access", now - 1), support::TEST_SECRET_KEY);
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &claims("access", now + 600),
        &EncodingKey::from_secret(support::TEST_SECRET_KEY.as_bytes()),
    )
    .unwrap();

    for (name, token) in [
        ("forged signature", forged_signature.as_str()),
        ("alg none", alg_none.as_str()),
        ("another key", other_key.as_str()),
        ("expired", expired.as_str()),
        ("another algorithm", hs512.as_str()),
        ("refresh token as bearer", refresh.as_str()),
        ("garbage", "abc.def.ghi"),
    ] {
        let resp = api.call("GET", "/api/alerts/", Some(token), None).await;
        assert_eq!(
            resp.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            resp.text
        );
        assert_eq!(resp.json["code"], "token_not_valid", "{name}");
        assert_eq!(
            resp.json["detail"],
            "Given token not valid for any token type"
        );
    }

    // An access token at refresh is refused; the refresh token works until revoked.
    let resp = api
        .call(
            "POST",
            "/api/auth/refresh/",
            None,
            Some(json!({"refresh": access})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = api
        .call(
            "POST",
            "/api/auth/refresh/",
            None,
            Some(json!({"refresh": refresh})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let fresh = resp.json["access"].as_str().unwrap().to_owned();
    assert_eq!(
        api.call("GET", "/api/alerts/", Some(&fresh), None)
            .await
            .status,
        StatusCode::OK
    );
    let resp = api
        .call(
            "POST",
            "/api/auth/logout/",
            None,
            Some(json!({"refresh": refresh})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text);
    let resp = api
        .call(
            "POST",
            "/api/auth/refresh/",
            None,
            Some(json!({"refresh": refresh})),
        )
        .await;
    assert_eq!(
        resp.status,
        StatusCode::UNAUTHORIZED,
        "a revoked refresh token: {}",
        resp.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deactivated_user_is_refused_at_once_and_a_demoted_admin_loses_admin_rights_at_once() {
    let api = TestApi::start().await;
    let (_, boss) = api.user_with_token("boss", Role::Admin).await;
    let (alice, alice_token) = api.user_with_token("alice", Role::Analyst).await;
    let (bob, bob_token) = api.user_with_token("bob", Role::Admin).await;
    assert_eq!(
        api.call("GET", "/api/alerts/", Some(&alice_token), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        api.call("GET", "/api/users/", Some(&bob_token), None)
            .await
            .status,
        StatusCode::OK
    );

    let resp = api
        .call(
            "DELETE",
            &format!("/api/users/{}/", alice.id),
            Some(&boss),
            None,
        )
        .await;
    assert_eq!(resp.status, StatusCode::NO_CONTENT);
    let resp = api
        .call(
            "PATCH",
            &format!("/api/users/{}/", bob.id),
            Some(&boss),
            Some(json!({"role": "ANALYST"})),
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.json["role"], "ANALYST");

    let resp = api
        .call("GET", "/api/alerts/", Some(&alice_token), None)
        .await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "{}", resp.text);
    let resp = api.call("GET", "/api/users/", Some(&bob_token), None).await;
    assert_eq!(resp.status, StatusCode::FORBIDDEN, "{}", resp.text);
    assert_eq!(
        api.call("GET", "/api/alerts/", Some(&bob_token), None)
            .await
            .status,
        StatusCode::OK
    );
    // And the deactivated user cannot log in again.
    let body = json!({"username": "alice", "password": TestApi::password_of("alice")});
    let resp = api.call("POST", "/api/auth/login/", None, Some(body)).await;
    assert_eq!(resp.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.json["detail"],
        "No active account found with the given credentials"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eleventh_failed_login_is_throttled_even_with_the_right_password_but_not_elsewhere() {
    let api = TestApi::start().await;
    api.create_user("carol", Role::Analyst).await;
    let wrong = json!({"username": "carol", "password": "wrong password"});
    let right = json!({"username": "carol", "password": TestApi::password_of("carol")});
    let attacker = "198.51.100.7:5555";

    for attempt in 1..=10 {
        let resp = api
            .call_from(attacker, "POST", "/api/auth/login/", wrong.clone())
            .await;
        assert_eq!(resp.status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    let resp = api
        .call_from(attacker, "POST", "/api/auth/login/", wrong.clone())
        .await;
    assert_eq!(resp.status, StatusCode::TOO_MANY_REQUESTS, "{}", resp.text);
    let retry_after: u64 = resp.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 900, "{retry_after}");
    assert!(
        resp.json["detail"]
            .as_str()
            .unwrap()
            .starts_with("Request was throttled.")
    );

    let resp = api
        .call_from(attacker, "POST", "/api/auth/login/", right.clone())
        .await;
    assert_eq!(
        resp.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the right password is refused too"
    );
    let resp = api
        .call_from("203.0.113.5:6000", "POST", "/api/auth/login/", right)
        .await;
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "another address is unaffected: {}",
        resp.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_user_and_a_wrong_password_get_the_same_answer() {
    let api = TestApi::start().await;
    api.create_user("dave", Role::Analyst).await;
    let unknown = api
        .call(
            "POST",
            "/api/auth/login/",
            None,
            Some(json!({"username": "nobody", "password": "whatever1"})),
        )
        .await;
    let wrong = api
        .call(
            "POST",
            "/api/auth/login/",
            None,
            Some(json!({"username": "dave", "password": "whatever1"})),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!((unknown.status, &unknown.json), (wrong.status, &wrong.json));
    let missing = api
        .call(
            "POST",
            "/api/auth/login/",
            None,
            Some(json!({"username": "dave"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        missing.json,
        json!({"password": ["This field is required."]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_lock_themselves_out() {
    let api = TestApi::start().await;
    let (me, token) = api.user_with_token("solo", Role::Admin).await;
    let path = format!("/api/users/{}/", me.id);
    for (method, body) in [
        ("DELETE", None),
        ("PATCH", Some(json!({"is_active": false}))),
        ("PATCH", Some(json!({"role": "ANALYST"}))),
    ] {
        let resp = api.call(method, &path, Some(&token), body).await;
        assert_eq!(
            resp.status,
            StatusCode::BAD_REQUEST,
            "{method}: {}",
            resp.text
        );
        assert!(resp.json["non_field_errors"].is_array());
    }
    assert_eq!(
        api.call("GET", "/api/users/", Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
}
