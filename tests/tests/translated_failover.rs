//! A node killed under MQTT and STOMP clients (issue 20): a persistent MQTT session and a
//! durable STOMP subscription are replicated queues, so what is published for them while their
//! clients' node is dead waits for them, and the clients find it through another node.

use std::time::Duration;

use warren_mqtt::{QoS, ReasonCode};
use warren_stomp::{Command, Frame};
use warren_tests::cluster::Cluster;
use warren_tests::mqtt::MqttClient;
use warren_tests::stomp::StompClient;
use warren_tests::unique;

const ELECTION: Duration = Duration::from_secs(30);
const MESSAGES: usize = 20;

fn durable_subscription(topic: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .with_header("id", "watcher")
        .with_header("destination", format!("/topic/{topic}.*.temp"))
        .with_header("durable", "true")
        .with_header("auto-delete", "false")
        .with_header("ack", "client-individual")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_persistent_mqtt_session_and_a_durable_stomp_subscription_outlive_their_node() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes");
    // Both clients on the leader: its death also moves the cluster's decider.
    let doomed = cluster.wait_for_leader(ELECTION).expect("a leader");
    let survivors: Vec<usize> = (1..=3).filter(|&i| i != doomed).collect();
    let topic = unique("plant");
    let device_id = format!("{topic}-device");

    let mut device = MqttClient::connect(cluster.node(doomed).mqtt_addr(), &device_id, false)
        .await
        .expect("the device connects");
    assert!(!device.session_present, "a new session");
    let granted = device
        .subscribe(&format!("{topic}/+/temp"), QoS::AtLeastOnce)
        .await
        .expect("SUBACK");
    assert_eq!(granted, vec![ReasonCode::granted(QoS::AtLeastOnce)]);
    let mut watcher = StompClient::connect(cluster.node(doomed).stomp_addr(), "guest", "guest")
        .await
        .expect("the watcher connects");
    watcher
        .send_confirmed(durable_subscription(&topic), "subscribed")
        .await
        .expect("SUBSCRIBE answered");
    // The bindings are on every node before the node dies (and before a publisher elsewhere).
    cluster
        .wait_applied_everywhere(ELECTION)
        .expect("replicated");

    // The node dies under both clients.
    cluster.node_mut(doomed).kill9().expect("kill -9");
    drop(device);
    drop(watcher);
    let leader = cluster.wait_for_leader(ELECTION).expect("a new leader");
    assert!(survivors.contains(&leader));

    // Messages published meanwhile through a survivor, each confirmed by a PUBACK.
    let mut sensor = MqttClient::connect(
        cluster.node(survivors[0]).mqtt_addr(),
        &format!("{topic}-sensor"),
        true,
    )
    .await
    .expect("the sensor connects");
    for i in 0..MESSAGES {
        sensor
            .publish_confirmed(&format!("{topic}/{i}/temp"), i.to_string().as_bytes())
            .await
            .expect("PUBACK");
    }
    sensor.disconnect().await.expect("DISCONNECT");

    // The device comes back through the other survivor: its session is there, and every
    // message with it.
    let mut device = MqttClient::connect(cluster.node(survivors[1]).mqtt_addr(), &device_id, false)
        .await
        .expect("the device reconnects");
    assert!(device.session_present, "the session outlived its node");
    let mut got = Vec::new();
    for _ in 0..MESSAGES {
        let m = device
            .next_message()
            .await
            .expect("a message for the device");
        got.push(
            String::from_utf8_lossy(&m.payload)
                .parse::<usize>()
                .expect("a number"),
        );
    }
    got.sort_unstable();
    assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>());

    // So does the STOMP watcher, subscribing again with its id.
    let mut watcher =
        StompClient::connect(cluster.node(survivors[1]).stomp_addr(), "guest", "guest")
            .await
            .expect("the watcher reconnects");
    watcher
        .send_confirmed(durable_subscription(&topic), "again")
        .await
        .expect("SUBSCRIBE answered");
    let mut got = Vec::new();
    for _ in 0..MESSAGES {
        let m = watcher.next().await.expect("a message for the watcher");
        assert_eq!(m.command, Command::Message, "{m:?}");
        let ack = m.header("ack").expect("an ack header").to_owned();
        watcher
            .send(Frame::new(Command::Ack).with_header("id", ack))
            .await
            .expect("ACK");
        got.push(
            String::from_utf8_lossy(&m.body)
                .parse::<usize>()
                .expect("a number"),
        );
    }
    got.sort_unstable();
    assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>());
}
