//! HTTP basic authentication against the broker's users, and what each user tag lets a user see
//! and do, as RabbitMQ's management plugin applies them: `administrator` everything;
//! `monitoring` every vhost's objects and every connection, read-only; `management` (and
//! `policymaker`) the vhosts it has permissions in and its own connections; `policymaker` also the
//! policies of those vhosts; no tag: no access.

use axum::http::{header, HeaderMap};
use base64::Engine;
use warren_core::view::BrokerView;
use warren_core::User;

use crate::error::ApiError;

/// What a request needs of its user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    Management,
    Monitoring,
    Administrator,
}

/// The authenticated user of a request.
#[derive(Clone, Debug)]
pub(crate) struct Caller {
    pub(crate) name: String,
    pub(crate) password: String,
    pub(crate) tags: Vec<String>,
    /// The HTTP client connected from a loopback address.
    pub(crate) loopback: bool,
}

impl Caller {
    fn has(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }

    pub(crate) fn is_administrator(&self) -> bool {
        self.has("administrator")
    }

    pub(crate) fn is_monitoring(&self) -> bool {
        self.is_administrator() || self.has("monitoring")
    }

    fn is_management(&self) -> bool {
        self.is_monitoring() || self.has("management") || self.has("policymaker")
    }

    /// Whether the user sees the objects of `vhost`.
    pub(crate) fn sees_vhost(&self, view: &BrokerView, vhost: &str) -> bool {
        self.is_monitoring()
            || view
                .permissions
                .iter()
                .any(|p| p.user == self.name && p.vhost == vhost)
    }

    /// Whether the user may read and change the policies of `vhost` (RabbitMQ's
    /// `is_authorized_policies`): an administrator, or a `policymaker` with permissions in the
    /// vhost (or when the vhost does not exist, which then answers 404).
    pub(crate) fn makes_policies_in(&self, view: &BrokerView, vhost: &str) -> bool {
        self.is_administrator()
            || (self.has("policymaker")
                && (!view.vhosts.iter().any(|v| v == vhost)
                    || view
                        .permissions
                        .iter()
                        .any(|p| p.user == self.name && p.vhost == vhost)))
    }

    /// Whether the user sees a connection (or its channels and consumers) of `user`.
    pub(crate) fn sees_user(&self, user: &str) -> bool {
        self.is_monitoring() || self.name == user
    }
}

/// Checks the request's basic credentials against the users in `view` and the tags `need`
/// requires. Refusals are 401 with RabbitMQ's reasons.
pub(crate) fn check(
    headers: &HeaderMap,
    loopback: bool,
    loopback_users: &[String],
    view: &BrokerView,
    need: Need,
) -> Result<Caller, ApiError> {
    let (name, password) =
        basic_credentials(headers).ok_or_else(|| ApiError::not_authorised("Login failed"))?;
    let user = view
        .users
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| ApiError::not_authorised("Login failed"))?;
    let ok = User {
        name: user.name.clone(),
        password_hash: user.password_hash.clone(),
        tags: user.tags.clone(),
    }
    .check_password(&password);
    if !ok {
        return Err(ApiError::not_authorised("Login failed"));
    }
    if !loopback && loopback_users.contains(&name) {
        return Err(ApiError::not_authorised(
            "User can only log in via localhost",
        ));
    }
    let caller = Caller {
        name,
        password,
        tags: user.tags.clone(),
        loopback,
    };
    let allowed = match need {
        Need::Management => caller.is_management(),
        Need::Monitoring => caller.is_monitoring(),
        Need::Administrator => caller.is_administrator(),
    };
    if !allowed {
        return Err(ApiError::not_authorised(match need {
            Need::Management => "Not management user",
            Need::Monitoring => "Not monitor user",
            Need::Administrator => "Not administrator user",
        }));
    }
    Ok(caller)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warren_core::view::{PermissionView, UserView};

    fn view() -> BrokerView {
        BrokerView {
            users: vec![
                UserView {
                    name: "guest".into(),
                    password_hash: warren_core::hash_password([1, 2, 3, 4], "guest"),
                    tags: vec!["administrator".into()],
                },
                UserView {
                    name: "app".into(),
                    password_hash: warren_core::hash_password([1, 2, 3, 4], "pw"),
                    tags: vec![],
                },
                UserView {
                    name: "mon".into(),
                    password_hash: warren_core::hash_password([1, 2, 3, 4], "pw"),
                    tags: vec!["monitoring".into()],
                },
            ],
            permissions: vec![PermissionView {
                user: "app".into(),
                vhost: "/".into(),
                configure: ".*".into(),
                write: ".*".into(),
                read: ".*".into(),
            }],
            ..Default::default()
        }
    }

    fn basic(user: &str, pass: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        h.insert(
            header::AUTHORIZATION,
            format!("Basic {v}").parse().expect("valid header"),
        );
        h
    }

    #[test]
    fn passwords_tags_and_loopback_users_are_checked_as_rabbitmq_does() {
        let v = view();
        let lb = vec!["guest".to_owned()];
        let reason = |r: Result<Caller, ApiError>| r.err().map(|e| e.reason);
        assert!(check(&basic("guest", "guest"), true, &lb, &v, Need::Administrator).is_ok());
        assert_eq!(
            reason(check(
                &basic("guest", "nope"),
                true,
                &lb,
                &v,
                Need::Management
            )),
            Some("Login failed".into())
        );
        assert_eq!(
            reason(check(&HeaderMap::new(), true, &lb, &v, Need::Management)),
            Some("Login failed".into())
        );
        assert_eq!(
            reason(check(
                &basic("guest", "guest"),
                false,
                &lb,
                &v,
                Need::Management
            )),
            Some("User can only log in via localhost".into())
        );
        assert_eq!(
            reason(check(&basic("app", "pw"), true, &lb, &v, Need::Management)),
            Some("Not management user".into())
        );
        let mon = check(&basic("mon", "pw"), false, &lb, &v, Need::Monitoring).expect("monitoring");
        assert!(mon.sees_vhost(&v, "/other") && mon.sees_user("someone"));
        assert_eq!(
            reason(check(
                &basic("mon", "pw"),
                true,
                &lb,
                &v,
                Need::Administrator
            )),
            Some("Not administrator user".into())
        );
    }
}
