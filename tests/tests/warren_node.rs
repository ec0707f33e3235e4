//! Behaviour of the `warren` process itself (flags, config file, timeouts, shutdown, memory
//! bounds). These always start their own node: they do not apply to an external broker.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use warren_tests::lapin::options::*;
use warren_tests::lapin::types::FieldTable;
use warren_tests::lapin::BasicProperties;
use warren_tests::{
    declare_passive, frame, long_str, method, reply_code, reply_text, short_str, within, Broker,
    RawConn, RawFrame,
};

fn own_node(extra: &[&str]) -> Broker {
    Broker::start_own(extra).expect("warren starts")
}

fn warren() -> Command {
    let bin = std::env::var("WARREN_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::env::var("CARGO_TARGET_DIR")
                .map(std::path::PathBuf::from)
                .unwrap_or_else(|_| {
                    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target")
                })
                .join("debug/warren")
        });
    Command::new(bin)
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
    c.send(b"AMQP\x00\x00\x09\x01");
    c.read_frame();
    let mut start_ok = long_str(b"");
    start_ok.extend(short_str("PLAIN"));
    start_ok.extend(long_str(b"\0guest\0guest"));
    start_ok.extend(short_str("en_US"));
    c.send(&frame(1, 0, &method(10, 11, &start_ok)));
    let Some(RawFrame::Method {
        class: 10,
        method: 30,
        args,
        ..
    }) = c.read_frame()
    else {
        panic!("tune")
    };
    let channel_max = u16::from_be_bytes([args[0], args[1]]);
    let frame_max = u32::from_be_bytes([args[2], args[3], args[4], args[5]]);
    let heartbeat = u16::from_be_bytes([args[6], args[7]]);
    assert_eq!((channel_max, frame_max, heartbeat), (12, 8192, 7));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_client_that_never_finishes_the_handshake_is_dropped() {
    let broker = own_node(&["--handshake-timeout-ms", "500"]);
    let mut c = RawConn::connect(broker.addr());
    c.send(b"AMQP\x00\x00\x09\x01");
    let started = Instant::now();
    assert!(c.is_closed_by_peer(), "socket closed");
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
    let (channel, code, text, _, _) = c.expect_close();
    assert_eq!((channel, code), (0, 320));
    assert_eq!(
        text,
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
    assert_eq!(reply_code(&err), Some(406));
    assert_eq!(
        reply_text(&err).unwrap(),
        "PRECONDITION_FAILED - message size 1001 is larger than configured max size 1000"
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
        let mut args = vec![0, 0];
        args.extend(short_str("stuck"));
        args.extend(short_str("ctag"));
        args.push(0b10); // no-ack
        args.extend(long_str(b""));
        c.send(&frame(1, 1, &method(60, 20, &args)));
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
