//! Topic permissions (RabbitMQ's "Topic Authorisation", `set_topic_permissions`): for one user
//! in one vhost and one exchange, a write and a read regex over routing keys. Only the patterns
//! and their compiled form live here; the broker decides where they are checked.
//!
//! As RabbitMQ's internal backend does: an empty pattern is `^$`; `{username}` and `{vhost}` are
//! replaced by the user's name and the vhost (plain text substitution, before compiling); for an
//! AMQP 0-9-1 connection nothing else is expanded (`{client_id}` is only known to MQTT and STOMP
//! connections), so such a placeholder stays literal text, as PCRE reads it.

use regex::Regex;

use crate::user::{compile_regex, Access};

/// A user's topic permission on one exchange of one vhost, compiled once for that user and vhost
/// (the only variables an AMQP 0-9-1 connection has are fixed by them).
#[derive(Clone, Debug)]
pub struct TopicPermission {
    /// The write pattern as the operator gave it.
    pub write: String,
    /// The read pattern as the operator gave it.
    pub read: String,
    /// `None`: the pattern does not compile for this user and vhost, and allows nothing.
    write_re: Option<Regex>,
    read_re: Option<Regex>,
}

impl TopicPermission {
    /// Compiles `user`'s permission in `vhost`; `Err` is the operator's one-line error naming the
    /// pattern that does not compile (after expanding its variables).
    pub fn new(
        user: &str,
        vhost: &str,
        write: &str,
        read: &str,
    ) -> Result<TopicPermission, String> {
        Ok(TopicPermission {
            write: write.to_owned(),
            read: read.to_owned(),
            write_re: Some(compile(user, vhost, write)?),
            read_re: Some(compile(user, vhost, read)?),
        })
    }

    /// [`TopicPermission::new`] for replicated state, which was checked before it was proposed: a
    /// pattern that does not compile all the same (a snapshot from a node with another regex
    /// engine) allows nothing, so a broken permission never widens access.
    pub(crate) fn new_or_deny(user: &str, vhost: &str, write: &str, read: &str) -> TopicPermission {
        TopicPermission {
            write: write.to_owned(),
            read: read.to_owned(),
            write_re: compile(user, vhost, write).ok(),
            read_re: compile(user, vhost, read).ok(),
        }
    }

    /// Whether `routing_key` matches the pattern for `access` (write: `basic.publish`; read:
    /// binding to the exchange). Configure is never asked of a topic permission: false.
    pub(crate) fn allows(&self, access: Access, routing_key: &str) -> bool {
        let re = match access {
            Access::Write => &self.write_re,
            Access::Read => &self.read_re,
            Access::Configure => return false,
        };
        re.as_ref().is_some_and(|re| re.is_match(routing_key))
    }
}

/// Expands `{username}` and `{vhost}` in `pattern` (in that order, as RabbitMQ folds its variable
/// map) and compiles it, unanchored; an empty pattern is `^$`.
fn compile(user: &str, vhost: &str, pattern: &str) -> Result<Regex, String> {
    if pattern.is_empty() {
        return compile_regex("^$", pattern);
    }
    let expanded = pattern
        .replace("{username}", user)
        .replace("{vhost}", vhost);
    compile_regex(&literal_braces(&expanded), pattern)
}

/// PCRE (RabbitMQ's `re` module) reads a `{` that does not start a counted repetition (`{n}`,
/// `{n,}`, `{n,m}`) as a literal brace, and a `}` that does not end one as a literal too; the
/// regex crate refuses both. Escapes them, outside character classes, so that a pattern such as
/// `^{client_id}\.` compiles and means what it means in RabbitMQ.
fn literal_braces(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut in_class = false;
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            '\\' => {
                out.push(c);
                if let Some(&next) = chars.get(i) {
                    out.push(next);
                    i += 1;
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                // A `]` first in a class is a literal in PCRE.
                if chars.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '{' if !in_class => match repetition_len(&chars[i - 1..]) {
                Some(len) => {
                    out.extend(&chars[i - 1..i - 1 + len]);
                    i += len - 1;
                }
                None => out.push_str("\\{"),
            },
            '}' if !in_class => out.push_str("\\}"),
            _ => out.push(c),
        }
    }
    out
}

/// The length of the counted repetition (`{n}`, `{n,}` or `{n,m}`) at the start of `chars`
/// (which starts with `{`), if it is one.
fn repetition_len(chars: &[char]) -> Option<usize> {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while chars.get(*i).is_some_and(char::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    if digits(&mut i) == 0 {
        return None;
    }
    if chars.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (chars.get(i) == Some(&'}')).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(p: &TopicPermission, access: Access, key: &str) -> bool {
        p.allows(access, key)
    }

    #[test]
    fn username_and_vhost_are_expanded_and_client_id_stays_literal() {
        // What RabbitMQ 3.10.8 does for an AMQP 0-9-1 client (checked against it).
        let p = TopicPermission::new("u", "/", r"^{client_id}\.{username}\.{vhost}$", "^x{2}$")
            .expect("compiles");
        assert!(allows(&p, Access::Write, "{client_id}.u./"));
        assert!(!allows(&p, Access::Write, "cid.u./"));
        assert!(!allows(&p, Access::Write, ".u./"));
        assert!(
            allows(&p, Access::Read, "xx"),
            "a counted repetition stays one"
        );
        assert!(!allows(&p, Access::Read, "x{2}"));
    }

    #[test]
    fn an_empty_pattern_matches_only_the_empty_routing_key() {
        let p = TopicPermission::new("u", "/", "", "^a").expect("compiles");
        assert!(allows(&p, Access::Write, ""));
        assert!(!allows(&p, Access::Write, "a"));
        assert!(allows(&p, Access::Read, "a.b"), "unanchored at the end");
        assert!(!allows(&p, Access::Read, "b.a"));
        assert!(!allows(&p, Access::Configure, ""));
    }

    #[test]
    fn a_pattern_that_does_not_compile_is_the_operators_error_and_denies_if_applied() {
        assert_eq!(
            TopicPermission::new("u", "/", "(", "").map(|_| ()),
            Err("invalid regular expression '(': unclosed group".into())
        );
        // A user name is substituted as is (RabbitMQ does not escape it either).
        assert!(TopicPermission::new("a(b", "/", "^{username}", "").is_err());
        let p = TopicPermission::new_or_deny("a(b", "/", "^{username}", ".*");
        assert!(!allows(&p, Access::Write, "a(b"));
        assert!(allows(&p, Access::Read, "anything"));
    }

    #[test]
    fn braces_are_escaped_only_where_pcre_reads_them_as_text() {
        assert_eq!(literal_braces(r"a{2}b{1,}c{1,3}"), r"a{2}b{1,}c{1,3}");
        assert_eq!(literal_braces("{x}"), r"\{x\}");
        assert_eq!(literal_braces(r"\{x[{}]{"), r"\{x[{}]\{");
        assert_eq!(literal_braces("[]{]"), r"[\]{]");
        assert_eq!(literal_braces("a{,3}"), r"a\{,3\}");
    }
}
