//! `threatctl publish` and `threatctl tail`, run as a user would, against a private
//! nats-server with threatmon's streams declared.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use std::collections::HashMap;

use async_nats::jetstream::{self, stream::Stream};
use bytes::Bytes;
use common::bus::MSG_ID_HEADER;
use common::domain::EventIn;
use common::subjects::{ALERTS_STREAM, EVENTS_STREAM};
use serde_json::{Value, json};
use support::{PATIENCE, nats_with_streams, run, stream_messages, threatctl};
use testkit::eventually;

/// Every message of a stream, oldest first: (subject, Nats-Msg-Id, payload).
async fn stored(js: &jetstream::Context, name: &str) -> Vec<(String, Option<String>, Value)> {
    let stream: Stream = js.get_stream(name).await.unwrap();
    let count = stream_messages(js, name).await;
    let mut messages = Vec::new();
    for sequence in 1..=count {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let msg_id = message
            .headers
            .get(MSG_ID_HEADER)
            .map(|v| v.as_str().to_owned());
        let payload = serde_json::from_slice(&message.payload).unwrap();
        messages.push((message.subject.to_string(), msg_id, payload));
    }
    messages
}

#[tokio::test]
async fn publish_count_lands_exactly_that_many_events_in_the_stream() {
    let (nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let mut command = threatctl(home.path());
    command.args([
        "publish", "--count", "500", "--rate", "0", "--seed", "7", "--json",
    ]);
    command.args(["--nats-url", &nats.url()]);
    let out = run(command, None).await;

    let summary: Value = serde_json::from_str(out.ok().trim()).unwrap();
    assert_eq!(summary["sent"], 500, "{summary}");
    assert_eq!(summary["acked"], 500, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["failed"], 0, "{summary}");
    assert_eq!(summary["seed"], 7, "{summary}");
    assert!(
        out.stderr.is_empty(),
        "no progress bar off a terminal: {}",
        out.stderr
    );
    assert_eq!(stream_messages(&js, EVENTS_STREAM).await, 500);

    let messages = stored(&js, EVENTS_STREAM).await;
    let mut severities: HashMap<String, u32> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for (subject, msg_id, payload) in &messages {
        let event = EventIn::from_value(payload.clone()).unwrap();
        assert_eq!(subject, &format!("events.{}", event.source_name));
        ids.insert(msg_id.clone().expect("every event has a Nats-Msg-Id"));
        *severities.entry(event.severity.to_string()).or_default() += 1;
    }
    assert_eq!(ids.len(), 500, "distinct ids");
    for severity in ["LOW", "MEDIUM", "HIGH", "CRITICAL"] {
        assert_eq!(severities[severity], 125, "{severities:?}");
    }
}

#[tokio::test]
async fn a_mix_and_a_rate_are_followed() {
    let (nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let mut command = threatctl(home.path());
    command.args([
        "publish",
        "--count",
        "20",
        "--rate",
        "2000",
        "--mix",
        "low=3,critical=1",
    ]);
    command.args(["--nats-url", &nats.url()]);
    let out = run(command, None).await;
    let summary = out.ok();
    assert!(
        summary.starts_with("sent 20, 20 acked (0 duplicates), 0 failed in "),
        "{summary}"
    );
    let messages = stored(&js, EVENTS_STREAM).await;
    let critical = messages
        .iter()
        .filter(|(_, _, e)| e["severity"] == "CRITICAL")
        .count();
    let low = messages
        .iter()
        .filter(|(_, _, e)| e["severity"] == "LOW")
        .count();
    assert_eq!((low, critical), (15, 5));
}

#[tokio::test]
async fn one_event_from_flags_is_published_once_under_its_uid() {
    let (nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let publish = || {
        let mut command = threatctl(home.path());
        command.args([
            "publish",
            "--source",
            "fw-edge-01",
            "--type",
            "port_scan",
            "--severity",
            "high",
            "--description",
            "1,024 ports probed from 203.0.113.9",
            "--attr",
            "src_ip=203.0.113.9",
            "--attr",
            "ports=1024",
            "--uid",
            "flag-event-1",
        ]);
        command.env("NATS_URL", nats.url());
        command
    };

    let first = run(publish(), None).await;
    assert!(
        first
            .ok()
            .starts_with("sent 1, 1 acked (0 duplicates), 0 failed"),
        "{first:?}"
    );
    let again = run(publish(), None).await;
    assert!(
        again
            .ok()
            .starts_with("sent 1, 1 acked (1 duplicates), 0 failed"),
        "{again:?}"
    );

    let messages = stored(&js, EVENTS_STREAM).await;
    assert_eq!(messages.len(), 1, "the repeat is dropped by the stream");
    let (subject, msg_id, payload) = &messages[0];
    assert_eq!(subject, "events.fw-edge-01");
    assert_eq!(msg_id.as_deref(), Some("flag-event-1"));
    assert_eq!(
        payload,
        &json!({
            "sourceName": "fw-edge-01", "eventType": "port_scan", "severity": "HIGH",
            "description": "1,024 ports probed from 203.0.113.9", "uid": "flag-event-1",
            "attributes": {"src_ip": "203.0.113.9", "ports": 1024},
        })
    );
}

const LINES: &str = r#"{"sourceName":"fw-edge-01","eventType":"port_scan","severity":"HIGH","uid":"file-1"}

{"sourceName":"ids-core-01","eventType":"c2_beacon","severity":"CRITICAL","description":"beacon"}
{"sourceName":"waf-prod-01","eventType":"xss_attempt","severity":"LOW","attributes":{"path":"/search"}}
"#;

#[tokio::test]
async fn events_from_a_json_lines_file_or_stdin_are_published() {
    let (nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("events.jsonl");
    std::fs::write(&path, LINES).unwrap();

    let mut command = threatctl(home.path());
    command.args([
        "publish",
        "--file",
        "events.jsonl",
        "--json",
        "--nats-url",
        &nats.url(),
    ]);
    let summary: Value = serde_json::from_str(run(command, None).await.ok()).unwrap();
    assert_eq!(
        (summary["sent"].as_u64(), summary["acked"].as_u64()),
        (Some(3), Some(3))
    );
    assert!(summary.get("seed").is_none());

    let messages = stored(&js, EVENTS_STREAM).await;
    let subjects: Vec<&str> = messages.iter().map(|(s, _, _)| s.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "events.fw-edge-01",
            "events.ids-core-01",
            "events.waf-prod-01"
        ]
    );
    assert_eq!(
        messages[0].1.as_deref(),
        Some("file-1"),
        "a line's uid is its Nats-Msg-Id"
    );
    assert!(messages[1].1.is_some());

    // The same lines on stdin: the one with a uid is a duplicate, the others are new.
    let mut command = threatctl(home.path());
    command.args([
        "publish",
        "--file",
        "-",
        "--json",
        "--nats-url",
        &nats.url(),
    ]);
    let summary: Value = serde_json::from_str(run(command, Some(LINES)).await.ok()).unwrap();
    assert_eq!(summary["acked"], 3);
    assert_eq!(summary["duplicates"], 1);
    assert_eq!(stream_messages(&js, EVENTS_STREAM).await, 5);
}

#[tokio::test]
async fn a_bad_line_stops_the_file_before_anything_is_sent() {
    let (nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let lines = format!(
        "{}\n{}\n",
        r#"{"sourceName":"fw-edge-01","eventType":"port_scan","severity":"HIGH"}"#,
        r#"{"sourceName":"fw-edge-01","eventType":"port_scan","severity":"SEVERE"}"#
    );
    std::fs::write(home.path().join("bad.jsonl"), lines).unwrap();
    let mut command = threatctl(home.path());
    command.args(["publish", "--file", "bad.jsonl", "--nats-url", &nats.url()]);
    let out = run(command, None).await;
    let line = out.one_line_error();
    assert!(line.contains("bad.jsonl line 2"), "{line}");
    assert!(
        line.contains(r#""SEVERE\" is not a valid choice."#),
        "{line}"
    );
    assert_eq!(stream_messages(&js, EVENTS_STREAM).await, 0);
}

#[tokio::test]
async fn publishing_to_an_unreachable_nats_fails_with_one_line() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let home = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let mut command = threatctl(home.path());
    command.args([
        "publish",
        "--source",
        "fw-edge-01",
        "--type",
        "port_scan",
        "--severity",
        "LOW",
        "--connect-timeout",
        "1",
        "--nats-url",
        &url,
    ]);
    let out = run(command, None).await;
    let line = out.one_line_error();
    assert!(
        line.starts_with(&format!("threatctl: cannot reach NATS at {url}: ")),
        "{line}"
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn bad_command_lines_are_one_line_with_status_2() {
    let home = tempfile::tempdir().unwrap();
    let mut command = threatctl(home.path());
    command.args(["publish", "--count", "5", "--mix", "SEVERE=1"]);
    let out = run(command, None).await;
    let line = out.one_line_error();
    assert!(line.contains("--mix") && line.contains("SEVERE"), "{line}");
    assert_eq!(out.status.code(), Some(2));
}

fn alert(id: i64, status: &str) -> Value {
    json!({
        "id": id, "event_id": id + 100, "eventType": "port_scan", "severity": "HIGH",
        "sourceName": "fw-edge-01", "status": status,
        "created_at": "2026-11-28T10:00:00Z", "updated_at": "2026-11-28T10:05:00Z",
    })
}

async fn publish_alert(js: &jetstream::Context, subject: &str, payload: &Value) {
    js.publish(subject.to_owned(), Bytes::from(payload.to_string()))
        .await
        .unwrap()
        .await
        .unwrap();
}

/// Spawns `threatctl tail` with `args` and waits until its consumer is on the ALERTS stream,
/// so that what the test publishes next is new to it.
async fn start_tail(
    nats_url: &str,
    js: &jetstream::Context,
    home: &std::path::Path,
    args: &[&str],
) -> tokio::process::Child {
    let mut command = threatctl(home);
    command
        .arg("tail")
        .args(args)
        .args(["--nats-url", nats_url]);
    let child = command.spawn().unwrap();
    eventually(PATIENCE, "tail's consumer on ALERTS", || async {
        let mut stream = js.get_stream(ALERTS_STREAM).await.ok()?;
        let info = stream.info().await.ok()?;
        (info.state.consumer_count == 1).then_some(())
    })
    .await;
    child
}

async fn finish(child: tokio::process::Child) -> support::Run {
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .expect("tail did not exit after --count")
        .unwrap();
    support::Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn tail_prints_new_alerts_as_json_and_exits_after_count() {
    let (nats, js) = nats_with_streams().await;
    // Already in the stream before tail starts: not new, not printed.
    publish_alert(&js, "alerts.created.low", &alert(1, "OPEN")).await;
    let home = tempfile::tempdir().unwrap();
    let child = start_tail(&nats.url(), &js, home.path(), &["--count", "2", "--json"]).await;

    publish_alert(&js, "alerts.created.high", &alert(2, "OPEN")).await;
    let mut updated = alert(2, "ACKNOWLEDGED");
    updated["change"] = json!({"changed_by": 1, "note": "on it"});
    publish_alert(&js, "alerts.updated.acknowledged", &updated).await;

    let out = finish(child).await;
    let lines: Vec<Value> = out
        .ok()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    let mut first = alert(2, "OPEN");
    first["subject"] = json!("alerts.created.high");
    assert_eq!(lines[0], first);
    updated["subject"] = json!("alerts.updated.acknowledged");
    assert_eq!(lines[1], updated);
}

#[tokio::test]
async fn tail_by_severity_follows_those_creations_and_every_update_in_order() {
    let (nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let child = start_tail(
        &nats.url(),
        &js,
        home.path(),
        &["--severity", "CRITICAL", "--count", "2"],
    )
    .await;

    publish_alert(&js, "alerts.created.high", &alert(3, "OPEN")).await;
    let mut critical = alert(4, "OPEN");
    critical["severity"] = json!("CRITICAL");
    publish_alert(&js, "alerts.created.critical", &critical).await;
    publish_alert(&js, "alerts.updated.resolved", &alert(3, "RESOLVED")).await;

    let out = finish(child).await;
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(
        lines,
        [
            "2026-11-28 10:00:00Z  created  CRITICAL  OPEN          #4       port_scan  fw-edge-01",
            "2026-11-28 10:05:00Z  updated  HIGH      RESOLVED      #3       port_scan  fw-edge-01",
        ]
    );
}

#[tokio::test]
async fn tail_exits_0_on_ctrl_c() {
    let (nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let child = start_tail(&nats.url(), &js, home.path(), &[]).await;
    let pid = child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = finish(child).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[tokio::test]
async fn tail_carries_on_across_a_server_restart() {
    let (mut nats, js) = nats_with_streams().await;
    let home = tempfile::tempdir().unwrap();
    let child = start_tail(&nats.url(), &js, home.path(), &["--count", "2", "--json"]).await;
    publish_alert(&js, "alerts.created.high", &alert(5, "OPEN")).await;

    nats.restart();
    // The test's client reconnects on its own; publish once the stream answers again.
    let payload = Bytes::from(alert(6, "OPEN").to_string());
    eventually(PATIENCE, "a publish after the restart", || {
        let (js, payload) = (js.clone(), payload.clone());
        async move {
            let ack = js.publish("alerts.created.critical", payload).await.ok()?;
            ack.await.ok()
        }
    })
    .await;

    let out = finish(child).await;
    let ids: Vec<i64> = out
        .ok()
        .lines()
        .map(|line| {
            serde_json::from_str::<Value>(line).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, [5, 6], "{out:?}");
}
