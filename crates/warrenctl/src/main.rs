//! `warrenctl`: operate a Warren cluster from any node, as `rabbitmqctl`/`rabbitmqadmin` do for
//! RabbitMQ. Talks to the management HTTP API (users, vhosts, permissions, topic permissions,
//! limits, policies, queues, listings, definitions, connections) and to the Admin gRPC service
//! (membership). A failure is one line on stderr and exit status 1.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use warrenctl::{segment, ApiClient};

#[derive(Parser, Debug)]
#[command(name = "warrenctl", version, about)]
struct Args {
    /// Management API of any node: host:port (HTTP), or https://host:port.
    #[arg(
        long,
        global = true,
        env = "WARREN_MANAGEMENT",
        default_value = "127.0.0.1:15672"
    )]
    node: String,
    /// User for the management API (needs the administrator tag for changes).
    #[arg(long, global = true, env = "WARREN_USER", default_value = "guest")]
    user: String,
    #[arg(
        long,
        global = true,
        env = "WARREN_PASSWORD",
        default_value = "guest",
        hide_env_values = true
    )]
    password: String,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// The operator's certificates for the gRPC commands (join, leave): `ca.crt` and
    /// `client.crt`/`client.key` from `warren cert create-client` (or a node's).
    #[arg(long, global = true, env = "WARREN_CERTS_DIR", default_value = "certs")]
    certs_dir: std::path::PathBuf,
    /// The CA certificate (PEM) of the management API's HTTPS certificate, for `--node
    /// https://HOST:PORT` [default: ca.crt of --certs-dir if there is one; public roots always].
    #[arg(long, global = true, env = "WARREN_TLS_CA")]
    tls_ca: Option<std::path::PathBuf>,
    /// Plaintext gRPC, for a cluster started with --insecure.
    #[arg(long, global = true)]
    insecure: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print this command's manual page (roff), for packaging.
    #[command(hide = true)]
    Man,
    /// The cluster: members, leader, term, replication lag.
    Cluster {
        #[command(subcommand)]
        what: ClusterCmd,
    },
    /// List objects of the whole cluster.
    List {
        what: Listing,
    },
    /// Add a user, or replace its password and tags.
    AddUser {
        name: String,
        #[arg(value_name = "PASSWORD")]
        new_password: String,
        /// Comma-separated tags: administrator, monitoring, management.
        #[arg(long, default_value = "")]
        tags: String,
    },
    DeleteUser {
        name: String,
    },
    /// Set a user's configure/write/read permissions (regular expressions) on a vhost.
    SetPermissions {
        #[arg(value_name = "USER")]
        username: String,
        configure: String,
        write: String,
        read: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Set a user's topic permission on an exchange (regular expressions over routing keys:
    /// write for publishing, read for binding; {username} and {vhost} expand).
    SetTopicPermissions {
        #[arg(value_name = "USER")]
        username: String,
        exchange: String,
        write: String,
        read: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Remove every topic permission of a user in a vhost.
    ClearTopicPermissions {
        #[arg(value_name = "USER")]
        username: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Set one limit of a vhost (max-connections, max-queues), keeping its others; a negative
    /// value is no limit, 0 allows none.
    SetVhostLimit {
        limit: String,
        #[arg(allow_negative_numbers = true)]
        value: i64,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Clear one limit of a vhost.
    ClearVhostLimit {
        limit: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Set one limit of a user (max-connections, max-channels), keeping its others; a negative
    /// value is no limit, 0 allows none.
    SetUserLimit {
        #[arg(value_name = "USER")]
        username: String,
        limit: String,
        #[arg(allow_negative_numbers = true)]
        value: i64,
    },
    /// Clear one limit of a user.
    ClearUserLimit {
        #[arg(value_name = "USER")]
        username: String,
        limit: String,
    },
    /// Set a policy of a vhost (rabbitmqctl set_policy): the queues and exchanges whose names
    /// match PATTERN (a regular expression) follow DEFINITION, a JSON object of policy keys
    /// (`{"max-length": 1000}`); of the policies that match, the highest priority wins.
    SetPolicy {
        name: String,
        pattern: String,
        definition: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// all, queues, classic_queues, quorum_queues, streams or exchanges.
        #[arg(long, default_value = "all")]
        apply_to: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Remove a policy of a vhost (rabbitmqctl clear_policy).
    ClearPolicy {
        name: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Set an operator policy (rabbitmqctl set_operator_policy): caps on message-ttl, expires,
    /// max-length, max-length-bytes and delivery-limit (the lowest of it, the policy and the
    /// queue's own argument applies) and overflow, which no user policy can lift.
    SetOperatorPolicy {
        name: String,
        pattern: String,
        definition: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i64,
        /// all, queues, classic_queues, quorum_queues or streams.
        #[arg(long, default_value = "all")]
        apply_to: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Remove an operator policy (rabbitmqctl clear_operator_policy).
    ClearOperatorPolicy {
        name: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    AddVhost {
        name: String,
    },
    DeleteVhost {
        name: String,
    },
    DeleteQueue {
        name: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Remove every ready message of a queue.
    PurgeQueue {
        name: String,
        #[arg(long, short = 'p', default_value = "/")]
        vhost: String,
    },
    /// Close a client connection (name as `list connections` shows it) with 320 CONNECTION_FORCED.
    CloseConnection {
        name: String,
        #[arg(long, default_value = "Closed via warrenctl")]
        reason: String,
    },
    /// Write the definitions (users, vhosts, permissions, exchanges, queues, bindings) as
    /// RabbitMQ's JSON, to a file or stdout.
    Export {
        file: Option<std::path::PathBuf>,
    },
    /// Import a definitions file (Warren's or RabbitMQ's export).
    Import {
        file: std::path::PathBuf,
    },
    /// Add a started node (with --join) to the cluster and make it a voter.
    Join {
        /// ID@AMQP_HOST:PORT@GRPC_HOST:PORT
        member: String,
        /// gRPC address of any member.
        #[arg(long, default_value = "127.0.0.1:7101")]
        grpc: String,
    },
    /// Remove a node from the cluster (a leader hands over its leadership first).
    Leave {
        id: u64,
        #[arg(long, default_value = "127.0.0.1:7101")]
        grpc: String,
    },
    /// Set the memory high watermark of the node at --grpc, at once, until it restarts
    /// (rabbitmqctl set_vm_memory_high_watermark): a fraction of its memory (`0.6`), or
    /// `absolute SIZE` (`absolute 2GB`).
    SetVmMemoryHighWatermark {
        /// A fraction, or `absolute`.
        limit: String,
        /// With `absolute`: the size (`2GB`, `512MiB`, bytes).
        size: Option<String>,
        /// gRPC address of the node to change.
        #[arg(long, default_value = "127.0.0.1:7101")]
        grpc: String,
    },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    Status,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum Listing {
    Queues,
    Exchanges,
    Bindings,
    Connections,
    Channels,
    Consumers,
    Users,
    Vhosts,
    Permissions,
    TopicPermissions,
    VhostLimits,
    UserLimits,
    Policies,
    #[value(alias = "operator_policies")]
    OperatorPolicies,
}

fn main() {
    let args = Args::parse();
    if let Cmd::Man = args.command {
        let page = clap_mangen::Man::new(<Args as clap::CommandFactory>::command());
        if page.render(&mut std::io::stdout().lock()).is_err() {
            std::process::exit(1);
        }
        return;
    }
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args)));
    if let Err(e) = result {
        // One line, also for a reason of several (RabbitMQ's "Validation failed\n\n...").
        let text = format!("{e:#}");
        let line = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(": ");
        let _ = writeln!(std::io::stderr().lock(), "warrenctl: {line}");
        std::process::exit(1);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// Prints rows as aligned columns.
fn table(out: &mut impl Write, headers: &[&str], rows: Vec<Vec<String>>) -> std::io::Result<()> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    writeln!(
        out,
        "{}",
        line(headers.iter().map(|h| h.to_string()).collect())
    )?;
    for row in rows {
        writeln!(out, "{}", line(row))?;
    }
    Ok(())
}

/// Column headers and JSON paths (`a.b` descends into objects) of each listing.
fn columns(what: Listing) -> (&'static str, &'static [(&'static str, &'static str)]) {
    match what {
        Listing::Queues => (
            "/api/queues",
            &[
                ("vhost", "vhost"),
                ("name", "name"),
                ("messages", "messages"),
                ("ready", "messages_ready"),
                ("unacked", "messages_unacknowledged"),
                ("consumers", "consumers"),
                ("publish/s", "message_stats.publish_details.rate"),
                ("deliver/s", "message_stats.deliver_get_details.rate"),
                ("leader", "leader"),
            ],
        ),
        Listing::Exchanges => (
            "/api/exchanges",
            &[
                ("vhost", "vhost"),
                ("name", "name"),
                ("type", "type"),
                ("durable", "durable"),
                ("in/s", "message_stats.publish_in_details.rate"),
            ],
        ),
        Listing::Bindings => (
            "/api/bindings",
            &[
                ("vhost", "vhost"),
                ("source", "source"),
                ("destination", "destination"),
                ("type", "destination_type"),
                ("routing_key", "routing_key"),
            ],
        ),
        Listing::Connections => (
            "/api/connections",
            &[
                ("name", "name"),
                ("node", "node"),
                ("user", "user"),
                ("vhost", "vhost"),
                ("channels", "channels"),
            ],
        ),
        Listing::Channels => (
            "/api/channels",
            &[
                ("name", "name"),
                ("user", "user"),
                ("consumers", "consumer_count"),
                ("unacked", "messages_unacknowledged"),
                ("prefetch", "prefetch_count"),
            ],
        ),
        Listing::Consumers => (
            "/api/consumers",
            &[
                ("vhost", "queue.vhost"),
                ("queue", "queue.name"),
                ("tag", "consumer_tag"),
                ("channel", "channel_details.name"),
                ("ack_required", "ack_required"),
                ("prefetch", "prefetch_count"),
            ],
        ),
        Listing::Users => ("/api/users", &[("name", "name"), ("tags", "tags")]),
        Listing::Vhosts => ("/api/vhosts", &[("name", "name"), ("messages", "messages")]),
        Listing::Permissions => (
            "/api/permissions",
            &[
                ("user", "user"),
                ("vhost", "vhost"),
                ("configure", "configure"),
                ("write", "write"),
                ("read", "read"),
            ],
        ),
        Listing::TopicPermissions => (
            "/api/topic-permissions",
            &[
                ("user", "user"),
                ("vhost", "vhost"),
                ("exchange", "exchange"),
                ("write", "write"),
                ("read", "read"),
            ],
        ),
        Listing::VhostLimits => (
            "/api/vhost-limits",
            &[
                ("vhost", "vhost"),
                ("max-connections", "value.max-connections"),
                ("max-queues", "value.max-queues"),
            ],
        ),
        Listing::UserLimits => (
            "/api/user-limits",
            &[
                ("user", "user"),
                ("max-connections", "value.max-connections"),
                ("max-channels", "value.max-channels"),
            ],
        ),
        Listing::Policies => ("/api/policies", POLICY_COLUMNS),
        Listing::OperatorPolicies => ("/api/operator-policies", POLICY_COLUMNS),
    }
}

/// rabbitmqctl list_policies' columns.
const POLICY_COLUMNS: &[(&str, &str)] = &[
    ("vhost", "vhost"),
    ("name", "name"),
    ("pattern", "pattern"),
    ("apply-to", "apply-to"),
    ("definition", "definition"),
    ("priority", "priority"),
];

fn pick<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(v, |v, k| v.get(k).unwrap_or(&Value::Null))
}

/// Sets a policy (`operator`: an operator policy) as `/api/policies` takes it; what was done,
/// in rabbitmqctl's words.
async fn set_policy(
    api: &ApiClient,
    operator: bool,
    policy: (&str, &str, &str),
    priority: i64,
    apply_to: &str,
    vhost: &str,
) -> anyhow::Result<String> {
    let (name, pattern, definition) = policy;
    let parsed: Value = serde_json::from_str(definition)
        .with_context(|| format!("DEFINITION is not JSON: {definition}"))?;
    let kind = if operator {
        "operator-policies"
    } else {
        "policies"
    };
    api.call(
        "PUT",
        &format!("/api/{kind}/{}/{}", segment(vhost), segment(name)),
        Some(&json!({
            "pattern": pattern,
            "definition": parsed,
            "priority": priority,
            "apply-to": apply_to,
        })),
    )
    .await?;
    let what = if operator {
        "operator policy"
    } else {
        "policy"
    };
    Ok(format!(
        "Setting {what} \"{name}\" for pattern \"{pattern}\" to \"{definition}\" \
         with priority \"{priority}\" for vhost \"{vhost}\" ..."
    ))
}

/// Removes a policy (`operator`: an operator policy); what was done, in rabbitmqctl's words.
async fn clear_policy(
    api: &ApiClient,
    operator: bool,
    name: &str,
    vhost: &str,
) -> anyhow::Result<String> {
    let kind = if operator {
        "operator-policies"
    } else {
        "policies"
    };
    api.call(
        "DELETE",
        &format!("/api/{kind}/{}/{}", segment(vhost), segment(name)),
        None,
    )
    .await?;
    let what = if operator {
        "operator policy"
    } else {
        "policy"
    };
    Ok(format!(
        "Clearing {what} \"{name}\" on vhost \"{vhost}\" ..."
    ))
}

/// Sets (`value`) or clears one limit of a vhost or a user (`kind`: "vhost" or "user"), as
/// `/api/vhost-limits` and `/api/user-limits` take it; what was done, for the operator.
async fn change_limit(
    api: &ApiClient,
    kind: &str,
    owner: &str,
    limit: &str,
    value: Option<i64>,
) -> anyhow::Result<String> {
    let path = format!("/api/{kind}-limits/{}/{}", segment(owner), segment(limit));
    match value {
        Some(value) => {
            api.call("PUT", &path, Some(&json!({ "value": value })))
                .await?;
            Ok(format!("limit {limit} of {kind} '{owner}' set to {value}"))
        }
        None => {
            api.call("DELETE", &path, None).await?;
            Ok(format!("limit {limit} of {kind} '{owner}' cleared"))
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut api = ApiClient::new(&args.node, &args.user, &args.password);
    // HTTPS (`--node https://...`) trusts the public roots, and the cluster's CA: --tls-ca, or
    // ca.crt of --certs-dir when there is one.
    let ca = args
        .tls_ca
        .clone()
        .or_else(|| Some(args.certs_dir.join("ca.crt")).filter(|p| p.exists()));
    if let Some(ca) = ca {
        let pem = std::fs::read_to_string(&ca)
            .with_context(|| format!("reading the CA certificate {}", ca.display()))?;
        api = api.trusting(&pem)?;
    }
    let mut out = std::io::stdout().lock();
    let done = |out: &mut std::io::StdoutLock, msg: String| -> anyhow::Result<()> {
        writeln!(out, "{msg}")?;
        Ok(())
    };
    match args.command {
        // Handled in `main`.
        Cmd::Man => {}
        Cmd::Cluster {
            what: ClusterCmd::Status,
        } => {
            let overview = api.get("/api/overview").await?;
            let nodes = api.get("/api/nodes").await?;
            if args.json {
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({"raft": overview["raft"], "nodes": nodes})
                    )?
                )?;
                return Ok(());
            }
            writeln!(
                out,
                "leader {}, term {}, committed {}, applied {} (as seen by {})",
                text(&overview["raft"]["leader"]),
                text(&overview["raft"]["term"]),
                text(&overview["raft"]["committed_index"]),
                text(&overview["raft"]["applied_index"]),
                text(&overview["node"]),
            )?;
            let rows = nodes
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    vec![
                        text(&n["name"]),
                        text(&n["raft"]["role"]),
                        text(&n["raft"]["amqp_address"]),
                        text(&n["raft"]["grpc_address"]),
                        text(&n["raft"]["matched_index"]),
                        text(&n["raft"]["lag"]),
                    ]
                })
                .collect();
            table(
                &mut out,
                &["node", "role", "amqp", "grpc", "matched", "lag"],
                rows,
            )?;
        }
        Cmd::List { what } => {
            let (path, cols) = columns(what);
            let items = api.get(path).await?;
            if args.json {
                writeln!(out, "{}", serde_json::to_string_pretty(&items)?)?;
                return Ok(());
            }
            let rows = items
                .as_array()
                .into_iter()
                .flatten()
                .map(|item| cols.iter().map(|(_, p)| text(pick(item, p))).collect())
                .collect();
            let headers: Vec<&str> = cols.iter().map(|(h, _)| *h).collect();
            table(&mut out, &headers, rows)?;
        }
        Cmd::AddUser {
            name,
            new_password,
            tags,
        } => {
            api.call(
                "PUT",
                &format!("/api/users/{}", segment(&name)),
                Some(&json!({"password": new_password, "tags": tags})),
            )
            .await?;
            done(&mut out, format!("user '{name}' added"))?;
        }
        Cmd::DeleteUser { name } => {
            api.call("DELETE", &format!("/api/users/{}", segment(&name)), None)
                .await?;
            done(&mut out, format!("user '{name}' deleted"))?;
        }
        Cmd::SetPermissions {
            username: user,
            configure,
            write,
            read,
            vhost,
        } => {
            api.call(
                "PUT",
                &format!("/api/permissions/{}/{}", segment(&vhost), segment(&user)),
                Some(&json!({"configure": configure, "write": write, "read": read})),
            )
            .await?;
            done(
                &mut out,
                format!("permissions of '{user}' on vhost '{vhost}' set"),
            )?;
        }
        Cmd::SetTopicPermissions {
            username: user,
            exchange,
            write,
            read,
            vhost,
        } => {
            api.call(
                "PUT",
                &format!(
                    "/api/topic-permissions/{}/{}",
                    segment(&vhost),
                    segment(&user)
                ),
                Some(&json!({"exchange": exchange, "write": write, "read": read})),
            )
            .await?;
            done(
                &mut out,
                format!(
                    "topic permissions of '{user}' on exchange '{exchange}' in vhost '{vhost}' set"
                ),
            )?;
        }
        Cmd::ClearTopicPermissions {
            username: user,
            vhost,
        } => {
            api.call(
                "DELETE",
                &format!(
                    "/api/topic-permissions/{}/{}",
                    segment(&vhost),
                    segment(&user)
                ),
                None,
            )
            .await?;
            done(
                &mut out,
                format!("topic permissions of '{user}' in vhost '{vhost}' cleared"),
            )?;
        }
        Cmd::SetVhostLimit {
            limit,
            value,
            vhost,
        } => done(
            &mut out,
            change_limit(&api, "vhost", &vhost, &limit, Some(value)).await?,
        )?,
        Cmd::ClearVhostLimit { limit, vhost } => done(
            &mut out,
            change_limit(&api, "vhost", &vhost, &limit, None).await?,
        )?,
        Cmd::SetUserLimit {
            username: user,
            limit,
            value,
        } => done(
            &mut out,
            change_limit(&api, "user", &user, &limit, Some(value)).await?,
        )?,
        Cmd::ClearUserLimit {
            username: user,
            limit,
        } => done(
            &mut out,
            change_limit(&api, "user", &user, &limit, None).await?,
        )?,
        Cmd::SetPolicy {
            name,
            pattern,
            definition,
            priority,
            apply_to,
            vhost,
        } => done(
            &mut out,
            set_policy(
                &api,
                false,
                (&name, &pattern, &definition),
                priority,
                &apply_to,
                &vhost,
            )
            .await?,
        )?,
        Cmd::ClearPolicy { name, vhost } => {
            done(&mut out, clear_policy(&api, false, &name, &vhost).await?)?
        }
        Cmd::SetOperatorPolicy {
            name,
            pattern,
            definition,
            priority,
            apply_to,
            vhost,
        } => done(
            &mut out,
            set_policy(
                &api,
                true,
                (&name, &pattern, &definition),
                priority,
                &apply_to,
                &vhost,
            )
            .await?,
        )?,
        Cmd::ClearOperatorPolicy { name, vhost } => {
            done(&mut out, clear_policy(&api, true, &name, &vhost).await?)?
        }
        Cmd::AddVhost { name } => {
            api.call("PUT", &format!("/api/vhosts/{}", segment(&name)), None)
                .await?;
            done(&mut out, format!("vhost '{name}' added"))?;
        }
        Cmd::DeleteVhost { name } => {
            api.call("DELETE", &format!("/api/vhosts/{}", segment(&name)), None)
                .await?;
            done(&mut out, format!("vhost '{name}' deleted"))?;
        }
        Cmd::DeleteQueue { name, vhost } => {
            api.call(
                "DELETE",
                &format!("/api/queues/{}/{}", segment(&vhost), segment(&name)),
                None,
            )
            .await?;
            done(
                &mut out,
                format!("queue '{name}' in vhost '{vhost}' deleted"),
            )?;
        }
        Cmd::PurgeQueue { name, vhost } => {
            api.call(
                "DELETE",
                &format!(
                    "/api/queues/{}/{}/contents",
                    segment(&vhost),
                    segment(&name)
                ),
                None,
            )
            .await?;
            done(
                &mut out,
                format!("queue '{name}' in vhost '{vhost}' purged"),
            )?;
        }
        Cmd::CloseConnection { name, reason } => {
            let (status, body) = api
                .request_with(
                    "DELETE",
                    &format!("/api/connections/{}", segment(&name)),
                    None,
                    &[("x-reason", &reason)],
                )
                .await?;
            if !(200..300).contains(&status) {
                anyhow::bail!(
                    "{status}: {}",
                    body.get("reason")
                        .map(text)
                        .unwrap_or_else(|| body.to_string())
                );
            }
            done(&mut out, format!("connection '{name}' closed"))?;
        }
        Cmd::Export { file } => {
            let defs = serde_json::to_string_pretty(&api.get("/api/definitions").await?)?;
            match file {
                Some(path) => std::fs::write(&path, defs + "\n")
                    .with_context(|| format!("writing {}", path.display()))?,
                None => writeln!(out, "{defs}")?,
            }
        }
        Cmd::Import { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let defs: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            api.call("POST", "/api/definitions", Some(&defs)).await?;
            done(
                &mut out,
                format!("definitions imported from {}", file.display()),
            )?;
        }
        Cmd::Join { member, grpc } => {
            let tls = membership::tls(&args.certs_dir, args.insecure)?;
            let msg = membership::join(&member, &grpc, tls.as_ref()).await?;
            done(&mut out, msg)?;
        }
        Cmd::Leave { id, grpc } => {
            let tls = membership::tls(&args.certs_dir, args.insecure)?;
            let msg = membership::leave(id, &grpc, tls.as_ref()).await?;
            done(&mut out, msg)?;
        }
        Cmd::SetVmMemoryHighWatermark { limit, size, grpc } => {
            use warren_proto::raft::memory_high_watermark::Limit;
            let limit = match (limit.as_str(), size) {
                ("absolute", Some(size)) => Limit::Absolute(size),
                ("absolute", None) => anyhow::bail!("absolute needs a size, e.g. `absolute 2GB`"),
                (fraction, None) => Limit::Fraction(fraction.parse().with_context(|| {
                    format!("{fraction:?} is not a fraction (e.g. 0.6) nor `absolute SIZE`")
                })?),
                (other, Some(_)) => anyhow::bail!("expected `absolute SIZE`, got {other:?}"),
            };
            let tls = membership::tls(&args.certs_dir, args.insecure)?;
            let reply = membership::admin(&grpc, tls.as_ref())
                .await?
                .set_memory_high_watermark(warren_proto::raft::MemoryHighWatermark {
                    limit: Some(limit),
                })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            done(
                &mut out,
                format!(
                    "memory high watermark of {grpc} set: {} bytes",
                    reply.mem_limit
                ),
            )?;
        }
    }
    Ok(())
}

/// Membership changes through the Admin gRPC service of any member (it forwards to the leader).
mod membership {
    use super::*;
    use warren_proto::raft::admin_client::AdminClient;
    use warren_proto::raft::{AddLearnerRequest, PromoteRequest, RemoveRequest};
    use warren_tls::ClusterTls;

    /// The operator's TLS, or none with --insecure.
    pub(super) fn tls(
        certs_dir: &std::path::Path,
        insecure: bool,
    ) -> anyhow::Result<Option<ClusterTls>> {
        if insecure {
            return Ok(None);
        }
        ClusterTls::load_operator(&warren_tls::files::CertsDir::new(certs_dir))
            .map(Some)
            .map_err(|e| {
                anyhow::anyhow!(
                    "{e} (join and leave need the operator's ca.crt and client.crt/client.key in --certs-dir, or --insecure for a cluster started with --insecure)"
                )
            })
    }

    pub(super) async fn admin(
        addr: &str,
        tls: Option<&ClusterTls>,
    ) -> anyhow::Result<AdminClient<tonic::transport::Channel>> {
        let channel = warren_tls::config::grpc_endpoint(tls, addr, addr)
            .with_context(|| format!("bad gRPC address {addr}"))?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
        Ok(AdminClient::new(channel))
    }

    fn status(s: tonic::Status) -> anyhow::Error {
        anyhow::anyhow!("{}", s.message())
    }

    pub(super) async fn join(
        member: &str,
        grpc: &str,
        tls: Option<&ClusterTls>,
    ) -> anyhow::Result<String> {
        let parts: Vec<&str> = member.split('@').collect();
        let [id, amqp, node_grpc] = parts[..] else {
            anyhow::bail!("member must be ID@AMQP_HOST:PORT@GRPC_HOST:PORT, not '{member}'");
        };
        let id: u64 = id.parse().with_context(|| format!("bad node id '{id}'"))?;
        let mut client = admin(grpc, tls).await?;
        let added = client
            .add_learner(AddLearnerRequest {
                group_id: 0,
                id,
                amqp_addr: amqp.to_owned(),
                grpc_addr: node_grpc.to_owned(),
                catch_up_timeout_ms: 0,
                forwarded: false,
            })
            .await
            .map_err(status)?
            .into_inner();
        let promoted = client
            .promote(PromoteRequest {
                group_id: 0,
                id,
                forwarded: false,
            })
            .await
            .map_err(status)?
            .into_inner();
        Ok(format!("{}; {}", added.message, promoted.message))
    }

    pub(super) async fn leave(
        id: u64,
        grpc: &str,
        tls: Option<&ClusterTls>,
    ) -> anyhow::Result<String> {
        Ok(admin(grpc, tls)
            .await?
            .remove(RemoveRequest {
                group_id: 0,
                id,
                forwarded: false,
            })
            .await
            .map_err(status)?
            .into_inner()
            .message)
    }
}
