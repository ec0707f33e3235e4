//! Users, their password hashes and their per-vhost permissions, checked as RabbitMQ checks them:
//! salted SHA-256 hashes (`rabbit_password_hashing_sha256`) and configure/write/read regexes.

use base64::Engine;
use regex::Regex;
use sha2::{Digest, Sha256};

/// A broker user. `password_hash` is RabbitMQ's format: base64(salt(4) ++ sha256(salt ++ password)).
#[derive(Clone, Debug)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub tags: Vec<String>,
}

impl User {
    /// Whether `password` matches the stored hash. An unparsable hash never matches.
    pub fn check_password(&self, password: &str) -> bool {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(&self.password_hash) else {
            return false;
        };
        if raw.len() != 4 + 32 {
            return false;
        }
        let (salt, digest) = raw.split_at(4);
        let mut hasher = Sha256::new();
        hasher.update(salt);
        hasher.update(password.as_bytes());
        hasher.finalize().as_slice() == digest
    }
}

/// Hashes `password` with `salt` the way RabbitMQ's default `rabbit_password_hashing_sha256` does,
/// so definitions exported from RabbitMQ can be imported and vice versa.
pub fn hash_password(salt: [u8; 4], password: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut raw = salt.to_vec();
    raw.extend_from_slice(&hasher.finalize());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// Compiles `regex`, which the operator gave as `pattern` (the same, or before a variable
/// expansion); the error is one line naming the pattern.
pub(crate) fn compile_regex(regex: &str, pattern: &str) -> Result<Regex, String> {
    // RabbitMQ matches with re:run, i.e. unanchored; patterns like ".*" or "^amq\." carry
    // their own anchors.
    Regex::new(regex).map_err(|e| {
        // The regex crate's message spans lines (pattern, caret, error): keep the error, so
        // the operator gets one line.
        let text = e.to_string();
        let why = text.lines().last().unwrap_or_default();
        format!(
            "invalid regular expression '{pattern}': {}",
            why.trim_start_matches("error: ")
        )
    })
}

/// A user's permissions in one vhost: three regexes over resource names (RabbitMQ's
/// configure/write/read). An empty pattern matches nothing, as in RabbitMQ.
#[derive(Clone, Debug)]
pub struct Permission {
    pub configure: String,
    pub write: String,
    pub read: String,
    configure_re: Option<Regex>,
    write_re: Option<Regex>,
    read_re: Option<Regex>,
}

/// The kind of access an operation needs, as in RabbitMQ's access-control guide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    Configure,
    Write,
    Read,
}

impl Access {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Access::Configure => "configure",
            Access::Write => "write",
            Access::Read => "read",
        }
    }
}

impl Permission {
    /// Builds a permission; an invalid regex is an error naming the pattern.
    pub fn new(configure: &str, write: &str, read: &str) -> Result<Permission, String> {
        let compile = |p: &str| -> Result<Option<Regex>, String> {
            if p.is_empty() {
                return Ok(None);
            }
            compile_regex(p, p).map(Some)
        };
        Ok(Permission {
            configure: configure.to_owned(),
            write: write.to_owned(),
            read: read.to_owned(),
            configure_re: compile(configure)?,
            write_re: compile(write)?,
            read_re: compile(read)?,
        })
    }

    /// Full access (`.*` for all three), the default user's permission on the default vhost.
    pub fn all() -> Permission {
        // ".*" always compiles.
        Permission::new(".*", ".*", ".*").unwrap_or_else(|_| Permission {
            configure: String::new(),
            write: String::new(),
            read: String::new(),
            configure_re: None,
            write_re: None,
            read_re: None,
        })
    }

    pub(crate) fn allows(&self, access: Access, resource: &str) -> bool {
        let re = match access {
            Access::Configure => &self.configure_re,
            Access::Write => &self.write_re,
            Access::Read => &self.read_re,
        };
        re.as_ref().is_some_and(|re| re.is_match(resource))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hash_round_trips_and_rejects_wrong_password() {
        let user = User {
            name: "guest".into(),
            password_hash: hash_password([1, 2, 3, 4], "guest"),
            tags: vec![],
        };
        assert!(user.check_password("guest"));
        assert!(!user.check_password("guesT"));
    }

    #[test]
    fn verifies_a_hash_produced_by_rabbitmq() {
        // Computed independently (Python hashlib) with RabbitMQ's documented algorithm:
        // base64(salt ++ sha256(salt ++ "test12")), salt CAD5089B.
        let user = User {
            name: "u".into(),
            password_hash: "ytUIm2F9eV3qWWARNnCjyAl43Ykoi8RM6UsDGYNU4KCxHspv".into(),
            tags: vec![],
        };
        assert!(user.check_password("test12"));
    }

    #[test]
    fn permissions_are_unanchored_regexes_and_empty_denies() {
        let p = Permission::new("^amq\\.gen", "", ".*").expect("valid");
        assert!(p.allows(Access::Configure, "amq.gen-abc"));
        assert!(!p.allows(Access::Configure, "orders"));
        assert!(!p.allows(Access::Write, "orders"));
        assert!(p.allows(Access::Read, "orders"));
    }
}
