//! Routing: the bindings of one exchange, indexed by exchange type, and the match of a routing key
//! (and headers) against them. Owns no queues and knows nothing of vhosts or permissions.

mod direct;
mod headers;
mod topic;

use std::collections::BTreeMap;
use std::hash::Hash;

use warren_wire::{FieldTable, ShortStr};

pub use headers::validate_headers_binding;

use direct::DirectIndex;
use topic::TopicTrie;

/// The four exchange types of AMQP 0-9-1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    /// Parses the `type` argument of `exchange.declare`.
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// One binding: source exchange (implicit) → destination, with key and arguments. Two bindings
/// with the same destination and key but different arguments are distinct, as in RabbitMQ.
#[derive(Clone, Debug, PartialEq)]
pub struct Binding<D> {
    pub destination: D,
    pub routing_key: ShortStr,
    pub arguments: FieldTable,
}

/// The bindings of one exchange and the index its type routes with: a hash map for direct, a
/// word trie for topic, the bindings themselves for fanout and headers.
///
/// The bindings are grouped by destination, so that binding, unbinding and deleting a queue
/// look only at that queue's bindings (with one list of all of them, a connection declaring
/// 10 000 queues with 10 bindings each and deleting them spent a scan of every binding per
/// operation). They are listed by destination, then in the order they were made.
#[derive(Clone, Debug)]
pub struct BindingTable<D> {
    kind: ExchangeKind,
    bindings: BTreeMap<D, Vec<Binding<D>>>,
    len: usize,
    direct: DirectIndex<D>,
    topic: TopicTrie<D>,
}

impl<D: Clone + Eq + Hash + Ord> BindingTable<D> {
    pub fn new(kind: ExchangeKind) -> BindingTable<D> {
        BindingTable {
            kind,
            bindings: BTreeMap::new(),
            len: 0,
            direct: DirectIndex::default(),
            topic: TopicTrie::default(),
        }
    }

    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// Adds a binding; returns false (and changes nothing) if the same binding exists.
    pub fn bind(&mut self, destination: D, routing_key: &str, arguments: &FieldTable) -> bool {
        if self
            .position(&destination, routing_key, arguments)
            .is_some()
        {
            return false;
        }
        match self.kind {
            ExchangeKind::Direct => self.direct.insert(routing_key, destination.clone()),
            ExchangeKind::Topic => self.topic.insert(routing_key, destination.clone()),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
        self.bindings
            .entry(destination.clone())
            .or_default()
            .push(Binding {
                destination,
                routing_key: ShortStr::from(routing_key),
                arguments: arguments.clone(),
            });
        self.len += 1;
        true
    }

    /// Removes a binding; returns whether it existed.
    pub fn unbind(&mut self, destination: &D, routing_key: &str, arguments: &FieldTable) -> bool {
        let Some(at) = self.position(destination, routing_key, arguments) else {
            return false;
        };
        let Some(list) = self.bindings.get_mut(destination) else {
            return false;
        };
        let b = list.remove(at);
        if list.is_empty() {
            self.bindings.remove(destination);
        }
        self.len -= 1;
        self.unindex(&b);
        true
    }

    /// Removes every binding to `destination` (the queue or exchange is being deleted); returns
    /// how many there were.
    pub fn remove_destination(&mut self, destination: &D) -> usize {
        let gone = self.bindings.remove(destination).unwrap_or_default();
        self.len -= gone.len();
        for b in &gone {
            self.unindex(b);
        }
        gone.len()
    }

    fn unindex(&mut self, b: &Binding<D>) {
        match self.kind {
            ExchangeKind::Direct => self.direct.remove(&b.routing_key, &b.destination),
            ExchangeKind::Topic => self.topic.remove(&b.routing_key, &b.destination),
            ExchangeKind::Fanout | ExchangeKind::Headers => {}
        }
    }

    fn position(
        &self,
        destination: &D,
        routing_key: &str,
        arguments: &FieldTable,
    ) -> Option<usize> {
        self.bindings
            .get(destination)?
            .iter()
            .position(|b| b.routing_key.as_str() == routing_key && &b.arguments == arguments)
    }

    /// Appends to `out` every destination the message matches, each once (sorted).
    pub fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<D>) {
        let start = out.len();
        match self.kind {
            ExchangeKind::Direct => self.direct.route(routing_key, out),
            ExchangeKind::Fanout => out.extend(self.bindings.keys().cloned()),
            ExchangeKind::Topic => self.topic.route(routing_key, out),
            ExchangeKind::Headers => {
                let empty = FieldTable::default();
                let headers = headers.unwrap_or(&empty);
                out.extend(
                    self.bindings()
                        .filter(|b| headers::matches(&b.arguments, headers))
                        .map(|b| b.destination.clone()),
                );
            }
        }
        out[start..].sort();
        let mut tail = out.split_off(start);
        tail.dedup();
        out.extend(tail);
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every binding, by destination, then in the order they were made.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding<D>> {
        self.bindings.values().flatten()
    }

    pub fn has_destination(&self, destination: &D) -> bool {
        self.bindings.contains_key(destination)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_wire::FieldValue;

    fn routed(t: &BindingTable<u32>, key: &str) -> Vec<u32> {
        let mut out = Vec::new();
        t.route(key, None, &mut out);
        out
    }

    #[test]
    fn direct_routes_exact_keys_once_per_destination() {
        let mut t = BindingTable::new(ExchangeKind::Direct);
        assert!(t.bind(1, "a", &FieldTable::default()));
        assert!(!t.bind(1, "a", &FieldTable::default()));
        let mut args = FieldTable::default();
        args.insert("x", FieldValue::Bool(true));
        assert!(t.bind(1, "a", &args));
        t.bind(2, "b", &FieldTable::default());
        assert_eq!(routed(&t, "a"), vec![1]);
        assert_eq!(routed(&t, "b"), vec![2]);
        assert_eq!(routed(&t, "c"), Vec::<u32>::new());
        assert!(t.unbind(&1, "a", &FieldTable::default()));
        assert_eq!(
            routed(&t, "a"),
            vec![1],
            "the binding with arguments remains"
        );
        assert_eq!(t.remove_destination(&1), 1);
        assert_eq!(routed(&t, "a"), Vec::<u32>::new());
    }

    #[test]
    fn fanout_ignores_the_key() {
        let mut t = BindingTable::new(ExchangeKind::Fanout);
        t.bind(1, "", &FieldTable::default());
        t.bind(2, "zzz", &FieldTable::default());
        assert_eq!(routed(&t, "anything"), vec![1, 2]);
    }

    #[test]
    fn topic_wildcards() {
        let mut t = BindingTable::new(ExchangeKind::Topic);
        t.bind(1, "*.en.#", &FieldTable::default());
        t.bind(2, "twitter.#", &FieldTable::default());
        t.bind(3, "#", &FieldTable::default());
        t.bind(4, "a.*.c", &FieldTable::default());
        t.bind(5, "a.#.c", &FieldTable::default());
        assert_eq!(routed(&t, "news.en"), vec![1, 3]);
        assert_eq!(routed(&t, "news.en.sport.uk"), vec![1, 3]);
        assert_eq!(routed(&t, "twitter"), vec![2, 3]);
        assert_eq!(routed(&t, "a.b.c"), vec![3, 4, 5]);
        assert_eq!(routed(&t, "a.c"), vec![3, 5]);
        assert_eq!(routed(&t, "a.b.b.c"), vec![3, 5]);
        assert_eq!(routed(&t, ""), vec![3]);
        t.unbind(&3, "#", &FieldTable::default());
        assert_eq!(routed(&t, "x"), Vec::<u32>::new());
    }
}
