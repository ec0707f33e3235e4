//! `warren user|vhost|permissions …`: operator changes to vhosts, users and permissions through
//! a node's Access gRPC service (any node: a follower forwards to the leader). The change is
//! applied on every node when the command returns.

use std::io::Write;
use warren_proto::access::access_change::Change;
use warren_proto::access::access_client::AccessClient;
use warren_proto::access::{
    AccessChange, ClearPermission, PutUser, SetPermission, UserName, VhostName,
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
}

/// One operator change, as the CLI was asked for it.
pub(crate) enum AccessCmd {
    User(UserCmd),
    Vhost(VhostCmd),
    Permissions(PermissionsCmd),
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
