//! The properties of published messages: delivery-mode 2 from `-f persistent`, the pairs of
//! `--message-properties` (rabbitmq-perf-test's names; any other key becomes a header), and with
//! `--random-priority N` a priority drawn for each message from 0..=N. No I/O.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use lapin::types::FieldTable;
use lapin::BasicProperties;

use crate::arguments::{pairs, short_string, typed};

/// The properties a producer gives its messages.
#[derive(Debug, Clone)]
pub(crate) struct MessageProperties {
    base: BasicProperties,
    /// `--random-priority`: the highest priority drawn, and the generator that draws it.
    random_priority: Option<(u8, Xorshift)>,
}

impl MessageProperties {
    /// The properties of `-f persistent` (delivery-mode 2) and of the `--message-properties`
    /// `lists` (which win over `-f`); with `random_priority` N each message gets a priority drawn
    /// from 0..=N, which cannot be combined with a `priority` in `lists`.
    pub(crate) fn new(
        persistent: bool,
        lists: &[String],
        random_priority: Option<u8>,
    ) -> anyhow::Result<MessageProperties> {
        let mut p = BasicProperties::default();
        if persistent {
            p = p.with_delivery_mode(2);
        }
        let mut headers = FieldTable::default();
        for (key, value) in pairs(lists).context("--message-properties")? {
            let short = || short_string(value.as_str()).with_context(|| key.clone());
            p = match key.as_str() {
                "contentType" => p.with_content_type(short()?),
                "contentEncoding" => p.with_content_encoding(short()?),
                "deliveryMode" => match value.parse::<u8>() {
                    Ok(mode @ (1 | 2)) => p.with_delivery_mode(mode),
                    _ => bail!("deliveryMode is 1 or 2, not {value}"),
                },
                "priority" => {
                    if random_priority.is_some() {
                        bail!("--random-priority and --message-properties priority=… disagree");
                    }
                    p.with_priority(value.parse().with_context(|| {
                        format!("priority is an integer from 0 to 255, not {value}")
                    })?)
                }
                "correlationId" => p.with_correlation_id(short()?),
                "replyTo" => p.with_reply_to(short()?),
                "expiration" => p.with_expiration(short()?),
                "messageId" => p.with_message_id(short()?),
                "timestamp" => p.with_timestamp(value.parse().with_context(|| {
                    format!("timestamp is in seconds since the epoch, not {value}")
                })?),
                "type" => p.with_type(short()?),
                "userId" => p.with_user_id(short()?),
                "appId" => p.with_app_id(short()?),
                "clusterId" => p.with_cluster_id(short()?),
                _ => {
                    headers.insert(short_string(key.as_str())?, typed(&value));
                    p
                }
            };
        }
        if !headers.inner().is_empty() {
            p = p.with_headers(headers);
        }
        Ok(MessageProperties {
            base: p,
            random_priority: random_priority.map(|max| (max, Xorshift::new(0))),
        })
    }

    /// A copy for producer `i`, whose random priorities are drawn from a sequence of its own.
    pub(crate) fn for_producer(&self, i: usize) -> MessageProperties {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let seed = now ^ (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        MessageProperties {
            base: self.base.clone(),
            random_priority: self
                .random_priority
                .as_ref()
                .map(|(max, _)| (*max, Xorshift::new(seed))),
        }
    }

    /// The properties of the next message.
    pub(crate) fn next(&mut self) -> BasicProperties {
        match &mut self.random_priority {
            Some((max, rng)) => {
                let priority = rng.below(u64::from(*max) + 1) as u8;
                self.base.clone().with_priority(priority)
            }
            None => self.base.clone(),
        }
    }
}

/// xorshift64*: fast, small, and good enough to spread priorities evenly; not for secrets.
#[derive(Debug, Clone)]
struct Xorshift(u64);

impl Xorshift {
    fn new(seed: u64) -> Xorshift {
        // splitmix64 of the seed, so that close seeds start far apart; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Xorshift((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in 0..n (n at most 2^32).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next() >> 32) * n) >> 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;

    fn lists(l: &[&str]) -> Vec<String> {
        l.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn perf_test_property_names_set_properties_and_other_keys_become_headers() {
        let mut m = MessageProperties::new(
            true,
            &lists(&["priority=5,contentType=text/plain,expiration=60000,x-custom=7"]),
            None,
        )
        .expect("valid properties");
        let p = m.next();
        assert_eq!(*p.priority(), Some(5));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("text/plain")
        );
        assert_eq!(p.expiration().as_ref().map(|s| s.as_str()), Some("60000"));
        let headers = p.headers().as_ref().expect("a header");
        assert_eq!(
            headers.inner().get("x-custom"),
            Some(&AMQPValue::LongLongInt(7))
        );
        let transient = MessageProperties::new(true, &lists(&["deliveryMode=1"]), None)
            .expect("valid properties")
            .next();
        assert_eq!(*transient.delivery_mode(), Some(1));
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "priority=256",
            "priority=high",
            "deliveryMode=3",
            "timestamp=now",
        ] {
            assert!(
                MessageProperties::new(false, &lists(&[bad]), None).is_err(),
                "{bad}"
            );
        }
        assert!(MessageProperties::new(false, &lists(&["priority=1"]), Some(9)).is_err());
    }

    #[test]
    fn random_priorities_cover_every_level_from_0_to_n_and_nothing_else() {
        let mut m = MessageProperties::new(false, &[], Some(9))
            .expect("valid properties")
            .for_producer(0);
        let mut seen = [0u32; 10];
        for _ in 0..10_000 {
            let p = m.next().priority().expect("a priority on every message");
            seen[usize::from(p)] += 1;
        }
        // Each of the 10 levels expects 1000; a fair generator stays well within 800..1200.
        assert!(seen.iter().all(|&n| (800..1200).contains(&n)), "{seen:?}");
        let mut plain = MessageProperties::new(false, &[], None).expect("valid properties");
        assert_eq!(*plain.next().priority(), None);
    }
}
