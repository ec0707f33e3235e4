//! Behaviour of the `warren` process itself (flags, config file, timeouts, shutdown, memory
//! bounds). These always start their own node: they do not apply to an external broker.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::BasicProperties;
use warren_tests::raw::{method_frame, Args, PROTOCOL_HEADER};
use warren_tests::{closed_with, declare_passive, warren_bin, within, Broker, RawConn};

fn own_node(extra: &[&str]) -> Broker {
    Broker::start_own(extra).expect("warren starts")
}

fn warren() -> Command {
    Command::new(warren_bin())
}

#[test]
fn help_explains_every_flag() {
    let out = warren().arg("--help").output().expect("warren --help runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--config",
        "--bind",
        "--port",
        "--data-dir",
        "--heartbeat",
        "--frame-max",
        "--channel-max",
        "--handshake-timeout-ms",
        "--max-message-size",
        "--default-user",
        "--default-pass",
        "--loopback-users",
        "--log",
    ] {
        assert!(help.contains(flag), "--help mentions {flag}");
    }
    assert!(help.contains("[default: 5672]") && help.contains("[default: ./data]"));
}

#[test]
fn a_config_file_sets_the_defaults_flags_override() {
    let dir = std::env::temp_dir().join(format!("warren-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warren.toml");
    let mut f = std::fs::File::create(&path).unwrap();
    writeln!(f, "heartbeat = 7\nframe_max = 8192\nchannel_max = 10").unwrap();
    let broker = own_node(&["--config", path.to_str().unwrap(), "--channel-max", "12"]);
    let mut c = RawConn::connect(broker.addr());
    c.send(PROTOCOL_HEADER);
    c.expect_method(0, (10, 10));
    c.send_start_ok_plain("guest", "guest");
    let tune = c.expect_method(0, (10, 30));
    let mut args = tune.args();
    let (channel_max, frame_max, heartbeat) = (args.u16(), args.u32(), args.u16());
    assert_eq!((channel_max, frame_max, heartbeat), (12, 8192, 7));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let broker = own_node(&["--handshake-timeout-ms", "500"]);
    let mut c = RawConn::connect(broker.addr());
    c.send(PROTOCOL_HEADER);
    let started = Instant::now();
    let frames = c.expect_disconnect(Duration::from_secs(4));
    assert_eq!(frames.len(), 1, "connection.start only: {frames:?}");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn sigterm_closes_clients_with_320_connection_forced() {
    let mut broker = own_node(&[]);
    let mut c = RawConn::open(broker.addr());
    let pid = broker.pid().expect("own process");
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let close = c.expect_server_close(Duration::from_secs(10));
    assert_eq!((close.channel, close.reply_code), (0, 320));
    assert_eq!(
        close.reply_text,
        "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while broker.is_running() {
        assert!(Instant::now() < deadline, "warren exits after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_over_max_message_size_closes_only_its_channel() {
    let broker = own_node(&["--max-message-size", "1000"]);
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = within(ch.queue_declare(
        "".into(),
        QueueDeclareOptions {
            exclusive: true,
            ..Default::default()
        },
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let c = within(ch.basic_publish(
        "".into(),
        q.name().clone(),
        BasicPublishOptions::default(),
        &[7u8; 1001],
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let err = within(c).await.unwrap_err();
    assert_eq!(
        closed_with(&err),
        (
            406,
            "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
                .into()
        )
    );
    let ch = within(conn.create_channel()).await.unwrap();
    within(ch.basic_publish(
        "".into(),
        q.name().clone(),
        BasicPublishOptions::default(),
        &[7u8; 1000],
        BasicProperties::default(),
    ))
    .await
    .unwrap();
    let m = within(ch.basic_get(q.name().clone(), BasicGetOptions { no_ack: true }))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.delivery.data.len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_consumer_that_stops_reading_does_not_get_the_whole_queue_buffered() {
    let broker = own_node(&[]);
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.unwrap();
    let q = within(ch.queue_declare(
        "stuck".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap();
    within(ch.confirm_select(ConfirmSelectOptions::default()))
        .await
        .unwrap();
    let body = vec![1u8; 1 << 20];
    for _ in 0..64 {
        within(ch.basic_publish(
            "".into(),
            q.name().clone(),
            BasicPublishOptions::default(),
            &body,
            BasicProperties::default(),
        ))
        .await
        .unwrap();
    }
    within(ch.wait_for_confirms()).await.unwrap();
    // A raw client consumes with no-ack and no prefetch limit, then never reads its socket.
    let addr = broker.addr();
    let stuck = tokio::task::spawn_blocking(move || {
        let mut c = RawConn::open(addr);
        let args = Args::new()
            .u16(0)
            .short("stuck")
            .short("ctag")
            .bits(&[false, true, false, false]) // no-local, no-ack, exclusive, no-wait
            .empty_table();
        c.send(&method_frame(1, 60, 20, &args.0));
        c
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let left = declare_passive(&ch, "stuck").await.unwrap().message_count();
    // Socket buffers, the 4 MiB outbound high watermark and 1 MiB of delivery credit hold a
    // handful of 1 MiB messages; the rest must still be waiting in the queue.
    assert!(
        left >= 40,
        "only {} of 64 messages left the queue for a client that reads nothing",
        64 - left
    );
    drop(stuck);
}
