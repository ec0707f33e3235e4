//! The topic exchange index: a trie over dot-separated words, with `*` (exactly one word) and `#`
//! (zero or more words) edges. A publish walks only the branches its words can match, never every
//! binding; empty branches are pruned on unbind.

use std::collections::HashMap;

#[derive(Clone, Debug)]
struct Node<D> {
    words: HashMap<String, Node<D>>,
    star: Option<Box<Node<D>>>,
    hash: Option<Box<Node<D>>>,
    /// Destinations of bindings whose pattern ends here (one entry per binding).
    here: Vec<D>,
}

impl<D> Default for Node<D> {
    fn default() -> Self {
        Node {
            words: HashMap::new(),
            star: None,
            hash: None,
            here: Vec::new(),
        }
    }
}

impl<D> Node<D> {
    fn is_empty(&self) -> bool {
        self.here.is_empty() && self.words.is_empty() && self.star.is_none() && self.hash.is_none()
    }
}

#[derive(Clone, Debug)]
pub(super) struct TopicTrie<D> {
    root: Node<D>,
}

impl<D> Default for TopicTrie<D> {
    fn default() -> Self {
        TopicTrie {
            root: Node::default(),
        }
    }
}

/// Words of a key; the empty key is zero words (so `#` matches it and `*` does not).
fn words(key: &str) -> Vec<&str> {
    if key.is_empty() {
        Vec::new()
    } else {
        key.split('.').collect()
    }
}

impl<D: Clone + PartialEq> TopicTrie<D> {
    pub(super) fn insert(&mut self, pattern: &str, d: D) {
        let mut node = &mut self.root;
        for w in words(pattern) {
            node = match w {
                "*" => node.star.get_or_insert_with(Box::default),
                "#" => node.hash.get_or_insert_with(Box::default),
                _ => node.words.entry(w.to_owned()).or_default(),
            };
        }
        node.here.push(d);
    }

    pub(super) fn remove(&mut self, pattern: &str, d: &D) {
        remove_at(&mut self.root, &words(pattern), d);
    }

    pub(super) fn route(&self, key: &str, out: &mut Vec<D>) {
        collect(&self.root, &words(key), out);
    }
}

/// Removes one `d` at the end of `path`; returns whether `node` became empty (to prune it).
fn remove_at<D: PartialEq>(node: &mut Node<D>, path: &[&str], d: &D) -> bool {
    match path.split_first() {
        None => {
            if let Some(at) = node.here.iter().position(|x| x == d) {
                node.here.swap_remove(at);
            }
        }
        Some((&"*", rest)) => {
            if let Some(child) = node.star.as_mut() {
                if remove_at(child, rest, d) {
                    node.star = None;
                }
            }
        }
        Some((&"#", rest)) => {
            if let Some(child) = node.hash.as_mut() {
                if remove_at(child, rest, d) {
                    node.hash = None;
                }
            }
        }
        Some((w, rest)) => {
            if let Some(child) = node.words.get_mut(*w) {
                if remove_at(child, rest, d) {
                    node.words.remove(*w);
                }
            }
        }
    }
    node.is_empty()
}

fn collect<D: Clone>(node: &Node<D>, key: &[&str], out: &mut Vec<D>) {
    if let Some(hash) = &node.hash {
        // `#` swallows zero or more words.
        for skip in 0..=key.len() {
            collect(hash, &key[skip..], out);
        }
    }
    match key.split_first() {
        None => out.extend(node.here.iter().cloned()),
        Some((w, rest)) => {
            if let Some(child) = node.words.get(*w) {
                collect(child, rest, out);
            }
            if let Some(star) = &node.star {
                collect(star, rest, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The spec's definition, written as plainly as possible: the reference the trie must agree with.
    fn reference(pattern: &[&str], key: &[&str]) -> bool {
        match (pattern.split_first(), key.split_first()) {
            (None, None) => true,
            (Some((&"#", prest)), _) => {
                reference(prest, key) || (!key.is_empty() && reference(pattern, &key[1..]))
            }
            (Some((&"*", prest)), Some((_, krest))) => reference(prest, krest),
            (Some((p, prest)), Some((k, krest))) => p == k && reference(prest, krest),
            _ => false,
        }
    }

    fn arb_words(wild: bool) -> impl Strategy<Value = Vec<String>> {
        let word = if wild { "(a|b|c|\\*|#)" } else { "(a|b|c)" };
        proptest::collection::vec(proptest::string::string_regex(word).unwrap(), 0..5)
    }

    proptest! {
        #[test]
        fn trie_agrees_with_the_reference_matcher(
            patterns in proptest::collection::vec(arb_words(true), 1..8),
            key in arb_words(false),
        ) {
            let mut trie = TopicTrie::default();
            for (i, p) in patterns.iter().enumerate() {
                trie.insert(&p.join("."), i);
            }
            let key_words: Vec<&str> = key.iter().map(String::as_str).collect();
            let mut got = Vec::new();
            trie.route(&key.join("."), &mut got);
            got.sort();
            got.dedup();
            let expected: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| reference(&p.iter().map(String::as_str).collect::<Vec<_>>(), &key_words))
                .map(|(i, _)| i)
                .collect();
            prop_assert_eq!(got, expected);
            // Removing every binding prunes the trie back to an empty root.
            for (i, p) in patterns.iter().enumerate() {
                trie.remove(&p.join("."), &i);
            }
            prop_assert!(trie.root.is_empty());
        }
    }
}
