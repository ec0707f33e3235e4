//! Policies and operator policies, as RabbitMQ's: a named rule of a vhost whose `pattern` (a
//! regular expression) picks the queues and exchanges it `apply-to`, with a `priority` and a
//! `definition` of keys that act like the `x-` arguments of those queues (and `alternate-exchange`
//! of exchanges). Of the policies that match an object, the one of the highest priority applies
//! (ties: the name that sorts first); likewise of the operator policies. A queue's effective
//! setting combines its own arguments, its policy and its operator policy by RabbitMQ's rules
//! ([`effective_queue_arguments`]).
//!
//! Policies are replicated state (`Op::SetPolicy`, `Op::ClearPolicy`): every replica computes the
//! same effective settings, and a policy applies to existing and future objects at once.

use regex::Regex;
use warren_wire::{FieldTable, FieldValue};

/// What a policy applies to (`apply-to`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyTo {
    All,
    Queues,
    ClassicQueues,
    QuorumQueues,
    Streams,
    Exchanges,
}

impl ApplyTo {
    /// RabbitMQ's name of `apply-to`.
    pub fn parse(s: &str) -> Option<ApplyTo> {
        Some(match s {
            "all" => ApplyTo::All,
            "queues" => ApplyTo::Queues,
            "classic_queues" => ApplyTo::ClassicQueues,
            "quorum_queues" => ApplyTo::QuorumQueues,
            "streams" => ApplyTo::Streams,
            "exchanges" => ApplyTo::Exchanges,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ApplyTo::All => "all",
            ApplyTo::Queues => "queues",
            ApplyTo::ClassicQueues => "classic_queues",
            ApplyTo::QuorumQueues => "quorum_queues",
            ApplyTo::Streams => "streams",
            ApplyTo::Exchanges => "exchanges",
        }
    }

    fn queues(&self, kind: QueueKind) -> bool {
        match self {
            ApplyTo::All | ApplyTo::Queues => true,
            ApplyTo::ClassicQueues => kind == QueueKind::Classic,
            ApplyTo::QuorumQueues => kind == QueueKind::Quorum,
            ApplyTo::Streams => kind == QueueKind::Stream,
            ApplyTo::Exchanges => false,
        }
    }

    fn exchanges(&self) -> bool {
        matches!(self, ApplyTo::All | ApplyTo::Exchanges)
    }
}

/// The type of a queue, as `apply-to` tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueKind {
    Classic,
    Quorum,
    Stream,
}

/// One policy (or operator policy) of a vhost.
#[derive(Clone, Debug)]
pub struct Policy {
    pub name: String,
    pub pattern: String,
    regex: Regex,
    pub apply_to: ApplyTo,
    pub priority: i64,
    pub definition: FieldTable,
}

impl Policy {
    /// A policy, checked as RabbitMQ checks it (the error is its reason text).
    pub fn new(
        name: &str,
        pattern: &str,
        apply_to: &str,
        priority: i64,
        definition: FieldTable,
        operator: bool,
    ) -> Result<Policy, String> {
        let regex = Regex::new(pattern)
            .map_err(|e| format!("Validation failed\n\n{pattern} is not a valid regex: {e}"))?;
        let apply_to = ApplyTo::parse(apply_to).ok_or_else(|| {
            format!(
                "Validation failed\n\n'{apply_to}' is not a valid apply-to value (expected one \
                 of all, queues, classic_queues, quorum_queues, streams, exchanges)"
            )
        })?;
        validate_definition(&definition, operator)?;
        Ok(Policy {
            name: name.to_owned(),
            pattern: pattern.to_owned(),
            regex,
            apply_to,
            priority,
            definition,
        })
    }

    fn matches_queue(&self, name: &str, kind: QueueKind) -> bool {
        self.apply_to.queues(kind) && self.regex.is_match(name)
    }

    fn matches_exchange(&self, name: &str) -> bool {
        self.apply_to.exchanges() && self.regex.is_match(name)
    }
}

/// Keys of a policy's definition, and whether an operator policy may set them.
const KEYS: &[(&str, bool)] = &[
    ("message-ttl", true),
    ("expires", true),
    ("max-length", true),
    ("max-length-bytes", true),
    ("overflow", true),
    ("delivery-limit", true),
    ("dead-letter-exchange", false),
    ("dead-letter-routing-key", false),
    ("alternate-exchange", false),
    ("consumer-timeout", false),
    ("queue-mode", false),
    ("queue-version", false),
];

/// Keys of classic queue mirroring, gone in RabbitMQ 4: accepted, and without effect.
pub fn is_mirroring_key(key: &str) -> bool {
    key.starts_with("ha-")
}

/// Checks a definition's keys and the types of their values (RabbitMQ's validation texts).
pub fn validate_definition(definition: &FieldTable, operator: bool) -> Result<(), String> {
    if definition.iter().next().is_none() {
        return Err("Validation failed\n\nno policy keys were given".into());
    }
    for (key, value) in definition.iter() {
        let key: &str = key;
        if is_mirroring_key(key) && !operator {
            continue;
        }
        let Some((_, for_operators)) = KEYS.iter().find(|(k, _)| *k == key) else {
            return Err(format!(
                "Validation failed\n\n[{{<<\"{key}\">>,...}}] are not recognised policy settings"
            ));
        };
        if operator && !for_operators {
            return Err(format!(
                "Validation failed\n\n[{{<<\"{key}\">>,...}}] are not recognised operator policy settings"
            ));
        }
        let ok = match key {
            "message-ttl" | "max-length" | "max-length-bytes" | "delivery-limit" => {
                value.as_i64().is_some_and(|n| n >= 0)
            }
            "expires" | "consumer-timeout" => value.as_i64().is_some_and(|n| n > 0),
            "overflow" => matches!(
                value.as_str(),
                Some("drop-head" | "reject-publish" | "reject-publish-dlx")
            ),
            "dead-letter-exchange" | "dead-letter-routing-key" | "alternate-exchange" => {
                value.as_str().is_some()
            }
            "queue-mode" => matches!(value.as_str(), Some("default" | "lazy")),
            _ => true,
        };
        if !ok {
            return Err(format!(
                "Validation failed\n\n{value:?} is not a valid value for {key}"
            ));
        }
    }
    Ok(())
}

/// The policy of highest priority among `policies` that matches queue `name` (ties: the first
/// name).
pub(crate) fn for_queue<'a>(
    policies: impl Iterator<Item = &'a Policy>,
    name: &str,
    kind: QueueKind,
) -> Option<&'a Policy> {
    best(policies.filter(|p| p.matches_queue(name, kind)))
}

/// The policy of highest priority among `policies` that matches exchange `name`.
pub(crate) fn for_exchange<'a>(
    policies: impl Iterator<Item = &'a Policy>,
    name: &str,
) -> Option<&'a Policy> {
    best(policies.filter(|p| p.matches_exchange(name)))
}

fn best<'a>(policies: impl Iterator<Item = &'a Policy>) -> Option<&'a Policy> {
    policies.fold(None, |best: Option<&Policy>, p| match best {
        Some(b) if b.priority > p.priority || (b.priority == p.priority && b.name <= p.name) => {
            Some(b)
        }
        _ => Some(p),
    })
}

/// The settings a queue runs with: its own `arguments`, its policy's and its operator policy's
/// definitions combined as RabbitMQ combines them. Numeric limits (`message-ttl`, `max-length`,
/// `max-length-bytes`, `delivery-limit`, and `expires` of a classic queue) take the lowest of
/// the three; the dead-letter settings take the argument over the policy; `overflow` takes the
/// argument over the policy on a classic queue and the policy over the argument on a quorum
/// queue (as RabbitMQ's quorum queues), the operator policy over both; `expires` of a quorum
/// queue takes the policy over the argument. Returns the arguments to parse (`x-` keys) and
/// the effective policy definition to show (`effective_policy_definition`).
pub(crate) fn effective_queue_arguments(
    arguments: &FieldTable,
    policy: Option<&Policy>,
    operator: Option<&Policy>,
    quorum: bool,
) -> (FieldTable, FieldTable) {
    let mut effective_policy = FieldTable::default();
    let lowest = |a: Option<&FieldValue>, b: Option<&FieldValue>| -> Option<FieldValue> {
        match (a, b) {
            (Some(x), Some(y)) => match (x.as_i64(), y.as_i64()) {
                (Some(i), Some(j)) if j < i => Some(y.clone()),
                _ => Some(x.clone()),
            },
            (x, y) => x.or(y).cloned(),
        }
    };
    // The policies first: the operator's takes the lower numbers, and its overflow.
    for key in [
        "message-ttl",
        "expires",
        "max-length",
        "max-length-bytes",
        "delivery-limit",
        "overflow",
        "dead-letter-exchange",
        "dead-letter-routing-key",
        "consumer-timeout",
    ] {
        let p = policy.and_then(|p| p.definition.get(key));
        let o = operator.and_then(|o| o.definition.get(key));
        let v = match key {
            "overflow" => o.or(p).cloned(),
            _ if o.is_some() => lowest(p, o),
            _ => p.cloned(),
        };
        if let Some(v) = v {
            effective_policy.insert(key, v);
        }
    }
    let mut merged = arguments.clone();
    for (key, value) in effective_policy.iter() {
        let arg_key = format!("x-{key}");
        let own = arguments.get(&arg_key);
        let resolved = match (key, own) {
            (_, None) => Some(value.clone()),
            ("message-ttl" | "max-length" | "max-length-bytes" | "delivery-limit", Some(a)) => {
                lowest(Some(a), Some(value))
            }
            ("expires", Some(a)) if !quorum => lowest(Some(a), Some(value)),
            ("expires", Some(_)) => Some(value.clone()),
            ("overflow", Some(_)) if quorum => Some(value.clone()),
            ("overflow", Some(_))
                if operator.is_some_and(|o| o.definition.get("overflow").is_some()) =>
            {
                Some(value.clone())
            }
            (_, Some(a)) => Some(a.clone()),
        };
        if let Some(v) = resolved {
            merged.insert(arg_key.as_str(), v);
        }
    }
    (merged, effective_policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pairs: &[(&str, FieldValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(*k, v.clone());
        }
        t
    }

    fn policy(name: &str, pattern: &str, priority: i64, def: &[(&str, FieldValue)]) -> Policy {
        Policy::new(name, pattern, "queues", priority, table(def), false).expect("valid")
    }

    #[test]
    fn the_highest_priority_match_applies_ties_to_the_first_name() {
        let ps = [
            policy("b", "^orders", 1, &[("max-length", FieldValue::I32(10))]),
            policy("a", "^orders", 1, &[("max-length", FieldValue::I32(20))]),
            policy(
                "c",
                "^orders\\.eu",
                5,
                &[("max-length", FieldValue::I32(30))],
            ),
            policy("d", "^x", 9, &[("max-length", FieldValue::I32(40))]),
        ];
        let name = |q: &str| for_queue(ps.iter(), q, QueueKind::Classic).map(|p| p.name.clone());
        assert_eq!(name("orders.us"), Some("a".into()));
        assert_eq!(name("orders.eu"), Some("c".into()));
        assert_eq!(name("other"), None);
        let exchanges_only = Policy::new(
            "e",
            ".*",
            "exchanges",
            100,
            table(&[("alternate-exchange", FieldValue::LongStr("ae".into()))]),
            false,
        )
        .expect("valid");
        assert!(for_queue(
            [exchanges_only.clone()].iter(),
            "orders",
            QueueKind::Classic
        )
        .is_none());
        let streams_only = Policy::new(
            "s",
            ".*",
            "streams",
            0,
            table(&[("max-length-bytes", FieldValue::I32(10))]),
            false,
        )
        .expect("valid");
        assert!(for_queue([streams_only.clone()].iter(), "log", QueueKind::Stream).is_some());
        assert!(for_queue([streams_only].iter(), "log", QueueKind::Quorum).is_none());
        assert!(for_exchange([exchanges_only].iter(), "orders").is_some());
    }

    #[test]
    fn arguments_policies_and_operator_policies_combine_as_rabbitmq_combines_them() {
        let p = policy(
            "p",
            ".*",
            0,
            &[
                ("max-length", FieldValue::I32(100)),
                ("message-ttl", FieldValue::I32(5_000)),
                (
                    "dead-letter-exchange",
                    FieldValue::LongStr("from-policy".into()),
                ),
                ("overflow", FieldValue::LongStr("reject-publish".into())),
                ("expires", FieldValue::I32(60_000)),
            ],
        );
        let o = Policy::new(
            "o",
            ".*",
            "queues",
            0,
            table(&[("max-length", FieldValue::I32(50))]),
            true,
        )
        .expect("valid");
        let args = table(&[
            ("x-max-length", FieldValue::I32(70)),
            ("x-message-ttl", FieldValue::I32(9_000)),
            ("x-dead-letter-exchange", FieldValue::LongStr("own".into())),
            ("x-overflow", FieldValue::LongStr("drop-head".into())),
            ("x-expires", FieldValue::I32(30_000)),
        ]);
        let (classic, shown) = effective_queue_arguments(&args, Some(&p), Some(&o), false);
        let get = |t: &FieldTable, k: &str| t.get(k).cloned();
        assert_eq!(
            get(&classic, "x-max-length"),
            Some(FieldValue::I32(50)),
            "lowest of three"
        );
        assert_eq!(
            get(&classic, "x-message-ttl"),
            Some(FieldValue::I32(5_000)),
            "lowest"
        );
        assert_eq!(
            get(&classic, "x-dead-letter-exchange"),
            Some(FieldValue::LongStr("own".into())),
            "the argument over the policy"
        );
        assert_eq!(
            get(&classic, "x-overflow"),
            Some(FieldValue::LongStr("drop-head".into())),
            "a classic queue's own overflow"
        );
        assert_eq!(get(&classic, "x-expires"), Some(FieldValue::I32(30_000)));
        assert_eq!(get(&shown, "max-length"), Some(FieldValue::I32(50)));
        let (quorum, _) = effective_queue_arguments(&args, Some(&p), Some(&o), true);
        assert_eq!(
            get(&quorum, "x-overflow"),
            Some(FieldValue::LongStr("reject-publish".into())),
            "a quorum queue takes the policy's"
        );
        assert_eq!(get(&quorum, "x-expires"), Some(FieldValue::I32(60_000)));
        // Without arguments, the policy's settings apply as they are.
        let (bare, _) = effective_queue_arguments(&FieldTable::default(), Some(&p), None, false);
        assert_eq!(get(&bare, "x-max-length"), Some(FieldValue::I32(100)));
    }

    #[test]
    fn definitions_are_checked_as_rabbitmq_checks_them() {
        let bad = |def: &[(&str, FieldValue)], operator: bool| {
            validate_definition(&table(def), operator).is_err()
        };
        assert!(!bad(&[("max-length", FieldValue::I32(5))], false));
        assert!(
            !bad(&[("ha-mode", FieldValue::LongStr("all".into()))], false),
            "accepted, ignored"
        );
        assert!(bad(&[("max-length", FieldValue::I32(-5))], false));
        assert!(bad(
            &[("max-length", FieldValue::LongStr("5".into()))],
            false
        ));
        assert!(bad(
            &[("overflow", FieldValue::LongStr("drop-tail".into()))],
            false
        ));
        assert!(bad(&[("no-such-key", FieldValue::I32(1))], false));
        assert!(
            bad(
                &[("dead-letter-exchange", FieldValue::LongStr("x".into()))],
                true
            ),
            "not for operators"
        );
        assert!(bad(&[], false), "empty");
        assert!(Policy::new(
            "p",
            "(",
            "queues",
            0,
            table(&[("max-length", FieldValue::I32(1))]),
            false
        )
        .is_err());
        assert!(Policy::new(
            "p",
            ".*",
            "tables",
            0,
            table(&[("max-length", FieldValue::I32(1))]),
            false
        )
        .is_err());
    }
}
