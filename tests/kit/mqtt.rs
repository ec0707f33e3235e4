//! A small MQTT 3.1.1 client for the end-to-end tests, on `warren-mqtt`'s packet codec: packets
//! written and read whole, a step timeout on every read. (Real MQTT clients are tested from
//! Python with paho-mqtt, tests/python/test_mqtt.py, and in Chromium with mqtt.js.)

use std::collections::VecDeque;
use std::net::SocketAddr;

use anyhow::{bail, Context};
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_mqtt::{
    encode, Connect, Decoder, Packet, Properties, PubResponse, Publish, QoS, ReasonCode, Subscribe,
    Subscription, SubscriptionOptions, Version, MAX_PACKET_SIZE_AUTHENTICATED,
};

use crate::STEP;

/// One MQTT connection, logged in.
pub struct MqttClient {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    next_id: u16,
    /// PUBLISH packets read while waiting for an acknowledgement.
    pending: VecDeque<Publish>,
    /// CONNACK's session present flag.
    pub session_present: bool,
}

impl MqttClient {
    /// Connects as guest with `client_id` (`clean` session or not), answered by CONNACK 0.
    pub async fn connect(
        addr: SocketAddr,
        client_id: &str,
        clean: bool,
    ) -> anyhow::Result<MqttClient> {
        let stream = tokio::time::timeout(STEP, TcpStream::connect(addr))
            .await
            .context("connecting to the MQTT port timed out")??;
        let mut c = MqttClient {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(MAX_PACKET_SIZE_AUTHENTICATED),
            next_id: 1,
            pending: VecDeque::new(),
            session_present: false,
        };
        c.send(&Packet::Connect(Box::new(Connect {
            version: Version::V3_1_1,
            clean_start: clean,
            keep_alive: 60,
            client_id: client_id.to_owned(),
            will: None,
            username: Some("guest".into()),
            password: Some(Bytes::from_static(b"guest")),
            properties: Properties::default(),
        })))
        .await?;
        match c.read().await? {
            Packet::ConnAck(ack) if ack.reason_code == ReasonCode::SUCCESS => {
                c.session_present = ack.session_present;
                Ok(c)
            }
            other => bail!("expected CONNACK 0, got {other:?}"),
        }
    }

    async fn send(&mut self, packet: &Packet) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        encode(packet, Version::V3_1_1, &mut out)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    async fn read(&mut self) -> anyhow::Result<Packet> {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf)? {
                return Ok(p);
            }
            let n = tokio::time::timeout(STEP, self.stream.read_buf(&mut self.buf))
                .await
                .context("no packet from the server in time")??;
            if n == 0 {
                bail!("the server closed the connection");
            }
        }
    }

    fn packet_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Subscribes to `filter` at `qos`, waiting for the SUBACK; returns the granted codes.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> anyhow::Result<Vec<ReasonCode>> {
        let packet_id = self.packet_id();
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            subscriptions: vec![Subscription {
                filter: filter.to_owned(),
                options: SubscriptionOptions {
                    qos,
                    ..SubscriptionOptions::default()
                },
            }],
            properties: Properties::default(),
        }))
        .await?;
        loop {
            match self.read().await? {
                Packet::SubAck(ack) if ack.packet_id == packet_id => return Ok(ack.reason_codes),
                Packet::Publish(p) => self.pending.push_back(p),
                other => bail!("expected SUBACK, got {other:?}"),
            }
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK (the broker has the message).
    pub async fn publish_confirmed(&mut self, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
        let packet_id = self.packet_id();
        self.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.to_owned(),
            packet_id: Some(packet_id),
            properties: Properties::default(),
            payload: Bytes::copy_from_slice(payload),
        }))
        .await?;
        loop {
            match self.read().await? {
                Packet::PubAck(ack) if ack.packet_id == packet_id => return Ok(()),
                Packet::Publish(p) => self.pending.push_back(p),
                other => bail!("expected PUBACK, got {other:?}"),
            }
        }
    }

    /// The next message delivered (acknowledged at once when it is QoS 1).
    pub async fn next_message(&mut self) -> anyhow::Result<Publish> {
        let p = match self.pending.pop_front() {
            Some(p) => p,
            None => loop {
                match self.read().await? {
                    Packet::Publish(p) => break p,
                    Packet::PingResp => {}
                    other => bail!("expected PUBLISH, got {other:?}"),
                }
            },
        };
        if let Some(packet_id) = p.packet_id {
            self.send(&Packet::PubAck(PubResponse {
                packet_id,
                reason_code: ReasonCode::SUCCESS,
                properties: Properties::default(),
            }))
            .await?;
        }
        Ok(p)
    }

    /// DISCONNECT, and the socket closes.
    pub async fn disconnect(mut self) -> anyhow::Result<()> {
        self.send(&Packet::Disconnect(warren_mqtt::Disconnect {
            reason_code: ReasonCode::NORMAL_DISCONNECTION,
            properties: Properties::default(),
        }))
        .await?;
        let _ = self.stream.shutdown().await;
        Ok(())
    }
}
