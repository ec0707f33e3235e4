//! What a node's log says about its clients, read from the log file of a real node: RabbitMQ's
//! three lines per connection (accepted, let into a vhost, closed with the reason), in text and
//! as JSON objects (`--log-format json`).

use std::time::{Duration, Instant};

use warren_tests::lapin::{Connection, ConnectionProperties};
use warren_tests::serde_json::Value;
use warren_tests::{block_on, Broker};

/// Waits until the node's log has a line containing every one of `parts`; returns that line.
fn log_line(broker: &Broker, parts: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = broker.log();
        if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
            return line.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no line with {parts:?} in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A client that opens a connection and closes it; the connection's name as the node gives it
/// (`peer -> local`).
fn open_and_close(broker: &Broker) -> String {
    block_on(async {
        let conn = Connection::connect(broker.uri(), ConnectionProperties::default())
            .await
            .expect("connects");
        // A channel kept to the end and closed first (lapin closes a dropped channel on its own,
        // and a connection.close racing that is refused by lapin itself).
        let ch = conn.create_channel().await.expect("a channel");
        // The node's name of the connection: the client's address first.
        let api = warren_tests::management::guest_api(broker);
        let mut name = String::new();
        for _ in 0..100 {
            let list = api.get("/api/connections").await.expect("connections");
            if let Some(n) = list
                .as_array()
                .and_then(|l| l.first())
                .and_then(|c| c["name"].as_str())
            {
                name = n.to_owned();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!name.is_empty(), "the connection is listed");
        ch.close(200, "bye".into())
            .await
            .expect("the channel closes");
        conn.close(200, "bye".into()).await.expect("closes");
        name
    })
}

#[test]
fn a_connection_is_logged_when_accepted_let_in_and_closed_as_rabbitmq_logs_it() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let name = open_and_close(&broker);
    let peer = name.split(" -> ").next().expect("peer -> local");
    log_line(&broker, &[&format!("accepting AMQP connection {name}")]);
    log_line(
        &broker,
        &[&format!(
            "AMQP connection {name}: user 'guest' authenticated and granted access to vhost '/'"
        )],
    );
    let closing = log_line(&broker, &["closing AMQP connection", peer]);
    assert!(
        closing.contains(&format!(
            "closing AMQP connection {name} (vhost: '/', user: 'guest'): closed by the client"
        )),
        "{closing}"
    );
    assert!(closing.contains("INFO"), "{closing}");
}

#[test]
fn json_logs_are_one_object_per_line_with_the_connection_lines_as_messages() {
    let broker = Broker::start_own(&["--log-format", "json"]).expect("warren starts");
    let name = open_and_close(&broker);
    let line = log_line(&broker, &["accepting AMQP connection", &name]);
    let event: Value = warren_tests::serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("not a JSON object ({e}): {line}"));
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(
        event["message"],
        format!("accepting AMQP connection {name}").as_str(),
        "{event}"
    );
    assert!(event["timestamp"].is_string(), "{event}");
    assert!(event["conn"].is_number(), "the event's fields: {event}");
    // Every line of the log is a JSON object (the node's own start-up lines too).
    for l in broker.log().lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            warren_tests::serde_json::from_str::<Value>(l).is_ok_and(|v| v.is_object()),
            "not a JSON object: {l}"
        );
    }
}
