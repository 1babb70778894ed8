//! The api, built for real over a private nats-server and a fresh database, driven through
//! its router as a client would (`tower::ServiceExt::oneshot`), with steps named as a
//! user would say them.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;

use api::settings::Settings;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request, StatusCode, header};
use clap::Parser;
use common::domain::{Role, User};
use common::storage::NewUser;
use http_body_util::BodyExt;
use serde_json::Value;
use testkit::{NatsServer, TestDb};
use tower::ServiceExt;
use tower_http::normalize_path::NormalizePath;

/// A key long enough for HS256, used only by tests.
pub const TEST_SECRET_KEY: &str = "test-secret-key-of-at-least-thirty-two-bytes";
/// Where requests come from unless a test says otherwise.
pub const CLIENT: &str = "192.0.2.10:40000";

#[derive(Parser)]
#[command(args_override_self = true)]
struct Args {
    #[command(flatten)]
    settings: Settings,
}

/// Settings for an api over `nats` and `db`, with extra flags.
pub fn settings(nats: &NatsServer, db: &TestDb, extra: &[&str]) -> Settings {
    let mut args = vec![
        "api".to_owned(),
        "--nats-url".into(),
        nats.url(),
        "--database-url".into(),
        db.url().to_owned(),
        "--secret-key".into(),
        TEST_SECRET_KEY.into(),
        "--api-addr".into(),
        "127.0.0.1:0".into(),
    ];
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    Args::try_parse_from(args).expect("api settings").settings
}

/// A response, with its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub text: String,
}

/// An api under test.
pub struct TestApi {
    pub nats: NatsServer,
    pub db: TestDb,
    pub state: api::State,
    app: NormalizePath<Router>,
}

impl TestApi {
    /// A fresh api with default settings.
    pub async fn start() -> TestApi {
        Self::start_with(&[]).await
    }

    /// A fresh api with extra settings flags.
    pub async fn start_with(extra: &[&str]) -> TestApi {
        let nats = NatsServer::start();
        let db = TestDb::new().await;
        let state = api::build_state(settings(&nats, &db, extra))
            .await
            .expect("api state");
        let app = api::app(state.clone());
        TestApi {
            nats,
            db,
            state,
            app,
        }
    }

    /// The password every test user gets.
    pub fn password_of(username: &str) -> String {
        format!("{username}-secret-pw")
    }

    /// Creates an active user straight in the database.
    pub async fn create_user(&self, username: &str, role: Role) -> User {
        let hash = self
            .state
            .passwords
            .hash(&Self::password_of(username))
            .await
            .unwrap();
        self.state
            .storage
            .create_user(
                &NewUser {
                    username: username.to_owned(),
                    email: format!("{username}@example.com"),
                    password_hash: hash,
                    role,
                    is_active: true,
                },
                chrono::Utc::now(),
            )
            .await
            .unwrap()
    }

    /// Stores a HIGH `port_scan` event from sensor `fw` under `uid`, and makes its alert,
    /// straight in the database (as the pipeline would).
    pub async fn stored_alert(&self, uid: &str) -> common::domain::Alert {
        let event = common::domain::EventIn::from_value(
            serde_json::json!({"sourceName": "fw", "eventType": "port_scan", "severity": "HIGH"}),
        )
        .unwrap();
        let record = common::storage::EventRecord {
            uid: uid.to_owned(),
            event,
            created_at: chrono::Utc::now(),
        };
        let storage = &self.state.storage;
        let stored = storage
            .store_events(&[record], common::domain::Severity::High)
            .await
            .unwrap();
        storage
            .create_alerts(&stored.to_escalate, chrono::Utc::now())
            .await
            .unwrap()
            .alerts
            .remove(0)
    }

    /// Logs in through the API; returns (access, refresh).
    pub async fn login(&self, username: &str) -> (String, String) {
        let body =
            serde_json::json!({"username": username, "password": Self::password_of(username)});
        let resp = self
            .call("POST", "/api/auth/login/", None, Some(body))
            .await;
        assert_eq!(
            resp.status,
            StatusCode::OK,
            "login {username}: {:?}",
            resp.json
        );
        (
            resp.json["access"].as_str().unwrap().to_owned(),
            resp.json["refresh"].as_str().unwrap().to_owned(),
        )
    }

    /// A user of `role` and their access token.
    pub async fn user_with_token(&self, username: &str, role: Role) -> (User, String) {
        let user = self.create_user(username, role).await;
        let (access, _) = self.login(username).await;
        (user, access)
    }

    /// Sends a JSON request (or none) with an optional bearer token.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(value) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(value.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).unwrap()).await
    }

    /// Sends any request, from [`CLIENT`] unless it already says where it comes from.
    pub async fn send(&self, mut request: Request<Body>) -> Resp {
        if request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none()
        {
            request
                .extensions_mut()
                .insert(ConnectInfo(CLIENT.parse::<SocketAddr>().unwrap()));
        }
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            json,
            text,
        }
    }

    /// Sends any request like [`send`](Self::send), but reads its body for at most
    /// `patience`, and a live stream's (`text/event-stream`, which never ends) not at all.
    /// Returns the response (its body, if read) and whether the body was read to its end.
    pub async fn send_bounded(
        &self,
        mut request: Request<Body>,
        patience: std::time::Duration,
    ) -> (Resp, bool) {
        if request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .is_none()
        {
            request
                .extensions_mut()
                .insert(ConnectInfo(CLIENT.parse::<SocketAddr>().unwrap()));
        }
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let live = headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|ct| ct.as_bytes().starts_with(b"text/event-stream"));
        let (bytes, complete) = if live {
            (bytes::Bytes::new(), false)
        } else {
            match tokio::time::timeout(patience, response.into_body().collect()).await {
                Ok(collected) => (collected.unwrap().to_bytes(), true),
                Err(_) => (bytes::Bytes::new(), false),
            }
        };
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let resp = Resp {
            status,
            headers,
            json,
            text,
        };
        (resp, complete)
    }

    /// Sends a request from a given client address.
    pub async fn call_from(&self, addr: &str, method: &str, path: &str, body: Value) -> Resp {
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap();
        request
            .extensions_mut()
            .insert(ConnectInfo(addr.parse::<SocketAddr>().unwrap()));
        self.send(request).await
    }
}

/// The real server on a loopback port (over a private nats-server and a fresh database),
/// for clients outside this process: schemathesis, a browser.
pub struct ServedApi {
    pub nats: NatsServer,
    pub db: TestDb,
    pub state: api::State,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    shutdown: tokio_util::sync::CancellationToken,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl ServedApi {
    /// Builds the api (port 0: a free one) and serves it in the background.
    pub async fn start() -> ServedApi {
        let nats = NatsServer::start();
        let db = TestDb::new().await;
        // A route test (POST /api/notification-routes/{id}/test/) to a host that never
        // answers is cut after a second, not ten.
        let app = api::Application::build(settings(&nats, &db, &["--notify-timeout-secs", "1"]))
            .await
            .expect("api builds");
        let addr = app.local_addr().expect("bound address");
        let state = app.state().clone();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(app.run(shutdown.clone()));
        ServedApi {
            nats,
            db,
            state,
            base_url: format!("http://{addr}"),
            shutdown,
            server: Some(server),
        }
    }

    /// An active user of `role` made straight in the database, and an access token for them.
    pub async fn user_with_token(&self, username: &str, role: Role) -> (User, String) {
        let hash = self
            .state
            .passwords
            .hash(&TestApi::password_of(username))
            .await
            .unwrap();
        let user = self
            .state
            .storage
            .create_user(
                &NewUser {
                    username: username.to_owned(),
                    email: format!("{username}@example.com"),
                    password_hash: hash,
                    role,
                    is_active: true,
                },
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        let (access, _) = self
            .state
            .tokens
            .issue(&user, api::auth::TokenType::Access)
            .unwrap();
        (user, access)
    }

    /// Stops the server and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            tokio::time::timeout(std::time::Duration::from_secs(30), server)
                .await
                .expect("the api stops within 30 s")
                .expect("the server task")
                .expect("the server");
        }
    }
}
