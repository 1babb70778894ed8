//! The docs page works offline: a real browser with no network route but loopback loads
//! `/api/docs/` from the real server and renders the operations.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use support::ServedApi;
use testkit::Chromium;

/// How long the page may take to show the operations, wall clock.
const DEADLINE: Duration = Duration::from_secs(120);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_every_operation_with_no_network() {
    let api = ServedApi::start().await;
    let url = format!("{}/api/docs/", api.base_url);
    let browser = Chromium::new();

    // What the rendered page must show: operations' summaries and paths, from the document.
    let wanted = [
        "Exchanges a username and password for a token pair.",
        "Lists alerts, newest first",
        "/api/alerts/{id}/history/",
        "/api/events/",
        "/api/users/{id}/",
        "Live alerts as Server-Sent Events",
    ];
    let started = Instant::now();
    let mut budget = Duration::from_secs(10);
    let dom = loop {
        let page = url.clone();
        let dom = tokio::task::block_in_place(|| browser.dump_dom(&page, budget));
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|text| !dom.contains(text))
            .collect();
        if missing.is_empty() {
            break dom;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "after {:?} the docs page still lacks {missing:?}; it rendered:\n{}",
            started.elapsed(),
            &dom[..dom.len().min(4000)]
        );
        // A slow machine: give the page's scripts more time on the next load.
        budget *= 2;
    };
    assert!(
        !dom.contains("Something went wrong"),
        "Redoc reported an error"
    );
    api.stop().await;
}
