//! An MQTT message's properties as AMQP properties and back, as RabbitMQ maps them (its 3.x
//! headers `x-mqtt-publish-qos` and `x-mqtt-dup`; its 4.x mapping of MQTT 5's properties).

use bytes::Bytes;
use warren_wire::{BasicProperties, FieldTable, FieldValue, ShortStr};

use crate::topic;
use crate::{Properties, QoS};

/// MQTT 5's user properties, in order and with repeated names, as an array of
/// `{name, value}` tables (they are also headers of their own, the first of a name winning).
const USER_PROPERTIES_HEADER: &str = "x-mqtt-user-properties";
/// MQTT 5's payload format indicator.
const PAYLOAD_FORMAT_HEADER: &str = "x-mqtt-payload-format-indicator";
/// MQTT 5's correlation data when it is not UTF-8 text (RabbitMQ 4's header).
const CORRELATION_HEADER: &str = "x-correlation-id";

/// The AMQP properties of an MQTT PUBLISH (or will) received at `now`, as RabbitMQ makes
/// them: persistent for QoS 1 and 2, the `x-mqtt-publish-qos` (QoS 2 as 1) and `x-mqtt-dup`
/// headers; from 5.0's properties, as RabbitMQ 4: the content type, correlation data (as
/// `correlation_id`, or header `x-correlation-id` when it is not text), response topic (header
/// `x-reply-to-topic`, as a routing key), message expiry (as `expiration`, ms, with the
/// `timestamp` it counts from) and user properties (as headers).
pub(super) fn amqp_properties(qos: QoS, dup: bool, p: &Properties, now: u64) -> BasicProperties {
    let qos = qos.min(QoS::AtLeastOnce);
    let mut headers = FieldTable::default();
    headers.insert("x-mqtt-publish-qos", FieldValue::U8(qos.as_u8()));
    headers.insert("x-mqtt-dup", FieldValue::Bool(dup));
    for (name, value) in p.user_properties.iter().rev() {
        headers.insert(name.as_str(), FieldValue::LongStr(value.as_str().into()));
    }
    if !p.user_properties.is_empty() {
        let all = p
            .user_properties
            .iter()
            .map(|(name, value)| {
                let mut pair = FieldTable::default();
                pair.insert("name", FieldValue::LongStr(name.as_str().into()));
                pair.insert("value", FieldValue::LongStr(value.as_str().into()));
                FieldValue::Table(pair)
            })
            .collect();
        headers.insert(USER_PROPERTIES_HEADER, FieldValue::Array(all));
    }
    if let Some(t) = &p.response_topic {
        headers.insert(
            "x-reply-to-topic",
            FieldValue::LongStr(topic::topic_to_routing_key(t).into()),
        );
    }
    if let Some(indicator) = p.payload_format_indicator {
        headers.insert(PAYLOAD_FORMAT_HEADER, FieldValue::U8(u8::from(indicator)));
    }
    let correlation_id = match &p.correlation_data {
        Some(c) => match std::str::from_utf8(c) {
            Ok(text) => Some(ShortStr::from(text)),
            Err(_) => {
                headers.insert(CORRELATION_HEADER, FieldValue::ByteArray(c.clone()));
                None
            }
        },
        None => None,
    };
    BasicProperties {
        delivery_mode: Some(if qos == QoS::AtMostOnce { 1 } else { 2 }),
        content_type: p.content_type.as_deref().map(ShortStr::from),
        correlation_id,
        expiration: p
            .message_expiry_interval
            .map(|s| ShortStr::from((u64::from(s) * 1000).to_string())),
        timestamp: p.message_expiry_interval.map(|_| now / 1000),
        headers: Some(headers),
        ..BasicProperties::default()
    }
}

/// 5.0 properties of a delivery at `now` from its AMQP properties (the reverse of
/// [`amqp_properties`]; the message expiry is what is left of it).
pub(super) fn mqtt_properties(p: &BasicProperties, now: u64) -> Properties {
    let header = |name: &str| p.headers.as_ref().and_then(|h| h.get(name));
    let correlation_data = match header(CORRELATION_HEADER) {
        Some(FieldValue::ByteArray(b)) => Some(b.clone()),
        _ => p
            .correlation_id
            .as_ref()
            .map(|c| Bytes::copy_from_slice(c.as_bytes())),
    };
    let message_expiry_interval = p
        .expiration
        .as_ref()
        .and_then(|e| e.as_str().parse::<u64>().ok())
        .map(|ms| {
            let waited = p
                .timestamp
                .map_or(0, |t| (now / 1000).saturating_sub(t).saturating_mul(1000));
            let left = ms.saturating_sub(waited).max(1000);
            u32::try_from(left.div_ceil(1000)).unwrap_or(u32::MAX)
        });
    let mut out = Properties {
        content_type: p.content_type.as_ref().map(|c| c.to_string()),
        correlation_data,
        response_topic: header("x-reply-to-topic")
            .and_then(FieldValue::as_str)
            .map(topic::routing_key_to_topic),
        payload_format_indicator: header(PAYLOAD_FORMAT_HEADER)
            .and_then(FieldValue::as_i64)
            .map(|i| i != 0),
        message_expiry_interval,
        ..Properties::default()
    };
    if let Some(FieldValue::Array(all)) = header(USER_PROPERTIES_HEADER) {
        for pair in all {
            let Some(t) = pair.as_table() else { continue };
            let field = |n: &str| t.get(n).and_then(FieldValue::as_str).map(str::to_owned);
            if let (Some(name), Some(value)) = (field("name"), field("value")) {
                out.user_properties.push((name, value));
            }
        }
    } else if let Some(headers) = &p.headers {
        // From AMQP: its string headers, but not the ones this mapping uses.
        for (name, value) in headers.iter() {
            // Dead-lettering's headers (a delayed will comes through it) are no user's.
            if name.starts_with("x-mqtt-")
                || name.starts_with("x-first-death-")
                || name.starts_with("x-last-death-")
                || name == "x-reply-to-topic"
                || name == CORRELATION_HEADER
            {
                continue;
            }
            if let Some(text) = value.as_str() {
                out.user_properties.push((name.to_owned(), text.to_owned()));
            }
        }
    }
    out
}
