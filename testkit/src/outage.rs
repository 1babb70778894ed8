//! Outages on demand: a TCP proxy a test can cut, and a database that becomes unavailable.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::{Backend, TestDb, free_port};

/// A TCP forwarder on a free loopback port to `target`, which a test can cut (every
/// connection dropped, new ones refused, as when a server's host goes away) and restore.
pub struct TcpProxy {
    port: u16,
    target: std::net::SocketAddr,
    accepting: Option<tokio::task::JoinHandle<()>>,
    connections: std::sync::Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl TcpProxy {
    /// Starts forwarding from a free port to `target`. Needs a tokio runtime.
    pub async fn start(target: std::net::SocketAddr) -> TcpProxy {
        let mut proxy = TcpProxy {
            port: free_port(),
            target,
            accepting: None,
            connections: Default::default(),
        };
        proxy.open().await;
        proxy
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    async fn open(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            // The port was ours a moment ago; its old listener may take a moment to go.
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(err) if Instant::now() < deadline => {
                    let _ = err;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(err) => panic!("proxy: cannot listen on 127.0.0.1:{}: {err}", self.port),
            }
        };
        let (target, connections) = (self.target, self.connections.clone());
        self.accepting = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let forward = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                connections.lock().unwrap().push(forward);
            }
        }));
    }

    /// Drops every connection and refuses new ones until [`TcpProxy::restore`].
    pub async fn cut(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
            let _ = accepting.await;
        }
        let connections: Vec<_> = self.connections.lock().unwrap().drain(..).collect();
        for connection in connections {
            connection.abort();
            let _ = connection.await;
        }
    }

    /// Accepts connections again, on the same port.
    pub async fn restore(&mut self) {
        if self.accepting.is_none() {
            self.open().await;
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(accepting) = self.accepting.take() {
            accepting.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

/// A database outage a test can start and end: for Postgres, the services reach the
/// server through a [`TcpProxy`] that is cut (connections reset, new ones refused); for
/// SQLite, another connection holds the write lock (`BEGIN EXCLUSIVE`), so every write
/// answers "busy", as while a backup or another process holds the file.
pub struct DbOutage {
    url: String,
    kind: OutageKind,
}

enum OutageKind {
    Postgres(TcpProxy),
    Sqlite {
        url: String,
        holder: Option<sqlx::SqliteConnection>,
    },
}

impl DbOutage {
    /// An outage switch for `db`. Services that should suffer it must use [`DbOutage::url`].
    pub async fn new(db: &TestDb) -> DbOutage {
        match db.backend() {
            Backend::Postgres => {
                let mut url = url::Url::parse(db.url()).expect("a Postgres URL");
                let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
                let port = url.port().unwrap_or(5432);
                let target = tokio::net::lookup_host((host.as_str(), port))
                    .await
                    .expect("resolving the Postgres host")
                    .next()
                    .expect("an address for the Postgres host");
                let proxy = TcpProxy::start(target).await;
                url.set_host(Some("127.0.0.1")).unwrap();
                url.set_port(Some(proxy.port())).unwrap();
                DbOutage {
                    url: url.into(),
                    kind: OutageKind::Postgres(proxy),
                }
            }
            Backend::Sqlite => DbOutage {
                url: db.url().to_owned(),
                kind: OutageKind::Sqlite {
                    url: db.url().to_owned(),
                    holder: None,
                },
            },
        }
    }

    /// The database URL that goes through the outage.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database becomes unavailable to clients of [`DbOutage::url`].
    pub async fn begin(&mut self) {
        match &mut self.kind {
            OutageKind::Postgres(proxy) => proxy.cut().await,
            OutageKind::Sqlite { url, holder } => {
                let mut conn = <sqlx::SqliteConnection as Connection>::connect(url)
                    .await
                    .expect("opening the SQLite file to lock it");
                sqlx::query("BEGIN EXCLUSIVE")
                    .execute(&mut conn)
                    .await
                    .expect("taking SQLite's write lock");
                *holder = Some(conn);
            }
        }
    }

    /// The database is back.
    pub async fn end(&mut self) {
        match &mut self.kind {
            OutageKind::Postgres(proxy) => proxy.restore().await,
            OutageKind::Sqlite { holder, .. } => {
                if let Some(mut conn) = holder.take() {
                    sqlx::query("ROLLBACK")
                        .execute(&mut conn)
                        .await
                        .expect("releasing SQLite's write lock");
                    let _ = conn.close().await;
                }
            }
        }
    }
}
