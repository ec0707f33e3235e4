//! `warren user|vhost|permissions …`: operator changes to vhosts, users, permissions, topic
//! permissions and limits through a node's Access gRPC service (any node: a follower forwards to
//! the leader). The change is applied on every node when the command returns.

use std::io::Write;
use warren_proto::access::access_change::Change;
use warren_proto::access::access_client::AccessClient;
use warren_proto::access::{
    AccessChange, ClearPermission, ClearTopicPermission, ClearUserLimits, ClearVhostLimits, Limit,
    PutUser, SetPermission, SetTopicPermission, SetUserLimits, SetVhostLimits, UserName, VhostName,
};
use warren_raft::METADATA_GROUP;

/// gRPC address of any member.
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct Target {
    /// gRPC address (host:port) of any member.
    #[arg(long, default_value = "127.0.0.1:7101")]
    grpc: String,
}

#[derive(clap::Subcommand, Clone, Debug)]
pub(crate) enum UserCmd {
    /// Create a user, or replace its password and tags (rabbitmqctl add_user / set_user_tags).
    Add {
        name: String,
        /// The password (hashed by the leader, RabbitMQ's salted SHA-256 scheme).
        #[arg(
            long,
            conflicts_with = "password_hash",
            required_unless_present = "password_hash"
        )]
        password: Option<String>,
        /// An already hashed password in RabbitMQ's base64 format.
        #[arg(long)]
        password_hash: Option<String>,
        /// Tags, e.g. administrator, monitoring, management; repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a user and its permissions; its connections are closed.
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set limits of a user, keeping its others (rabbitmqctl set_user_limits), e.g.
    /// '{"max-connections": 10, "max-channels": 100}'; a negative value is no limit, 0 allows
    /// none.
    SetLimits {
        name: String,
        /// A JSON object of limits: max-connections, max-channels.
        limits: String,
        #[command(flatten)]
        target: Target,
    },
    /// Clear the named limits of a user, or all of them (no name, or `all`).
    ClearLimits {
        name: String,
        /// max-connections, max-channels or all.
        limits: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Subcommand, Clone, Debug)]
pub(crate) enum VhostCmd {
    /// Create a vhost (with the predeclared exchanges).
    Add {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a vhost with everything in it; its connections are closed.
    Delete {
        name: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set the limits of a vhost, replacing the ones it had (rabbitmqctl set_vhost_limits), e.g.
    /// '{"max-connections": 100, "max-queues": 50}'; a negative value is no limit, 0 allows
    /// none.
    SetLimits {
        name: String,
        /// A JSON object of limits: max-connections, max-queues.
        limits: String,
        #[command(flatten)]
        target: Target,
    },
    /// Clear the named limits of a vhost, or all of them (no name, or `all`).
    ClearLimits {
        name: String,
        /// max-connections, max-queues or all.
        limits: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(clap::Subcommand, Clone, Debug)]
pub(crate) enum PermissionsCmd {
    /// Set a user's configure/write/read regexes on a vhost (rabbitmqctl set_permissions).
    Set {
        user: String,
        vhost: String,
        configure: String,
        write: String,
        read: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a user's permission on a vhost.
    Clear {
        user: String,
        vhost: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a user's topic permission on an exchange of a vhost (rabbitmqctl
    /// set_topic_permissions): regexes over routing keys for publishing (write) and binding
    /// (read) on a topic exchange; {username} and {vhost} expand, an empty one allows only the
    /// empty key.
    SetTopic {
        user: String,
        vhost: String,
        exchange: String,
        write: String,
        read: String,
        #[command(flatten)]
        target: Target,
    },
    /// Remove a user's topic permission on one exchange of a vhost, or on all of them.
    ClearTopic {
        user: String,
        vhost: String,
        exchange: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

/// One operator change, as the CLI was asked for it.
pub(crate) enum AccessCmd {
    User(UserCmd),
    Vhost(VhostCmd),
    Permissions(PermissionsCmd),
}

/// Limits as rabbitmqctl takes them: a JSON object of integers, e.g. `{"max-connections": 10}`.
fn parse_limits(json: &str) -> anyhow::Result<Vec<Limit>> {
    let bad = || {
        anyhow::anyhow!(
            "limits must be a JSON object of integers, e.g. '{{\"max-connections\": 10}}', not '{json}'"
        )
    };
    let value: serde_json::Value = serde_json::from_str(json).map_err(|_| bad())?;
    let object = value.as_object().ok_or_else(bad)?;
    object
        .iter()
        .map(|(name, v)| {
            Ok(Limit {
                name: name.clone(),
                value: v.as_i64().ok_or_else(bad)?,
            })
        })
        .collect()
}

/// Limit names to clear: none, or `all`, means every limit.
fn limit_names(names: Vec<String>) -> Vec<String> {
    if names.iter().any(|n| n == "all") {
        Vec::new()
    } else {
        names
    }
}

/// Sends the change; prints what was done on success.
pub(crate) fn run(cmd: AccessCmd) -> anyhow::Result<()> {
    let (target, change, done) = match cmd {
        AccessCmd::User(UserCmd::Add {
            name,
            password,
            password_hash,
            tags,
            target,
        }) => (
            target,
            Change::PutUser(PutUser {
                name: name.clone(),
                password: password.unwrap_or_default(),
                password_hash: password_hash.unwrap_or_default(),
                tags,
            }),
            format!("user '{name}' set"),
        ),
        AccessCmd::User(UserCmd::Delete { name, target }) => (
            target,
            Change::DeleteUser(UserName { name: name.clone() }),
            format!("user '{name}' deleted"),
        ),
        AccessCmd::User(UserCmd::SetLimits {
            name,
            limits,
            target,
        }) => (
            target,
            Change::SetUserLimits(SetUserLimits {
                user: name.clone(),
                limits: parse_limits(&limits)?,
                replace: false,
            }),
            format!("limits of user '{name}' set"),
        ),
        AccessCmd::User(UserCmd::ClearLimits {
            name,
            limits,
            target,
        }) => (
            target,
            Change::ClearUserLimits(ClearUserLimits {
                user: name.clone(),
                names: limit_names(limits),
            }),
            format!("limits of user '{name}' cleared"),
        ),
        AccessCmd::Vhost(VhostCmd::SetLimits {
            name,
            limits,
            target,
        }) => (
            target,
            Change::SetVhostLimits(SetVhostLimits {
                vhost: name.clone(),
                limits: parse_limits(&limits)?,
                replace: true,
            }),
            format!("limits of vhost '{name}' set"),
        ),
        AccessCmd::Vhost(VhostCmd::ClearLimits {
            name,
            limits,
            target,
        }) => (
            target,
            Change::ClearVhostLimits(ClearVhostLimits {
                vhost: name.clone(),
                names: limit_names(limits),
            }),
            format!("limits of vhost '{name}' cleared"),
        ),
        AccessCmd::Permissions(PermissionsCmd::SetTopic {
            user,
            vhost,
            exchange,
            write,
            read,
            target,
        }) => (
            target,
            Change::SetTopicPermission(SetTopicPermission {
                user: user.clone(),
                vhost: vhost.clone(),
                exchange: exchange.clone(),
                write,
                read,
            }),
            format!(
                "topic permissions of '{user}' on exchange '{exchange}' in vhost '{vhost}' set"
            ),
        ),
        AccessCmd::Permissions(PermissionsCmd::ClearTopic {
            user,
            vhost,
            exchange,
            target,
        }) => {
            let done = match &exchange {
                Some(x) => format!(
                    "topic permissions of '{user}' on exchange '{x}' in vhost '{vhost}' cleared"
                ),
                None => format!("topic permissions of '{user}' in vhost '{vhost}' cleared"),
            };
            (
                target,
                Change::ClearTopicPermission(ClearTopicPermission {
                    user,
                    vhost,
                    exchange,
                }),
                done,
            )
        }
        AccessCmd::Vhost(VhostCmd::Add { name, target }) => (
            target,
            Change::PutVhost(VhostName { name: name.clone() }),
            format!("vhost '{name}' added"),
        ),
        AccessCmd::Vhost(VhostCmd::Delete { name, target }) => (
            target,
            Change::DeleteVhost(VhostName { name: name.clone() }),
            format!("vhost '{name}' deleted"),
        ),
        AccessCmd::Permissions(PermissionsCmd::Set {
            user,
            vhost,
            configure,
            write,
            read,
            target,
        }) => (
            target,
            Change::SetPermission(SetPermission {
                user: user.clone(),
                vhost: vhost.clone(),
                configure,
                write,
                read,
            }),
            format!("permissions of '{user}' on vhost '{vhost}' set"),
        ),
        AccessCmd::Permissions(PermissionsCmd::Clear {
            user,
            vhost,
            target,
        }) => (
            target,
            Change::ClearPermission(ClearPermission {
                user: user.clone(),
                vhost: vhost.clone(),
            }),
            format!("permissions of '{user}' on vhost '{vhost}' cleared"),
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let addr = &target.grpc;
        AccessClient::new(crate::grpc_channel(addr).await?)
            .change(AccessChange {
                group_id: METADATA_GROUP,
                change: Some(change),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
        writeln!(std::io::stdout().lock(), "{done}")?;
        Ok(())
    })
}
