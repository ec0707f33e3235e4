//! The gRPC port of a cluster node answers only the certificates that may call it: every
//! method of every service, called with no TLS, with TLS but no client certificate, with a
//! certificate of another CA, with a node certificate of the right CA that names no member (Raft
//! only: a node added since the receiver's membership was brought up to date looks like that; a
//! removed node's certificate is refused, see `membership.rs`), with an AMQP client's
//! certificate, with an operator's, and with a member's. The table is printed (run with
//! --no-capture) and asserted; afterwards the cluster has not noticed.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use warren_proto::access::access_change::Change;
use warren_proto::access::access_client::AccessClient;
use warren_proto::access::{AccessChange, VhostName};
use warren_proto::management::management_client::ManagementClient;
use warren_proto::management::{CloseConnectionRequest, ViewRequest};
use warren_proto::raft::admin_client::AdminClient;
use warren_proto::raft::raft_client::RaftClient;
use warren_proto::raft::relay_client::RelayClient;
use warren_proto::raft::{
    memory_high_watermark, AddLearnerRequest, MemoryHighWatermark, PromoteRequest, ProposeRequest,
    RaftRequest, RelayBatch, RemoveRequest, SnapshotChunk, StatusRequest,
};
use warren_tests::certs::certs;
use warren_tests::cluster::Cluster;
use warren_tests::{assert_serves_clients, STEP};

/// How a caller presents itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Caller {
    Plaintext,
    TlsNoCert,
    OtherCa,
    UnknownNode,
    AmqpClient,
    Operator,
    Member,
}

const CALLERS: [Caller; 7] = [
    Caller::Plaintext,
    Caller::TlsNoCert,
    Caller::OtherCa,
    Caller::UnknownNode,
    Caller::AmqpClient,
    Caller::Operator,
    Caller::Member,
];

/// What became of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    /// No connection: the TLS handshake failed (or the server closed it).
    NoConnection,
    Unauthenticated,
    PermissionDenied,
    /// The call reached the service, which answered OK or with its own error (the requests
    /// are harmless: undecodable payloads, unknown ids).
    Served(tonic::Code),
}

impl Outcome {
    fn cell(&self) -> String {
        match self {
            Outcome::NoConnection => "TLS refused".into(),
            Outcome::Unauthenticated => "UNAUTHENTICATED".into(),
            Outcome::PermissionDenied => "PERMISSION_DENIED".into(),
            Outcome::Served(code) => format!("served ({code:?})"),
        }
    }

    fn served(&self) -> bool {
        matches!(self, Outcome::Served(_))
    }
}

fn pem(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn channel(caller: Caller, addr: &str, amqp_dir: &std::path::Path) -> Option<Channel> {
    let ca = Certificate::from_pem(pem(certs().ca_dir().join("ca.crt")));
    let identity = |dir: std::path::PathBuf, name: &str| {
        Identity::from_pem(
            pem(dir.join(format!("{name}.crt"))),
            pem(dir.join(format!("{name}.key"))),
        )
    };
    let tls = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("127.0.0.1");
    let endpoint = match caller {
        Caller::Plaintext => Endpoint::from_shared(format!("http://{addr}")).ok()?,
        _ => {
            let tls = match caller {
                Caller::TlsNoCert => tls,
                Caller::OtherCa => tls.identity(identity(certs().foreign_node_dir(1), "node")),
                Caller::UnknownNode => tls.identity(identity(certs().node_dir(9), "node")),
                Caller::AmqpClient => tls.identity(identity(amqp_dir.to_path_buf(), "client")),
                Caller::Operator => tls.identity(identity(certs().operator_dir(), "client")),
                Caller::Member => tls.identity(identity(certs().node_dir(1), "node")),
                Caller::Plaintext => unreachable!("handled above"),
            };
            Endpoint::from_shared(format!("https://{addr}"))
                .ok()?
                .tls_config(tls)
                .ok()?
        }
    };
    endpoint
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()
}

fn outcome<T>(result: Result<T, tonic::Status>) -> Outcome {
    match result {
        Ok(_) => Outcome::Served(tonic::Code::Ok),
        Err(s) => match s.code() {
            tonic::Code::Unauthenticated => Outcome::Unauthenticated,
            tonic::Code::PermissionDenied => Outcome::PermissionDenied,
            // A connection the server dropped during or after the handshake (TLS 1.3: a
            // refused client certificate shows at the first read).
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Internal
                if s.message().contains("transport")
                    || s.message().contains("connection")
                    || s.message().contains("h2") =>
            {
                Outcome::NoConnection
            }
            // hyper's word for a connection the server closed before answering: the server
            // refused the client's certificate after the client had sent its request (TLS
            // 1.3 clients finish their side of the handshake first).
            tonic::Code::Cancelled if s.message().contains("operation was canceled") => {
                Outcome::NoConnection
            }
            code => Outcome::Served(code),
        },
    }
}

const METHODS: [&str; 15] = [
    "Raft.Vote",
    "Raft.AppendEntries",
    "Raft.AppendStream",
    "Raft.InstallSnapshot",
    "Raft.TransferLeader",
    "Relay.Attach",
    "Relay.Propose",
    "Admin.Status",
    "Admin.AddLearner",
    "Admin.Promote",
    "Admin.Remove",
    "Admin.SetMemoryHighWatermark",
    "Access.Change",
    "Management.View",
    "Management.CloseConnection",
];

/// Calls `method` once over `channel` with a request that changes nothing: Raft requests
/// from node `from` (the certificate's node) with undecodable payloads, membership changes
/// of an id that is no member, a relay stream with a garbled first batch, a watermark of 0.
async fn call(method: &str, channel: Channel, from: u64, incarnation: u64) -> Outcome {
    let raft = || RaftRequest {
        group_id: 0,
        payload: Default::default(),
        from_node: from,
        from_incarnation: incarnation,
        to_incarnation: 0,
    };
    match method {
        "Raft.Vote" => outcome(RaftClient::new(channel).vote(raft()).await),
        "Raft.AppendEntries" => outcome(RaftClient::new(channel).append_entries(raft()).await),
        "Raft.TransferLeader" => outcome(RaftClient::new(channel).transfer_leader(raft()).await),
        "Raft.AppendStream" => {
            // The call is answered at once; the refusal or the bad payload ends the stream.
            match RaftClient::new(channel)
                .append_stream(tokio_stream::iter(vec![raft()]))
                .await
            {
                Ok(replies) => outcome(replies.into_inner().message().await.map(|_| ())),
                Err(status) => outcome::<()>(Err(status)),
            }
        }
        "Raft.InstallSnapshot" => {
            let chunk = SnapshotChunk {
                group_id: 0,
                from_node: from,
                from_incarnation: incarnation,
                ..Default::default()
            };
            outcome(
                RaftClient::new(channel)
                    .install_snapshot(tokio_stream::iter(vec![chunk]))
                    .await,
            )
        }
        "Relay.Attach" => {
            let garbled = RelayBatch {
                group_id: 0,
                batch: vec![0xff; 7].into(),
                applied: 0,
            };
            outcome(
                RelayClient::new(channel)
                    .attach(tokio_stream::iter(vec![garbled]))
                    .await,
            )
        }
        "Relay.Propose" => outcome(
            RelayClient::new(channel)
                .propose(ProposeRequest {
                    group_id: 0,
                    command: vec![0xff; 3].into(),
                })
                .await,
        ),
        "Admin.Status" => outcome(
            AdminClient::new(channel)
                .status(StatusRequest {
                    group_id: 0,
                    digest: false,
                })
                .await,
        ),
        "Admin.AddLearner" => outcome(
            AdminClient::new(channel)
                .add_learner(AddLearnerRequest {
                    group_id: 0,
                    id: 1,
                    amqp_addr: "127.0.0.1:1".into(),
                    grpc_addr: "127.0.0.1:1".into(),
                    catch_up_timeout_ms: 1,
                    forwarded: false,
                })
                .await,
        ),
        "Admin.Promote" => outcome(
            AdminClient::new(channel)
                .promote(PromoteRequest {
                    group_id: 0,
                    id: 1999,
                    forwarded: false,
                })
                .await,
        ),
        "Admin.Remove" => outcome(
            AdminClient::new(channel)
                .remove(RemoveRequest {
                    group_id: 0,
                    id: 1999,
                    forwarded: false,
                })
                .await,
        ),
        // A watermark of 0 is refused before anything changes.
        "Admin.SetMemoryHighWatermark" => outcome(
            AdminClient::new(channel)
                .set_memory_high_watermark(MemoryHighWatermark {
                    limit: Some(memory_high_watermark::Limit::Fraction(0.0)),
                })
                .await,
        ),
        "Access.Change" => outcome(
            AccessClient::new(channel)
                .change(AccessChange {
                    group_id: 0,
                    change: Some(Change::DeleteVhost(VhostName {
                        name: "no-such-vhost".into(),
                    })),
                })
                .await,
        ),
        "Management.View" => outcome(
            ManagementClient::new(channel)
                .view(ViewRequest {
                    group_id: 0,
                    local: true,
                })
                .await,
        ),
        "Management.CloseConnection" => outcome(
            ManagementClient::new(channel)
                .close_connection(CloseConnectionRequest {
                    group_id: 0,
                    conn: 1,
                    reason: "test".into(),
                })
                .await,
        ),
        other => panic!("no such method in the table: {other}"),
    }
}

/// The node's status, asked as the operator.
async fn status(operator: &Channel) -> warren_proto::raft::StatusReply {
    AdminClient::new(operator.clone())
        .status(StatusRequest {
            group_id: 0,
            digest: false,
        })
        .await
        .expect("status")
        .into_inner()
}

/// Who may call what: members everything; operators the operator services; a node certificate
/// of the CA that names no member, Raft (where Raft itself then refuses its vote and its bad
/// payloads) and the read-only status; nobody else.
fn allowed(method: &str, caller: Caller) -> bool {
    match caller {
        Caller::Member => true,
        Caller::UnknownNode => method.starts_with("Raft.") || method == "Admin.Status",
        Caller::Operator => !(method.starts_with("Raft.") || method.starts_with("Relay.")),
        _ => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_grpc_method_answers_only_the_certificates_that_may_call_it() {
    let cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.wait_for_leader(STEP * 3).expect("a leader");
    // Ask a follower: node 1's certificate is the member's, so call another node.
    let target = (2..=3).find(|n| *n != leader).unwrap_or(2);
    let addr = cluster.grpc_addr(target);
    let amqp_dir = certs().amqp_client_dir("app");

    let operator = channel(Caller::Operator, &addr, &amqp_dir)
        .await
        .expect("the operator connects");
    let before = status(&operator).await;
    assert!(!before.insecure, "the cluster runs with mutual TLS");
    let incarnation = before
        .members
        .iter()
        .find(|m| m.id == 1)
        .map(|m| m.incarnation)
        .expect("node 1 is a member");

    // Bad input on the gRPC port while the calls below run: garbage, and a client that never
    // finishes its handshake. Neither holds anything up.
    let mut garbage = std::net::TcpStream::connect(&addr).expect("connect");
    std::io::Write::write_all(&mut garbage, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nnot TLS")
        .expect("write");
    let stalled = std::net::TcpStream::connect(&addr).expect("connect");

    let mut table = String::from(
        "| method | no TLS | TLS, no certificate | another CA | node cert, never a member | AMQP client cert | operator cert | member node cert |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut wrong = Vec::new();
    for method in METHODS {
        table.push_str(&format!("| {method} |"));
        for caller in CALLERS {
            let result = match channel(caller, &addr, &amqp_dir).await {
                None => Outcome::NoConnection,
                // Node 9 speaks for itself, with no incarnation the membership records.
                Some(ch) if caller == Caller::UnknownNode => call(method, ch, 9, 0).await,
                Some(ch) => call(method, ch, 1, incarnation).await,
            };
            table.push_str(&format!(" {} |", result.cell()));
            if result.served() != allowed(method, caller) {
                wrong.push(format!("{method} by {caller:?}: {result:?}"));
            }
        }
        table.push('\n');
    }
    eprintln!("{table}");
    assert!(
        wrong.is_empty(),
        "calls answered wrongly:\n{}\n{table}",
        wrong.join("\n")
    );

    // The garbage was refused at once; the stalled client is still waiting (the handshake
    // timeout is 10 s) and was no obstacle to the calls above.
    garbage
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    // At most a TLS alert, then the end of the stream (an error here: still open after 5 s).
    std::io::Read::read_to_end(&mut garbage, &mut answer).expect("the server closed it");
    assert!(answer.len() < 16, "{answer:?}");
    drop(stalled);

    // The cluster did not notice: same leader and term, and it still confirms a publish.
    let after = status(&operator).await;
    assert_eq!(
        (after.leader, after.term),
        (before.leader, before.term),
        "no election"
    );
    assert_serves_clients(cluster.node(target)).await;
}

/// A node restarted with a new certificate from the same CA keeps its place: it rejoins under
/// its id, catches up, and the cluster serves through it.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_restarted_with_a_new_certificate_keeps_its_place() {
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    let leader = cluster.wait_for_leader(STEP * 3).expect("a leader");
    let rotated = (1..=3).find(|n| *n != leader).expect("a follower");
    let dir = certs().node_dir(rotated);
    let old = pem(dir.join("node.crt"));
    cluster.node_mut(rotated).kill9().expect("kill");
    certs()
        .issue(
            &dir,
            &[
                "create-node",
                &rotated.to_string(),
                "--host",
                "127.0.0.1",
                "--overwrite",
            ],
        )
        .expect("a new certificate");
    assert_ne!(
        pem(dir.join("node.crt")),
        old,
        "the certificate was replaced"
    );
    // Traffic while it is down, which it must catch up on.
    assert_serves_clients(cluster.node(leader)).await;
    cluster.node_mut(rotated).restart().expect("restart");
    let deadline = std::time::Instant::now() + STEP * 3;
    loop {
        let (l, r) = (cluster.committed(leader), cluster.committed(rotated));
        if r >= l {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {rotated} did not catch up ({r} < {l})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = cluster.status(rotated).expect("status");
    assert!(!status.contains("REFUSED"), "{status}");
    assert_serves_clients(cluster.node(rotated)).await;
}
