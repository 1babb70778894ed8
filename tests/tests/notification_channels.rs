//! The e-mail and Slack channels, on the backend under test, each to a real receiver process
//! on a loopback port: an SMTP server (aiosmtpd, parsing the message with Python's `email`
//! package) gets one multipart/alternative message with the alert in its subject, text and
//! HTML; a Slack route's receiver gets a Block Kit message with the alert's fields and a link
//! to it in the console.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use chrono::Utc;
use common::domain::{Alert, RouteSpec, Severity};
use common::storage::{AttemptOutcome, DeliveryAttempt, Storage};
use common::subjects;
use serde_json::{Value, json};
use testkit::eventually;
use threatmon_tests::receivers::Receiver;
use threatmon_tests::{PATIENCE, Pipeline};

async fn create_route(storage: &Storage, body: Value) -> i64 {
    let spec = RouteSpec::parse(body.as_object().unwrap(), None).unwrap();
    storage.create_route(&spec, Utc::now()).await.unwrap().id
}

/// Publishes one CRITICAL event from `source` of `event_type`, and returns the alert it raised.
async fn one_alert(pipeline: &Pipeline, source: &str, event_type: &str) -> Alert {
    let event = json!({"sourceName": source, "eventType": event_type,
        "severity": "CRITICAL", "description": "ports probed"});
    pipeline.publish_event(&event, Some("channel-test-1")).await;
    pipeline.wait_for_alerts(1).await;
    let mut alerts = pipeline
        .storage
        .list_alerts(
            &Default::default(),
            common::storage::AlertOrdering::NewestFirst,
            1,
            0,
        )
        .await
        .unwrap();
    alerts.remove(0)
}

async fn attempts(storage: &Storage, alert: i64) -> Vec<DeliveryAttempt> {
    storage.alert_attempts(alert, 100, 0).await.unwrap()
}

/// Waits until the alert's delivery has a Delivered attempt, and returns the whole log.
async fn delivered(storage: &Storage, alert: i64) -> Vec<DeliveryAttempt> {
    eventually(PATIENCE, "a delivered attempt", || async move {
        let log = attempts(storage, alert).await;
        log.iter()
            .any(|a| a.outcome == AttemptOutcome::Delivered)
            .then_some(log)
    })
    .await
}

#[tokio::test]
async fn an_email_route_sends_one_text_and_html_message_through_a_real_smtp_server() {
    let pipeline = Pipeline::start().await;
    let smtp = Receiver::start("smtp.py", "", &[]).await;
    create_route(
        &pipeline.storage,
        json!({"name": "soc-mail", "kind": "email",
            "to": ["soc@example.com", "oncall@example.org"], "min_severity": "HIGH"}),
    )
    .await;
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter_with(pipeline.alerter_settings_with(&[
        "--smtp-url",
        &smtp_url,
        "--smtp-from",
        "threatmon alerts <alerts@threatmon.example>",
        "--api-public-url",
        "http://console.example",
        "--notify-allow-private-targets",
        "true",
    ]));
    let alert = one_alert(&pipeline, "fw-edge-01", "port_scan").await;

    let log = delivered(&pipeline.storage, alert.id).await;
    assert_eq!(log.len(), 1, "delivered at the first attempt: {log:#?}");
    let attempt = &log[0];
    assert_eq!(attempt.outcome, AttemptOutcome::Delivered);
    assert_eq!(attempt.route_name, "soc-mail");
    assert_eq!(attempt.trigger, "created");
    assert_eq!(attempt.status_code, Some(250), "the SMTP reply code");
    let reply = attempt.reply.as_deref().unwrap_or_default();
    assert!(
        reply.contains("queued as smtp-1"),
        "the server's reply is in the delivery log: {attempt:#?}"
    );
    assert_eq!(attempt.error, None);

    // Nothing more comes: one message, however long we look.
    pipeline
        .wait_consumer_drained(subjects::ALERTS_STREAM, subjects::NOTIFIER_CONSUMER)
        .await;
    let messages = smtp.received();
    assert_eq!(messages.len(), 1, "exactly one message: {messages:#?}");
    let message = &messages[0];

    assert_eq!(message["mail_from"], "alerts@threatmon.example");
    let mut recipients: Vec<&str> = message["rcpt_tos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    recipients.sort_unstable();
    assert_eq!(recipients, ["oncall@example.org", "soc@example.com"]);
    let from = message["from"].as_str().unwrap();
    assert!(
        from.contains("threatmon alerts") && from.contains("<alerts@threatmon.example>"),
        "From: {from}"
    );
    let to = message["to"].as_str().unwrap();
    assert!(
        to.contains("soc@example.com") && to.contains("oncall@example.org"),
        "To: {to}"
    );
    // Gmail and others refuse a message without one.
    let message_id = message["message_id"].as_str().expect("a Message-ID");
    assert!(
        message_id.starts_with('<') && message_id.ends_with("@threatmon.example>"),
        "Message-ID: {message_id}"
    );

    // The subject names what a reader triages by: severity, type, sensor, alert, change.
    let headline = format!(
        "CRITICAL port_scan on fw-edge-01 (alert {}, created)",
        alert.id
    );
    assert_eq!(message["subject"], format!("[threatmon] {headline}"));

    // One message, two renderings: a client shows the HTML, or the text if it cannot.
    assert_eq!(message["content_type"], "multipart/alternative");
    assert_eq!(
        message["parts"],
        json!(["multipart/alternative", "text/plain", "text/html"]),
        "{}",
        message["raw"]
    );
    let link = format!("http://console.example/console/alerts/{}", alert.id);
    let text = message["text"].as_str().expect("a text part");
    for line in [
        headline.as_str(),
        "Severity: CRITICAL",
        "Type: port_scan",
        "Source: fw-edge-01",
        "Count: 1",
        "Status: OPEN",
        &link,
    ] {
        assert!(text.contains(line), "the text part lacks {line:?}:\n{text}");
    }
    assert!(!text.contains('<'), "the text part is not markup:\n{text}");
    let html = message["html"].as_str().expect("an HTML part");
    for piece in [
        format!("<h2>{headline}</h2>"),
        "<td>CRITICAL</td>".to_owned(),
        "<td>port_scan</td>".to_owned(),
        "<td>fw-edge-01</td>".to_owned(),
        format!("<a href=\"{link}\">"),
    ] {
        assert!(
            html.contains(&piece),
            "the HTML part lacks {piece:?}:\n{html}"
        );
    }

    alerter.stop().await;
    ingestor.stop().await;
}

#[tokio::test]
async fn a_slack_route_posts_a_block_kit_message_with_the_alert_and_its_console_link() {
    let pipeline = Pipeline::start().await;
    // No RECEIVER_SECRET: a Slack message is not signed, the receiver only logs it.
    let receiver = Receiver::start("webhook.py", "", &[]).await;
    let url = format!("http://127.0.0.1:{}/services/T000/B000/XXXX", receiver.port);
    create_route(
        &pipeline.storage,
        json!({"name": "soc-slack", "kind": "slack", "url": url, "min_severity": "HIGH"}),
    )
    .await;
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter_with(pipeline.alerter_settings_with(&[
        "--api-public-url",
        "http://console.example",
        "--notify-allow-private-targets",
        "true",
    ]));
    let alert = one_alert(&pipeline, "fw-edge-01", "port_scan").await;

    let log = delivered(&pipeline.storage, alert.id).await;
    assert_eq!(log.len(), 1, "delivered at the first attempt: {log:#?}");
    assert_eq!(log[0].status_code, Some(200));
    assert_eq!(log[0].route_name, "soc-slack");
    pipeline
        .wait_consumer_drained(subjects::ALERTS_STREAM, subjects::NOTIFIER_CONSUMER)
        .await;
    let requests = receiver.received();
    assert_eq!(requests.len(), 1, "exactly one message: {requests:#?}");
    let request = &requests[0];
    assert_eq!(request["path"], "/services/T000/B000/XXXX");
    assert!(
        request["webhook_id"].is_null(),
        "a Slack message carries no Standard Webhooks headers: {request}"
    );
    let body = &request["body"];
    assert!(body.is_object(), "the body is JSON: {request}");

    // The notification's one line, for clients that show no blocks.
    let headline = format!(
        "CRITICAL port_scan on fw-edge-01 (alert {}, created)",
        alert.id
    );
    assert_eq!(body["text"], format!("threatmon: {headline}"));

    let blocks = body["blocks"].as_array().expect("Block Kit blocks");
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(blocks[0]["text"]["type"], "plain_text");
    assert_eq!(blocks[0]["text"]["text"], format!("threatmon: {headline}"));

    // A section of `*Label*\nvalue` fields.
    let fields: BTreeMap<String, String> = blocks
        .iter()
        .filter(|b| b["type"] == "section")
        .filter_map(|b| b["fields"].as_array())
        .flatten()
        .map(|field| {
            assert_eq!(field["type"], "mrkdwn", "{field}");
            let text = field["text"].as_str().unwrap();
            let (label, value) = text.split_once('\n').expect("*Label*\\nvalue");
            (label.trim_matches('*').to_owned(), value.to_owned())
        })
        .collect();
    for (label, value) in [
        ("Severity", "CRITICAL".to_owned()),
        ("Type", "port_scan".to_owned()),
        ("Source", "fw-edge-01".to_owned()),
        ("Count", alert.count.to_string()),
        ("Status", "OPEN".to_owned()),
    ] {
        assert_eq!(
            fields.get(label),
            Some(&value),
            "the field {label}: {fields:?}"
        );
    }

    // The link, in Slack's `<url|label>` form, to the alert in the console.
    let link = format!("http://console.example/console/alerts/{}", alert.id);
    let links: Vec<&str> = blocks
        .iter()
        .filter_map(|b| b["text"]["text"].as_str())
        .filter(|text| text.contains("/console/alerts/"))
        .collect();
    assert_eq!(links.len(), 1, "one link: {blocks:#?}");
    assert!(
        links[0].starts_with(&format!("<{link}|")) && links[0].ends_with('>'),
        "a Slack link to {link}: {}",
        links[0]
    );

    alerter.stop().await;
    ingestor.stop().await;
}

#[tokio::test]
async fn a_sensors_markup_reaches_people_as_text_in_email_and_slack() {
    let pipeline = Pipeline::start().await;
    let smtp = Receiver::start("smtp.py", "", &[]).await;
    let slack = Receiver::start("webhook.py", "", &[]).await;
    create_route(
        &pipeline.storage,
        json!({"name": "mail", "kind": "email", "to": ["soc@example.com"]}),
    )
    .await;
    let url = format!("http://127.0.0.1:{}/services/T1/B1/X", slack.port);
    create_route(
        &pipeline.storage,
        json!({"name": "slack", "kind": "slack", "url": url}),
    )
    .await;
    let smtp_url = format!("smtp://127.0.0.1:{}", smtp.port);
    let ingestor = pipeline.start_ingestor(Severity::High);
    let alerter = pipeline.start_alerter_with(pipeline.alerter_settings_with(&[
        "--smtp-url",
        &smtp_url,
        "--notify-allow-private-targets",
        "true",
    ]));
    // Names a sensor chose: HTML, and Slack's mention and link syntax.
    let source = r#"fw<b>"x"</b>&01"#;
    let event_type = "<!channel><https://evil.example|login>";
    let alert = one_alert(&pipeline, source, event_type).await;

    let log = eventually(PATIENCE, "both routes delivered", || {
        let storage = pipeline.storage.clone();
        async move {
            let log = attempts(&storage, alert.id).await;
            (log.iter()
                .filter(|a| a.outcome == AttemptOutcome::Delivered)
                .count()
                == 2)
                .then_some(log)
        }
    })
    .await;
    assert_eq!(log.len(), 2, "{log:#?}");

    let messages = smtp.received();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    let message = &messages[0];
    // Header encoding keeps the subject exactly as the alert has it.
    assert_eq!(
        message["subject"],
        format!(
            "[threatmon] CRITICAL {event_type} on {source} (alert {}, created)",
            alert.id
        )
    );
    let html = message["html"].as_str().unwrap();
    assert!(
        html.contains("<td>fw&lt;b&gt;&quot;x&quot;&lt;/b&gt;&amp;01</td>"),
        "{html}"
    );
    assert!(
        html.contains("<td>&lt;!channel&gt;&lt;https://evil.example|login&gt;</td>"),
        "{html}"
    );
    assert!(
        !html.contains("<b>") && !html.contains("<!channel>"),
        "markup: {html}"
    );
    let text = message["text"].as_str().unwrap();
    assert!(
        text.contains(&format!("Source: {source}")),
        "the text part as is: {text}"
    );

    let requests = slack.received();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let body = &requests[0]["body"];
    // Every mrkdwn text (the notification's `text`, the fields): escaped, so that Slack
    // neither pings the channel nor shows a link the sensor chose.
    let mut mrkdwn = vec![body["text"].as_str().unwrap()];
    for block in body["blocks"].as_array().unwrap() {
        if let Some(fields) = block["fields"].as_array() {
            mrkdwn.extend(fields.iter().map(|f| f["text"].as_str().unwrap()));
        }
    }
    for text in &mrkdwn {
        assert!(
            !text.contains("<!channel>")
                && !text.contains("<https://evil")
                && !text.contains("<b>"),
            "unescaped in mrkdwn: {text}"
        );
    }
    assert!(
        mrkdwn.contains(&"*Type*\n&lt;!channel&gt;&lt;https://evil.example|login&gt;"),
        "{mrkdwn:?}"
    );
    assert!(
        mrkdwn.contains(&"*Source*\nfw&lt;b&gt;\"x\"&lt;/b&gt;&amp;01"),
        "{mrkdwn:?}"
    );
    assert!(
        body["text"]
            .as_str()
            .unwrap()
            .contains("&lt;!channel&gt;&lt;https://evil.example|login&gt; on fw&lt;b&gt;"),
        "{body}"
    );
    // The header is plain_text: Slack shows it as is.
    assert_eq!(body["blocks"][0]["text"]["type"], "plain_text");
    assert!(
        body["blocks"][0]["text"]["text"]
            .as_str()
            .unwrap()
            .contains(event_type)
    );

    alerter.stop().await;
    ingestor.stop().await;
}
