//! STOMP headers ↔ AMQP 0-9-1 basic properties, both ways, as RabbitMQ's STOMP guide lists them:
//! `content-type`, `content-encoding`, `persistent` (delivery mode 2), `priority`,
//! `correlation-id`, `reply-to`, `expiration`, `amqp-message-id` (the AMQP `message-id`: STOMP's
//! own `message-id` is the server's id of a delivery), `timestamp`, `type`, `user-id`, `app-id`;
//! every other header of a SEND goes into the AMQP headers table, and the table's entries come
//! back as headers of a MESSAGE.

use warren_wire::{BasicProperties, FieldTable, FieldValue, ShortStr};

/// The headers of a SEND that are AMQP properties.
const PROPERTY_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "persistent",
    "priority",
    "correlation-id",
    "reply-to",
    "expiration",
    "amqp-message-id",
    "timestamp",
    "type",
    "user-id",
    "app-id",
];

/// The destinations a `reply-to` may name as it is; any other text is a queue's name, shown as
/// `/reply-queue/NAME`.
const REPLY_TO_PREFIXES: &[&str] = &[
    "/exchange/",
    "/topic/",
    "/queue/",
    "/amq/queue/",
    "/reply-queue/",
    "/temp-queue/",
];

/// The AMQP properties of a SEND's headers, as RabbitMQ makes them: the property headers
/// (of a repeated header, the first counts), and every other header but `destination` in the
/// headers table as a string, last first (`receipt`, `content-length` and `transaction`
/// included); the table is there, empty, when there is no such header. `reply_to` is the AMQP
/// reply-to already resolved (a `/temp-queue/` becomes the session's queue name).
pub(crate) fn of_send(headers: &[(String, String)], reply_to: Option<String>) -> BasicProperties {
    let mut p = BasicProperties::default();
    let first = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let short = |name: &str| first(name).map(ShortStr::from);
    p.content_type = short("content-type");
    p.content_encoding = short("content-encoding");
    if first("persistent").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        p.delivery_mode = Some(2);
    }
    p.priority = first("priority").and_then(|v| v.trim().parse().ok());
    p.correlation_id = short("correlation-id");
    p.reply_to = reply_to.map(ShortStr::from);
    p.expiration = short("expiration");
    p.message_id = short("amqp-message-id");
    p.timestamp = first("timestamp").and_then(|v| v.trim().parse().ok());
    p.kind = short("type");
    p.user_id = short("user-id");
    p.app_id = short("app-id");
    let mut table = FieldTable::default();
    for (name, value) in headers.iter().rev() {
        if name == "destination" || PROPERTY_HEADERS.contains(&name.as_str()) {
            continue;
        }
        table.insert(name.as_str(), FieldValue::LongStr(value.as_str().into()));
    }
    p.headers = Some(table);
    p
}

/// The headers a MESSAGE carries for a delivery's properties, appended to `out` as RabbitMQ
/// writes them: the headers table's strings and integers in table order, then the properties
/// from `app-id` back to `content-type`. `persistent` is `true` for delivery mode 2 and the
/// mode's number otherwise; a `reply-to` that names a queue shows as `/reply-queue/NAME`.
pub(crate) fn to_headers(p: &BasicProperties, out: &mut Vec<(String, String)>) {
    let mut put = |name: &str, value: String| out.push((name.to_owned(), value));
    if let Some(table) = &p.headers {
        for (name, value) in table.iter() {
            if let Some(text) = header_text(value) {
                put(name, text);
            }
        }
    }
    if let Some(v) = &p.app_id {
        put("app-id", v.to_string());
    }
    if let Some(v) = &p.user_id {
        put("user-id", v.to_string());
    }
    if let Some(v) = &p.kind {
        put("type", v.to_string());
    }
    if let Some(v) = p.timestamp {
        put("timestamp", v.to_string());
    }
    if let Some(v) = &p.message_id {
        put("amqp-message-id", v.to_string());
    }
    if let Some(v) = &p.expiration {
        put("expiration", v.to_string());
    }
    if let Some(v) = &p.reply_to {
        let v = v.as_str();
        if REPLY_TO_PREFIXES.iter().any(|prefix| v.starts_with(prefix)) {
            put("reply-to", v.to_owned());
        } else {
            put("reply-to", format!("/reply-queue/{v}"));
        }
    }
    if let Some(v) = &p.correlation_id {
        put("correlation-id", v.to_string());
    }
    if let Some(v) = p.priority {
        put("priority", v.to_string());
    }
    match p.delivery_mode {
        Some(2) => put("persistent", "true".to_owned()),
        Some(mode) => put("persistent", mode.to_string()),
        None => {}
    }
    if let Some(v) = &p.content_encoding {
        put("content-encoding", v.to_string());
    }
    if let Some(v) = &p.content_type {
        put("content-type", v.to_string());
    }
}

/// A headers-table value as header text: strings as they are, integers in decimal; other
/// values (booleans, floats, decimals, timestamps, arrays, tables, byte arrays, voids) have no
/// text in RabbitMQ's STOMP and are left out.
fn header_text(value: &FieldValue) -> Option<String> {
    Some(match value {
        FieldValue::LongStr(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        FieldValue::I8(n) => n.to_string(),
        FieldValue::U8(n) => n.to_string(),
        FieldValue::I16(n) => n.to_string(),
        FieldValue::U16(n) => n.to_string(),
        FieldValue::I32(n) => n.to_string(),
        FieldValue::U32(n) => n.to_string(),
        FieldValue::I64(n) => n.to_string(),
        FieldValue::Bool(_)
        | FieldValue::F32(_)
        | FieldValue::F64(_)
        | FieldValue::Timestamp(_)
        | FieldValue::Decimal { .. }
        | FieldValue::ByteArray(_)
        | FieldValue::Array(_)
        | FieldValue::Table(_)
        | FieldValue::Void => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_send_s_headers_become_properties_and_the_rest_the_headers_table() {
        let p = of_send(
            &headers(&[
                ("destination", "/queue/a"),
                ("receipt", "r1"),
                ("content-type", "text/plain"),
                ("persistent", "true"),
                ("priority", "5"),
                ("correlation-id", "c1"),
                ("expiration", "60000"),
                ("amqp-message-id", "m1"),
                ("x-foo", "bar"),
                ("x-foo", "ignored: the first counts"),
                ("content-length", "3"),
            ]),
            Some("amq.gen-1".into()),
        );
        // Last first, the first of a repeated header winning.
        let mut table = FieldTable::default();
        table.insert("content-length", FieldValue::LongStr("3".into()));
        table.insert("x-foo", FieldValue::LongStr("bar".into()));
        table.insert("receipt", FieldValue::LongStr("r1".into()));
        assert_eq!(
            p,
            BasicProperties {
                content_type: Some("text/plain".into()),
                delivery_mode: Some(2),
                priority: Some(5),
                correlation_id: Some("c1".into()),
                reply_to: Some("amq.gen-1".into()),
                expiration: Some("60000".into()),
                message_id: Some("m1".into()),
                headers: Some(table),
                ..BasicProperties::default()
            }
        );
    }

    #[test]
    fn a_delivery_s_properties_become_headers() {
        let mut table = FieldTable::default();
        table.insert("x-n", FieldValue::I32(7));
        table.insert("x-s", FieldValue::LongStr("v".into()));
        table.insert("x-t", FieldValue::Table(FieldTable::default()));
        table.insert("x-b", FieldValue::Bool(true));
        let p = BasicProperties {
            content_type: Some("application/json".into()),
            delivery_mode: Some(2),
            reply_to: Some("amq.gen-1".into()),
            message_id: Some("m1".into()),
            headers: Some(table),
            ..BasicProperties::default()
        };
        let mut out = Vec::new();
        to_headers(&p, &mut out);
        assert_eq!(
            out,
            headers(&[
                ("x-n", "7"),
                ("x-s", "v"),
                ("amqp-message-id", "m1"),
                ("reply-to", "/reply-queue/amq.gen-1"),
                ("persistent", "true"),
                ("content-type", "application/json"),
            ])
        );
        let mut out = Vec::new();
        let transient = BasicProperties {
            delivery_mode: Some(1),
            reply_to: Some("/queue/elsewhere".into()),
            ..BasicProperties::default()
        };
        to_headers(&transient, &mut out);
        assert_eq!(
            out,
            headers(&[("reply-to", "/queue/elsewhere"), ("persistent", "1")])
        );
    }
}
