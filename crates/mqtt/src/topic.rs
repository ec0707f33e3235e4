//! MQTT topic names and topic filters: their validation (spec §4.7), how a filter matches a
//! name, and their mapping to routing and binding keys of `amq.topic`, where RabbitMQ's MQTT
//! plugin routes every MQTT message. Which exchange, and who may publish where, is the
//! session's.
//!
//! The mapping is RabbitMQ's (`rabbit_mqtt_util`, 3.x and 4.x): MQTT's level separator `/`
//! becomes AMQP's word separator `.` and `+` (one level) becomes `*` (one word) on the way to
//! AMQP; `.` becomes `/` and `*` becomes `+` on the way back; `#` stays `#` and matches the
//! parent level on both sides (`a/#` matches `a`, as `a.#` matches `a`). So a `.` in an MQTT
//! topic is a level separator for AMQP, and comes back to MQTT subscribers as `/`
//! (`sensors/t.1` is routed as `sensors.t.1`, which a subscriber of `sensors/t/1` gets as
//! `sensors/t/1`): RabbitMQ's documentation tells users to avoid dots in MQTT topics, and
//! slashes in AMQP routing keys, and Warren keeps its behaviour so that mixed MQTT and AMQP
//! applications see the same keys on either broker.

use thiserror::Error;

/// The longest topic name or filter: a UTF-8 string field.
const MAX_TOPIC_LENGTH: usize = u16::MAX as usize;

/// Why a string is not a valid topic name or topic filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum TopicError {
    /// Topic names and filters are at least one character long ([MQTT-4.7.3-1]).
    #[error("it is empty")]
    Empty,
    /// Topic names and filters are at most 65 535 bytes of UTF-8 ([MQTT-4.7.3-3]).
    #[error("it is {0} bytes long, longer than 65 535")]
    TooLong(usize),
    /// Topic names and filters never hold U+0000 ([MQTT-4.7.3-2]).
    #[error("it holds U+0000")]
    NulCharacter,
    /// A topic name never holds a wildcard, `+` or `#` ([MQTT-3.3.2-2]).
    #[error("a topic name holds a wildcard")]
    WildcardInTopicName,
    /// A wildcard shares its level with other characters ([MQTT-4.7.1-2], [MQTT-4.7.1-3]).
    #[error("a wildcard is not alone in its level")]
    WildcardNotAlone,
    /// `#` is not the last level of the filter ([MQTT-4.7.1-2]).
    #[error("'#' is not the last level")]
    MultiLevelWildcardNotLast,
    /// A shared subscription (5.0) lacks a share name or a filter after it, or its share name
    /// holds a wildcard ([MQTT-4.8.2-1], [MQTT-4.8.2-2]).
    #[error("a shared subscription is not '$share/{{share name}}/{{filter}}'")]
    InvalidSharedSubscription,
}

fn validate_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_LENGTH {
        return Err(TopicError::TooLong(s.len()));
    }
    if s.contains('\0') {
        return Err(TopicError::NulCharacter);
    }
    Ok(())
}

/// Checks `topic` may name a topic, as in a PUBLISH or a will: not empty, no wildcard.
pub fn validate_topic_name(topic: &str) -> Result<(), TopicError> {
    validate_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInTopicName);
    }
    Ok(())
}

/// Checks `filter` may be subscribed to: not empty, `+` alone in its level, `#` alone in the
/// last level. A shared subscription's structure is [`split_shared_subscription`]'s to check.
pub fn validate_topic_filter(filter: &str) -> Result<(), TopicError> {
    validate_common(filter)?;
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        if level.contains('#') {
            if level != "#" {
                return Err(TopicError::WildcardNotAlone);
            }
            if levels.peek().is_some() {
                return Err(TopicError::MultiLevelWildcardNotLast);
            }
        }
        if level.contains('+') && level != "+" {
            return Err(TopicError::WildcardNotAlone);
        }
    }
    Ok(())
}

/// Splits a 5.0 shared subscription `$share/{share name}/{filter}` into its share name and
/// filter; `Ok(None)` for a filter that does not start with `$share/`. Before 5.0 such a filter
/// is an ordinary one, and this is not to be called.
pub fn split_shared_subscription(filter: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = filter.strip_prefix("$share/") else {
        return Ok(None);
    };
    let Some((share_name, inner)) = rest.split_once('/') else {
        return Err(TopicError::InvalidSharedSubscription);
    };
    if share_name.is_empty() || share_name.contains(['+', '#']) || inner.is_empty() {
        return Err(TopicError::InvalidSharedSubscription);
    }
    validate_topic_filter(inner)?;
    Ok(Some((share_name, inner)))
}

/// Whether `topic` starts with `$`: such topics are the server's (`$SYS/…`), and a filter
/// starting with a wildcard does not match them ([MQTT-4.7.2-1]).
pub fn is_dollar_topic(topic: &str) -> bool {
    topic.starts_with('$')
}

/// Whether the (valid) topic filter `filter` matches the (valid) topic name `topic` (§4.7):
/// `+` matches one whole level, `#` any number of levels including none (so `a/#` matches
/// `a`), and a topic starting with `$` is not matched by a filter starting with a wildcard.
/// For a shared subscription pass the filter after its share name.
pub fn filter_matches(filter: &str, topic: &str) -> bool {
    if is_dollar_topic(topic) && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// `s` with `separator` replaced by `to` and, if given, one wildcard by another.
fn map_chars(s: &str, separator: char, to: char, wildcard: Option<(char, char)>) -> String {
    s.chars()
        .map(|c| match wildcard {
            _ if c == separator => to,
            Some((from, into)) if c == from => into,
            _ => c,
        })
        .collect()
}

/// The routing key a message published to the MQTT topic name `topic` is published with on
/// `amq.topic`: `/` becomes `.` (`sensors/temp.c` → `sensors.temp.c`). The topic is not
/// validated; AMQP's 255-byte limit on routing keys is the caller's to check.
pub fn topic_to_routing_key(topic: &str) -> String {
    map_chars(topic, '/', '.', None)
}

/// The MQTT topic name a message routed with `routing_key` is delivered with: `.` becomes `/`
/// and `*` becomes `+`, as RabbitMQ delivers it.
pub fn routing_key_to_topic(routing_key: &str) -> String {
    map_chars(routing_key, '.', '/', Some(('*', '+')))
}

/// The binding key of `amq.topic` that matches the messages the MQTT topic filter `filter`
/// matches: `/` becomes `.` and `+` becomes `*`. A literal `*` level in the filter (an ordinary
/// character in MQTT) is AMQP's wildcard there, as in RabbitMQ. That a filter starting with a
/// wildcard does not match `$` topics is not expressed by the binding key (nor in RabbitMQ).
pub fn filter_to_binding_key(filter: &str) -> String {
    map_chars(filter, '/', '.', Some(('+', '*')))
}

/// The MQTT topic filter of a binding key made by [`filter_to_binding_key`]: `.` becomes `/`,
/// `*` becomes `+`.
pub fn binding_key_to_filter(binding_key: &str) -> String {
    map_chars(binding_key, '.', '/', Some(('*', '+')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn topic_names_hold_no_wildcard() {
        for ok in ["a", "/", "a/b", "//", "a b/é", "$SYS/broker", "a*b", "a.b"] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(validate_topic_name(""), Err(TopicError::Empty));
        assert_eq!(
            validate_topic_name("a/+"),
            Err(TopicError::WildcardInTopicName)
        );
        assert_eq!(
            validate_topic_name("a/b#"),
            Err(TopicError::WildcardInTopicName)
        );
        assert_eq!(validate_topic_name("a\0"), Err(TopicError::NulCharacter));
        assert_eq!(
            validate_topic_name(&"a".repeat(65_536)),
            Err(TopicError::TooLong(65_536))
        );
    }

    #[test]
    fn wildcards_stand_alone_in_their_level_and_hash_comes_last() {
        for ok in [
            "#",
            "+",
            "+/+",
            "/+",
            "+/",
            "a/#",
            "a/+/b/#",
            "sport/tennis/#",
            "$SYS/#",
            "/#",
        ] {
            assert_eq!(validate_topic_filter(ok), Ok(()), "{ok:?}");
        }
        for (bad, why) in [
            ("", TopicError::Empty),
            ("a#", TopicError::WildcardNotAlone),
            ("a/b#", TopicError::WildcardNotAlone),
            ("a+", TopicError::WildcardNotAlone),
            ("a/+b/c", TopicError::WildcardNotAlone),
            ("#/a", TopicError::MultiLevelWildcardNotLast),
            ("a/#/b", TopicError::MultiLevelWildcardNotLast),
            ("#/", TopicError::MultiLevelWildcardNotLast),
            ("a/\0", TopicError::NulCharacter),
        ] {
            assert_eq!(validate_topic_filter(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn shared_subscriptions_have_a_share_name_and_a_filter() {
        assert_eq!(split_shared_subscription("a/b"), Ok(None));
        assert_eq!(split_shared_subscription("$share"), Ok(None));
        assert_eq!(
            split_shared_subscription("$share/g/a/+"),
            Ok(Some(("g", "a/+")))
        );
        for bad in [
            "$share/g",
            "$share//a",
            "$share/g/",
            "$share/+/a",
            "$share/g#/a",
        ] {
            assert_eq!(
                split_shared_subscription(bad),
                Err(TopicError::InvalidSharedSubscription),
                "{bad:?}"
            );
        }
        assert_eq!(
            split_shared_subscription("$share/g/a#"),
            Err(TopicError::WildcardNotAlone)
        );
    }

    #[test]
    fn matching_follows_the_specification_examples() {
        // §4.7.1.2 and §4.7.1.3.
        for (filter, topic, matches) in [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "sport/tennis", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/tennis/+", "sport/tennis", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+/tennis/#", "sport/tennis", true),
            // §4.7.2: `$` topics.
            ("#", "$SYS/monitor/Clients", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("$SYS/#", "$SYS", true),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
        ] {
            assert_eq!(
                filter_matches(filter, topic),
                matches,
                "{filter:?} on {topic:?}"
            );
        }
    }

    #[test]
    fn topics_map_as_rabbitmq_maps_them() {
        assert_eq!(topic_to_routing_key("sensors/temp.c"), "sensors.temp.c");
        assert_eq!(routing_key_to_topic("sensors.temp.c"), "sensors/temp/c");
        assert_eq!(topic_to_routing_key("/a//"), ".a..");
        assert_eq!(filter_to_binding_key("a/+/b/#"), "a.*.b.#");
        assert_eq!(binding_key_to_filter("a.*.b.#"), "a/+/b/#");
        assert_eq!(topic_to_routing_key("a*b"), "a*b");
        assert_eq!(routing_key_to_topic("a.*"), "a/+");
    }

    /// AMQP 0-9-1 topic matching as RabbitMQ does it, to check the mapping keeps the matching:
    /// `*` one word, `#` zero or more words.
    fn amqp_matches(binding: &[&str], key: &[&str]) -> bool {
        match (binding.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", rest)), _) => {
                amqp_matches(rest, key) || (!key.is_empty() && amqp_matches(binding, &key[1..]))
            }
            (Some((&"*", rest)), Some((_, key_rest))) => amqp_matches(rest, key_rest),
            (Some((b, rest)), Some((k, key_rest))) => b == k && amqp_matches(rest, key_rest),
            _ => false,
        }
    }

    fn arb_level() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![Just('a'), Just('b'), Just(' '), Just('é')],
            0..3,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    fn arb_topic() -> impl Strategy<Value = String> {
        proptest::collection::vec(arb_level(), 1..5)
            .prop_map(|levels| levels.join("/"))
            .prop_filter("topic names are not empty", |t| !t.is_empty())
    }

    fn arb_filter() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(
                prop_oneof![3 => arb_level(), 1 => Just("+".to_owned())],
                0..5,
            ),
            any::<bool>(),
        )
            .prop_map(|(mut levels, hash)| {
                if hash || levels.is_empty() {
                    levels.push("#".to_owned());
                }
                levels.join("/")
            })
            .prop_filter("topic filters are not empty", |f| !f.is_empty())
    }

    proptest! {
        #[test]
        fn topics_come_back_from_amqp_as_they_went(topic in arb_topic()) {
            prop_assert_eq!(validate_topic_name(&topic), Ok(()));
            prop_assert_eq!(routing_key_to_topic(&topic_to_routing_key(&topic)), topic);
        }

        #[test]
        fn filters_come_back_from_their_binding_keys(filter in arb_filter()) {
            prop_assert_eq!(validate_topic_filter(&filter), Ok(()));
            prop_assert_eq!(binding_key_to_filter(&filter_to_binding_key(&filter)), filter);
        }

        #[test]
        fn a_binding_key_matches_what_its_filter_matches(
            filter in arb_filter(),
            topic in arb_topic(),
        ) {
            let key = topic_to_routing_key(&topic);
            let binding = filter_to_binding_key(&filter);
            let key: Vec<&str> = key.split('.').collect();
            let binding: Vec<&str> = binding.split('.').collect();
            prop_assert_eq!(filter_matches(&filter, &topic), amqp_matches(&binding, &key));
        }
    }
}
