//! Vhost and user limits (RabbitMQ's `set_vhost_limits` / `set_user_limits`): named integer
//! limits of one vhost or user, as replicated state. Enforcing them is the broker's business
//! (`broker/limit_checks.rs`); this file owns only the values and their names.

use std::collections::BTreeMap;

/// `max-connections` of a vhost or a user.
pub const MAX_CONNECTIONS: &str = "max-connections";
/// `max-queues` of a vhost.
pub const MAX_QUEUES: &str = "max-queues";
/// `max-channels` of a user (counted over all of the user's connections).
pub const MAX_CHANNELS: &str = "max-channels";

/// The limits a vhost can have, as RabbitMQ names them.
pub const VHOST_LIMITS: [&str; 2] = [MAX_CONNECTIONS, MAX_QUEUES];
/// The limits a user can have, as RabbitMQ names them.
pub const USER_LIMITS: [&str; 2] = [MAX_CONNECTIONS, MAX_CHANNELS];

/// The limits of one vhost or user: name → value. Values are kept as the operator gave them
/// (RabbitMQ lists a `-1` as `-1`); a negative value means no limit, 0 means none allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits(BTreeMap<String, i64>);

impl Limits {
    /// The limit in force for `name`: `None` when it is not set or negative (no limit).
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.get(name).and_then(|v| u64::try_from(*v).ok())
    }

    /// Every limit set, by name (negative ones included).
    pub fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sets `limits`; with `replace`, every other limit is cleared first.
    pub(crate) fn set(&mut self, limits: &[(String, i64)], replace: bool) {
        if replace {
            self.0.clear();
        }
        for (name, value) in limits {
            self.0.insert(name.clone(), *value);
        }
    }

    /// Clears the named limits, or every limit if `names` is empty.
    pub(crate) fn clear(&mut self, names: &[String]) {
        if names.is_empty() {
            self.0.clear();
        } else {
            for name in names {
                self.0.remove(name);
            }
        }
    }
}

impl FromIterator<(String, i64)> for Limits {
    fn from_iter<I: IntoIterator<Item = (String, i64)>>(iter: I) -> Limits {
        Limits(iter.into_iter().collect())
    }
}

/// Checks that every name in `limits` is one of `known` (the limits of a vhost or of a user);
/// `Err` is the operator's error text.
pub(crate) fn check_names(
    limits: &[(String, i64)],
    known: &[&str],
    scope: &str,
) -> Result<(), String> {
    match limits
        .iter()
        .find(|(name, _)| !known.contains(&name.as_str()))
    {
        Some((name, _)) => Err(format!(
            "unknown {scope} limit '{name}' (known: {})",
            known.join(", ")
        )),
        None => Ok(()),
    }
}

/// Whether `count` things already exist under `limit` (`None`: no limit): RabbitMQ refuses one
/// more when the count has reached it, and refuses every one with a limit of 0.
pub(crate) fn reached(limit: Option<u64>, count: usize) -> bool {
    limit.is_some_and(|l| u64::try_from(count).unwrap_or(u64::MAX) >= l)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn negative_is_no_limit_and_zero_refuses_everything() {
        let mut l = Limits::default();
        l.set(&limits(&[(MAX_CONNECTIONS, -1), (MAX_QUEUES, 0)]), false);
        assert_eq!(l.get(MAX_CONNECTIONS), None);
        assert_eq!(l.get(MAX_QUEUES), Some(0));
        assert!(!reached(l.get(MAX_CONNECTIONS), 1_000_000));
        assert!(reached(l.get(MAX_QUEUES), 0));
        assert!(!reached(Some(2), 1));
        assert!(reached(Some(2), 2));
    }

    #[test]
    fn set_merges_or_replaces_and_clear_takes_names_or_everything() {
        let mut l = Limits::default();
        l.set(&limits(&[(MAX_CONNECTIONS, 2)]), false);
        l.set(&limits(&[(MAX_QUEUES, 5)]), false);
        assert_eq!(l.iter().count(), 2, "merged, as PUT /api/vhost-limits does");
        l.set(&limits(&[(MAX_QUEUES, 7)]), true);
        assert_eq!(
            l.iter().collect::<Vec<_>>(),
            vec![(MAX_QUEUES, 7)],
            "replaced, as rabbitmqctl set_vhost_limits does"
        );
        l.set(&limits(&[(MAX_CONNECTIONS, 1)]), false);
        l.clear(&[MAX_QUEUES.to_string()]);
        assert_eq!(l.iter().collect::<Vec<_>>(), vec![(MAX_CONNECTIONS, 1)]);
        l.clear(&[]);
        assert!(l.is_empty());
    }

    #[test]
    fn unknown_names_are_refused_with_the_known_ones() {
        assert_eq!(
            check_names(&limits(&[("max-foo", 1)]), &VHOST_LIMITS, "vhost"),
            Err("unknown vhost limit 'max-foo' (known: max-connections, max-queues)".into())
        );
        assert!(check_names(&limits(&[(MAX_CHANNELS, 1)]), &USER_LIMITS, "user").is_ok());
    }
}

/// What one node's broker counts of its own client connections for the limits: connections
/// per vhost and per user, channels per user. Each node shares its counts with the others (on
/// its home streams); a limit is checked against the node's own count plus the last counts
/// its peers sent ([`crate::Input::PeerCounts`]), as RabbitMQ's connection tracking sums the
/// tracking tables of every node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientCounts {
    pub vhost_connections: BTreeMap<String, u32>,
    pub user_connections: BTreeMap<String, u32>,
    pub user_channels: BTreeMap<String, u32>,
}

impl ClientCounts {
    pub fn is_empty(&self) -> bool {
        self.vhost_connections.is_empty()
            && self.user_connections.is_empty()
            && self.user_channels.is_empty()
    }
}
