//! The real server: binds, answers over TCP with the client's address known, and stops
//! gracefully when told.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::Duration;

use testkit::{NatsServer, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_over_tcp_and_stops_when_asked() {
    let nats = NatsServer::start();
    let db = TestDb::new().await;
    let app = api::Application::build(support::settings(&nats, &db, &[]))
        .await
        .unwrap();
    let addr = app.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));

    let health = http(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    // A login needs the client's address (for failed-login limits): it must be known here.
    let body = r#"{"username":"nobody","password":"nothing-at-all"}"#;
    let login = http(
        addr,
        &format!(
            "POST /api/auth/login/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(login.starts_with("HTTP/1.1 401"), "{login}");
    assert!(login.contains("No active account found with the given credentials"));

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops promptly")
        .unwrap()
        .unwrap();
}
