//! RabbitMQ's STOMP destinations and where they land in the AMQP model (the STOMP plugin's
//! guide, "Destinations"): `/exchange/NAME[/KEY]`, `/queue/NAME`, `/amq/queue/NAME`,
//! `/topic/KEY` (on `amq.topic`), `/temp-queue/NAME` (reply-to) and `/reply-queue/NAME` (the
//! temporary queue of another session). Names may be percent-encoded (`%2F` for a `/` in a
//! name), as RabbitMQ decodes them.

/// A parsed destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// `/exchange/NAME[/KEY]`: publish to exchange NAME with routing key KEY; a subscription
    /// binds its own queue to NAME with KEY as the binding key.
    Exchange { exchange: String, key: String },
    /// `/queue/NAME`: the queue NAME, declared (durable) on first use by SEND or SUBSCRIBE.
    Queue(String),
    /// `/amq/queue/NAME`: the queue NAME, which must exist (never declared).
    AmqQueue(String),
    /// `/topic/KEY`: `amq.topic` with routing (or binding) key KEY.
    Topic(String),
    /// `/temp-queue/NAME`: a queue private to the session, made when a SEND names it in
    /// `reply-to`; replies to it arrive as messages of subscription `/temp-queue/NAME`.
    TempQueue(String),
    /// `/reply-queue/NAME`: the queue NAME (another session's temporary queue), published to
    /// through the default exchange.
    ReplyQueue(String),
}

/// Why a destination header is not one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadDestination(pub String);

impl Destination {
    /// Parses a `destination` header.
    pub fn parse(text: &str) -> Result<Destination, BadDestination> {
        let bad = || BadDestination(text.to_owned());
        let one_name = |rest: &str| -> Result<String, BadDestination> {
            if rest.is_empty() || rest.contains('/') {
                return Err(bad());
            }
            decode(rest).ok_or_else(bad)
        };
        if let Some(rest) = text.strip_prefix("/exchange/") {
            let (name, key) = match rest.split_once('/') {
                Some((name, key)) => (name, key),
                None => (rest, ""),
            };
            if name.is_empty() || key.contains('/') {
                return Err(bad());
            }
            return Ok(Destination::Exchange {
                exchange: decode(name).ok_or_else(bad)?,
                key: decode(key).ok_or_else(bad)?,
            });
        }
        if let Some(rest) = text.strip_prefix("/queue/") {
            return Ok(Destination::Queue(one_name(rest)?));
        }
        if let Some(rest) = text.strip_prefix("/amq/queue/") {
            return Ok(Destination::AmqQueue(one_name(rest)?));
        }
        if let Some(rest) = text.strip_prefix("/topic/") {
            return Ok(Destination::Topic(one_name(rest)?));
        }
        if let Some(rest) = text.strip_prefix("/temp-queue/") {
            return Ok(Destination::TempQueue(one_name(rest)?));
        }
        if let Some(rest) = text.strip_prefix("/reply-queue/") {
            return Ok(Destination::ReplyQueue(one_name(rest)?));
        }
        Err(bad())
    }

    /// Where a SEND to this destination is published: exchange and routing key. A temporary
    /// queue is not a destination to send to (`None`).
    pub fn publish_to(&self) -> Option<(&str, &str)> {
        match self {
            Destination::Exchange { exchange, key } => Some((exchange, key)),
            Destination::Queue(q) | Destination::AmqQueue(q) | Destination::ReplyQueue(q) => {
                Some(("", q))
            }
            Destination::Topic(key) => Some(("amq.topic", key)),
            Destination::TempQueue(_) => None,
        }
    }
}

/// The `destination` header of a MESSAGE delivered from `exchange` with `routing_key`, as
/// RabbitMQ writes it: the default exchange's as `/queue/KEY`, `amq.topic`'s as `/topic/KEY`,
/// any other as `/exchange/NAME/KEY` (`/exchange/NAME` with an empty key).
pub fn of_delivery(exchange: &str, routing_key: &str) -> String {
    match exchange {
        "" => format!("/queue/{}", encode(routing_key)),
        "amq.topic" => format!("/topic/{}", encode(routing_key)),
        _ if routing_key.is_empty() => format!("/exchange/{}", encode(exchange)),
        _ => format!("/exchange/{}/{}", encode(exchange), encode(routing_key)),
    }
}

/// Percent-decoding of a name (`%2F` → `/`); `None` if an escape is broken or the result is not
/// UTF-8.
fn decode(text: &str) -> Option<String> {
    if !text.contains('%') {
        return Some(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Percent-encoding of what cannot stand in a destination's name, as RabbitMQ does it: `/`,
/// `%`, and bytes below 32 or above 127.
fn encode(name: &str) -> String {
    let plain = |b: u8| (32..=127).contains(&b) && b != b'/' && b != b'%';
    if name.bytes().all(plain) {
        return name.to_owned();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for b in name.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_destination_parses() {
        let cases = [
            (
                "/exchange/logs",
                Destination::Exchange {
                    exchange: "logs".into(),
                    key: "".into(),
                },
            ),
            (
                "/exchange/logs/a.b",
                Destination::Exchange {
                    exchange: "logs".into(),
                    key: "a.b".into(),
                },
            ),
            ("/queue/jobs", Destination::Queue("jobs".into())),
            ("/amq/queue/jobs", Destination::AmqQueue("jobs".into())),
            ("/topic/a.*.c", Destination::Topic("a.*.c".into())),
            ("/temp-queue/r", Destination::TempQueue("r".into())),
            (
                "/reply-queue/amq.gen-x",
                Destination::ReplyQueue("amq.gen-x".into()),
            ),
            ("/queue/a%2Fb", Destination::Queue("a/b".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(Destination::parse(text), Ok(expected), "{text}");
        }
        for bad in [
            "",
            "/queue/",
            "/queue/a/b",
            "/foo/bar",
            "queue/a",
            "/exchange/",
            "/exchange/x/a/b",
            "/queue/a%zz",
        ] {
            assert_eq!(
                Destination::parse(bad),
                Err(BadDestination(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_delivery_names_its_destination_as_rabbitmq_does() {
        assert_eq!(of_delivery("", "jobs"), "/queue/jobs");
        assert_eq!(of_delivery("amq.topic", "a.b"), "/topic/a.b");
        assert_eq!(of_delivery("logs", "k"), "/exchange/logs/k");
        assert_eq!(of_delivery("logs", "a/b"), "/exchange/logs/a%2Fb");
        assert_eq!(of_delivery("logs", ""), "/exchange/logs");
        assert_eq!(of_delivery("", "é"), "/queue/%C3%A9");
        // What a name encodes, parsing decodes.
        assert_eq!(
            Destination::parse(&of_delivery("", "50%/x")),
            Ok(Destination::Queue("50%/x".into()))
        );
    }
}
