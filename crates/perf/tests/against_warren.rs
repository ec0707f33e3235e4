//! warren-perf end to end against a real `warren` node on a free loopback port (started by the
//! test kit): a timed run, a counted run, a backlog filled by one run and drained by another, a
//! priority queue drained highest priority first, a stream re-read from its first offset, and
//! counted runs through the node's STOMP and MQTT listeners. Each run must exit 0 and print a
//! JSON summary whose counts show messages went through.

use std::process::Command;

use serde_json::Value;
use warren_tests::{unique, Broker};

/// Runs warren-perf with `--json` against `broker`; returns the parsed summary, failing the test
/// on a non-zero exit or unparsable output.
fn perf(broker: &Broker, args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_warren-perf"))
        .args(["--json", "-h", broker.uri()])
        .args(args)
        .output()
        .expect("warren-perf runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "warren-perf {args:?} failed ({}):\n{stdout}\n{stderr}\nbroker log:\n{}",
        out.status,
        broker.log()
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("summary is not JSON ({e}): {stdout}"));
    assert_eq!(summary["errors"], Value::Array(vec![]), "{summary}");
    summary
}

fn count(summary: &Value, key: &str) -> u64 {
    summary[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} in {summary}"))
}

#[test]
fn a_timed_run_publishes_confirms_and_consumes_through_a_quorum_queue() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let q = unique("perf-timed");
    let s = perf(
        &broker,
        &[
            "-x1",
            "-y1",
            "-s100",
            "--queue-type",
            "quorum",
            "-c100",
            "-q100",
            "-A10",
            "-z2",
            "-u",
            &q,
            "--delete-queues",
        ],
    );
    assert!(count(&s, "confirmed") > 0, "{s}");
    assert!(count(&s, "received") > 0, "{s}");
    assert!(s["confirm_latency_us"]["count"].as_u64() > Some(0), "{s}");
    assert!(s["e2e_latency_us"]["p99"].as_u64() > Some(0), "{s}");
    assert!(s["publish_rate"].as_f64() > Some(0.0), "{s}");
}

#[test]
fn a_counted_run_ends_when_every_message_is_confirmed_and_received() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let q = unique("perf-counted");
    let s = perf(
        &broker,
        &[
            "-x2", "-y1", "-s32", "-c50", "-C300", "-q100", "-A25", "-u", &q,
        ],
    );
    assert_eq!(count(&s, "sent"), 600, "{s}");
    assert_eq!(count(&s, "confirmed"), 600, "{s}");
    assert_eq!(count(&s, "received"), 600, "{s}");
}

#[test]
fn a_backlog_filled_by_one_run_is_drained_by_the_next() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let q = unique("perf-backlog");
    let fill = perf(
        &broker,
        &[
            "-x1",
            "-y0",
            "-s200",
            "--queue-type",
            "quorum",
            "-c100",
            "-C500",
            "-u",
            &q,
        ],
    );
    assert_eq!(count(&fill, "confirmed"), 500, "{fill}");
    assert_eq!(count(&fill, "received"), 0, "{fill}");
    let drain = perf(
        &broker,
        &[
            "-x0",
            "-y2",
            "--queue-type",
            "quorum",
            "-q50",
            "-A10",
            "--exit-when",
            "empty",
            "-u",
            &q,
            "--delete-queues",
        ],
    );
    assert_eq!(count(&drain, "received"), 500, "{drain}");
    assert_eq!(count(&drain, "sent"), 0, "{drain}");
}

#[test]
fn a_priority_backlog_is_drained_highest_priority_first() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let q = unique("perf-priority");
    let fill = perf(
        &broker,
        &[
            "-x1",
            "-y0",
            "-s100",
            "-f",
            "persistent",
            "--queue-args",
            "x-max-priority=10",
            "--random-priority",
            "9",
            "-c100",
            "-C1000",
            "-u",
            &q,
        ],
    );
    assert_eq!(count(&fill, "confirmed"), 1000, "{fill}");
    let drain = perf(
        &broker,
        &[
            "-x0",
            "-y1",
            "--queue-args",
            "x-max-priority=10",
            "-q100",
            "-A10",
            "--exit-when",
            "empty",
            "-u",
            &q,
            "--delete-queues",
        ],
    );
    assert_eq!(count(&drain, "received"), 1000, "{drain}");
    assert_eq!(count(&drain, "priority_deliveries"), 1000, "{drain}");
    assert_eq!(count(&drain, "priority_rises"), 0, "{drain}");
}

#[test]
fn a_stream_is_published_then_re_read_from_its_first_offset() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let q = unique("perf-stream");
    let stream = ["--queue-args", "x-queue-type=stream", "-u", &q];
    let publish = perf(
        &broker,
        &[&["-x1", "-y0", "-s100", "-c100", "-C1000"], &stream[..]].concat(),
    );
    assert_eq!(count(&publish, "confirmed"), 1000, "{publish}");
    // Read twice: a stream keeps what its consumers took.
    for _ in 0..2 {
        let reread = perf(
            &broker,
            &[
                &["-x0", "-y1", "-q100", "-A10", "-D1000"][..],
                &["--consumer-args", "x-stream-offset=first"],
                &stream[..],
            ]
            .concat(),
        );
        assert_eq!(count(&reread, "received"), 1000, "{reread}");
    }
}

#[test]
fn a_counted_run_over_stomp_gets_a_receipt_and_a_delivery_for_every_send() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let q = unique("perf-stomp");
    let stomp = format!("stomp://guest:guest@{}", broker.stomp_addr());
    // Cumulative `client` acks (-A 25), then individual ones.
    for ack_every in ["-A25", "-A1"] {
        let s = perf(
            &broker,
            &[
                "--protocol-uri",
                &stomp,
                "-x2",
                "-y1",
                "-s64",
                "--queue-type",
                "quorum",
                "-c50",
                "-C300",
                "-q100",
                ack_every,
                "-u",
                &q,
            ],
        );
        assert_eq!(count(&s, "sent"), 600, "{s}");
        assert_eq!(count(&s, "confirmed"), 600, "{s}");
        assert_eq!(count(&s, "received"), 600, "{s}");
        assert!(s["e2e_latency_us"]["count"].as_u64() >= Some(600), "{s}");
    }
    // Everything was acknowledged: nothing is left in the queue.
    let left = warren_tests::block_on(async {
        let conn = lapin::Connection::connect(broker.uri(), Default::default())
            .await
            .expect("connects");
        let ch = conn.create_channel().await.expect("channel");
        ch.queue_declare(
            q.as_str().into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("the queue is there")
        .message_count()
    });
    assert_eq!(left, 0);
}

#[test]
fn a_counted_run_over_mqtt_gets_a_puback_and_a_delivery_for_every_publish() {
    let broker = Broker::start_own(&[]).expect("warren starts");
    let q = unique("perf-mqtt");
    let mqtt = format!("mqtt://guest:guest@{}", broker.mqtt_addr());
    let s = perf(
        &broker,
        &[
            "--protocol-uri",
            &mqtt,
            "-x2",
            "-y1",
            "-s64",
            "-c50",
            "-C300",
            "-u",
            &q,
        ],
    );
    assert_eq!(count(&s, "sent"), 600, "{s}");
    assert_eq!(count(&s, "confirmed"), 600, "{s}");
    assert_eq!(count(&s, "received"), 600, "{s}");
    // The consumer's persistent session was ended: its queue (named after warren-perf's client
    // id) is gone.
    let queues = warren_tests::block_on(async {
        warren_tests::management::guest_api(&broker)
            .get("/api/queues")
            .await
            .expect("the management API answers")
    });
    let session_queues: Vec<&str> = queues
        .as_array()
        .expect("a list of queues")
        .iter()
        .filter_map(|q| q["name"].as_str())
        .filter(|n| n.starts_with("mqtt-subscription-warren-perf-"))
        .collect();
    assert_eq!(session_queues, Vec::<&str>::new(), "{queues}");
}
