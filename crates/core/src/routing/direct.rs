//! The direct exchange index: routing key → destinations, one hash lookup per publish.

use std::collections::HashMap;
use std::hash::Hash;

use warren_wire::ShortStr;

#[derive(Clone, Debug)]
pub(super) struct DirectIndex<D> {
    by_key: HashMap<ShortStr, Vec<D>>,
}

impl<D> Default for DirectIndex<D> {
    fn default() -> Self {
        DirectIndex {
            by_key: HashMap::new(),
        }
    }
}

impl<D: Clone + Eq + Hash> DirectIndex<D> {
    /// Adds one reference (bindings that differ only by arguments add one each).
    pub(super) fn insert(&mut self, key: &str, d: D) {
        self.by_key.entry(ShortStr::from(key)).or_default().push(d);
    }

    pub(super) fn remove(&mut self, key: &str, d: &D) {
        if let Some(v) = self.by_key.get_mut(key) {
            if let Some(at) = v.iter().position(|x| x == d) {
                v.swap_remove(at);
            }
            if v.is_empty() {
                self.by_key.remove(key);
            }
        }
    }

    pub(super) fn route(&self, key: &str, out: &mut Vec<D>) {
        if let Some(v) = self.by_key.get(key) {
            out.extend(v.iter().cloned());
        }
    }
}
