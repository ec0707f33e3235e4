//! Membership changes at run time and the refusal of a wiped node, with real `warren` processes
//! on loopback: a fourth node joins while confirmed publishes flow (catching up through a
//! snapshot, the log being purged), is promoted, then an original follower and the leader are
//! removed, and nothing confirmed is lost; a follower whose data was wiped comes back under its
//! old id and is refused (node 1, which formed the cluster, forms no new one), while the others
//! go on confirming in the same term.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_proto::raft::raft_client::RaftClient;
use warren_proto::raft::RaftRequest;
use warren_tests::certs::certs;
use warren_tests::cluster::{
    consume_numbers, publish_until_stopped, warren_cli, Cluster, Progress,
};
use warren_tests::lapin::options::QueueDeclareOptions;
use warren_tests::lapin::types::FieldTable;
use warren_tests::{channel, connect, within};

/// Declares the durable queue `name` through node `i`.
async fn declare_durable(cluster: &Cluster, i: usize, name: &str) {
    let conn = connect(cluster.node(i).uri()).await;
    let ch = channel(&conn).await;
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    within(ch.queue_declare(name.into(), durable, FieldTable::default()))
        .await
        .expect("queue.declare");
    let _ = conn.close(200, "bye".into()).await;
}

/// Starts publishing confirmed messages to `work` through node `i`, 50 unconfirmed at most,
/// until `progress.stop`.
fn publish_to_work(
    cluster: &Cluster,
    i: usize,
) -> (
    Arc<Progress>,
    tokio::task::JoinHandle<anyhow::Result<std::collections::BTreeSet<u32>>>,
) {
    let progress = Arc::new(Progress::default());
    let publishing = tokio::spawn(publish_until_stopped(
        cluster.node(i).uri().to_string(),
        "work".into(),
        50,
        progress.clone(),
    ));
    (progress, publishing)
}

/// Consumes `work` through node `i`, failing the test if a number of `confirmed` is missing.
async fn assert_all_in_work(
    cluster: &Cluster,
    i: usize,
    confirmed: &std::collections::BTreeSet<u32>,
) {
    let got = consume_numbers(cluster.node(i).uri(), "work", confirmed)
        .await
        .expect("consume");
    let missing: Vec<&u32> = confirmed.difference(&got).collect();
    assert!(
        missing.is_empty(),
        "{} confirmed messages lost: {missing:?}",
        missing.len()
    );
}

/// The member lines of a `warren status` output: (id, role, incarnation).
fn members(status: &str) -> Vec<(usize, String, String)> {
    status
        .lines()
        .skip_while(|l| !l.starts_with("id "))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.to_string(),
                f.get(4)?.to_string(),
            ))
        })
        .collect()
}

/// The term in the first line of a `warren status` output.
fn term(status: &str) -> u64 {
    status
        .split("term ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no term in {status}"))
}

/// Runs `warren member ...` and returns its output line, failing the test if it fails.
fn member(args: &[&str]) -> String {
    let mut all = vec!["member"];
    all.extend_from_slice(args);
    let out = warren_cli(&all).expect("warren runs");
    assert!(out.ok, "warren {all:?} failed: {}", out.stderr);
    out.stdout
}

/// Waits until `check(status of node i)` holds, failing after `timeout` with the last status.
async fn wait_for_status(
    cluster: &Cluster,
    i: usize,
    timeout: Duration,
    check: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let status = cluster.status(i).unwrap_or_default();
        if check(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "node {i}'s status did not become as expected; last:\n{status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_under_traffic_and_a_follower_and_the_leader_leave_losing_nothing_confirmed() {
    let started = Instant::now();
    // Snapshots every 1000 entries: by the time node 4 joins the log is purged, so it catches up
    // from a snapshot.
    let snapshots = ["--snapshot-every", "1000"];
    let mut cluster = Cluster::start(3, &snapshots).expect("three nodes form a cluster");
    let leader = cluster.leader().expect("a leader");
    let followers: Vec<usize> = (1..=3).filter(|n| *n != leader).collect();
    let (publisher, leaving) = (followers[0], followers[1]);
    declare_durable(&cluster, publisher, "work").await;

    let (progress, publishing) = publish_to_work(&cluster, publisher);
    // Seen twice in CI (2026-12-05, 2026-12-06), never here: confirms stopped at 1025, right
    // after the first snapshot. The nodes' state and logs go into the failure message.
    if let Err(e) = progress.wait_for(2500, Duration::from_secs(30)).await {
        panic!(
            "publishing through a follower: {e}{}",
            cluster.post_mortem(60)
        );
    }

    // Node 4 joins: a learner that catches up, then a voter. The requests go to a follower,
    // which forwards them to the leader.
    let four = cluster.start_joining(&snapshots).expect("node 4 starts");
    let via = cluster.grpc_addr(leaving);
    let added = member(&["add", &cluster.member_spec(four), "--grpc", &via]);
    assert!(added.contains("node 4 added as a learner"), "{added}");
    assert!(
        cluster.node(four).log().contains("snapshot installed"),
        "node 4 caught up through a snapshot of the purged log"
    );
    let status = cluster.status(publisher).expect("status");
    assert!(
        members(&status)
            .iter()
            .any(|(id, role, inc)| *id == four && role == "learner" && inc != "unknown"),
        "{status}"
    );
    let promoted = member(&["promote", "4", "--grpc", &cluster.grpc_addr(publisher)]);
    assert!(promoted.contains("voters: 1, 2, 3, 4"), "{promoted}");
    let before_removals = progress.confirmed();

    // An original follower leaves, then the leader (it hands its leadership over first).
    let removed = member(&["remove", &leaving.to_string(), "--grpc", &via]);
    assert!(
        removed.contains(&format!("node {leaving} removed")),
        "{removed}"
    );
    cluster
        .node_mut(leaving)
        .kill9()
        .expect("stop the removed node");
    let removed = member(&[
        "remove",
        &leader.to_string(),
        "--grpc",
        &cluster.grpc_addr(four),
    ]);
    assert!(
        removed.contains(&format!("node {leader} removed")),
        "{removed}"
    );
    cluster
        .node_mut(leader)
        .kill9()
        .expect("stop the removed leader");
    let new_leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("one of the two left leads");
    assert!([publisher, four].contains(&new_leader));

    // Publishing goes on through the same follower.
    progress
        .wait_for(before_removals + 1000, Duration::from_secs(30))
        .await
        .expect("confirms go on after both removals");
    progress.stop.store(true, Ordering::SeqCst);
    let confirmed = publishing
        .await
        .expect("the publisher task")
        .expect("publishing");

    // Both nodes left show the same membership: the two of them, both voters, one leading,
    // each with its incarnation recorded (a leader records its own within seconds: the first
    // leader may have been removed before it recorded the others').
    for i in [publisher, four] {
        let status = wait_for_status(&cluster, i, Duration::from_secs(10), |s| {
            let m = members(s);
            m.len() == 2 && m.iter().all(|(_, _, inc)| inc != "unknown")
        })
        .await;
        let m = members(&status);
        let ids: Vec<usize> = m.iter().map(|(id, _, _)| *id).collect();
        let mut expected = vec![publisher, four];
        expected.sort();
        assert_eq!(ids, expected, "{status}");
        let roles: Vec<&str> = m.iter().map(|(_, r, _)| r.as_str()).collect();
        assert!(
            roles.contains(&"leader") && roles.contains(&"voter"),
            "{status}"
        );
        assert!(m.iter().all(|(_, _, inc)| inc != "unknown"), "{status}");
    }

    // Every confirmed message is there, consumed through the node that joined.
    assert_all_in_work(&cluster, four, &confirmed).await;

    // Errors are one line and a failure exit.
    let out = warren_cli(&[
        "member",
        "promote",
        "99",
        "--grpc",
        &cluster.grpc_addr(four),
    ])
    .expect("warren runs");
    assert!(!out.ok);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("node 99 is not a member"),
        "{}",
        out.stderr
    );
    eprintln!(
        "{} confirmed ({} before the removals), all consumed; {:?}",
        confirmed.len(),
        before_removals,
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_whose_data_was_wiped_is_refused_under_its_old_id() {
    let started = Instant::now();
    let mut cluster = Cluster::start(3, &[]).expect("three nodes form a cluster");
    // Node 1 is wiped: it formed the cluster (the lowest id), and after the wipe it must not form
    // a new one. If it leads, it is restarted first so that another node leads.
    if cluster.leader() == Some(1) {
        cluster.node_mut(1).kill9().expect("kill -9 node 1");
        cluster
            .wait_for_leader(Duration::from_secs(20))
            .expect("another leader");
        cluster.node_mut(1).restart().expect("node 1 restarts");
    }
    let leader = cluster
        .wait_for_leader(Duration::from_secs(20))
        .expect("a leader");
    assert_ne!(leader, 1);
    let wiped = 1;
    let publisher = (2..=3).find(|n| *n != leader).expect("the other follower");
    // The leader records every member's incarnation once it has heard from it.
    let before = wait_for_status(&cluster, leader, Duration::from_secs(10), |s| {
        let m = members(s);
        m.len() == 3 && m.iter().all(|(_, _, inc)| inc != "unknown")
    })
    .await;
    let old_incarnation = members(&before)
        .into_iter()
        .find(|(id, _, _)| *id == wiped)
        .map(|(_, _, inc)| inc)
        .expect("the wiped node is a member");

    declare_durable(&cluster, publisher, "work").await;
    let progress = Arc::new(Progress::default());
    let publishing = tokio::spawn(publish_until_stopped(
        cluster.node(publisher).uri().to_string(),
        "work".into(),
        50,
        progress.clone(),
    ));
    progress
        .wait_for(300, Duration::from_secs(20))
        .await
        .expect("publishing through a follower");
    let term_before = term(&cluster.status(leader).expect("status"));

    cluster.wipe(wiped).expect("wipe a follower");
    cluster
        .node_mut(wiped)
        .restart()
        .expect("the wiped node starts under its old id");
    let deadline = Instant::now() + Duration::from_secs(15);
    let refused = "the cluster refuses this node: this node's data was wiped";
    while !cluster.node(wiped).log().contains(refused) {
        assert!(
            Instant::now() < deadline,
            "the wiped node does not say it is refused; log:\n{}",
            cluster.node(wiped).log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cluster.node(wiped).log();
    assert_eq!(
        log.matches("INFO warren_raft::node: forming a new cluster")
            .count(),
        1,
        "node 1 formed the cluster once, at first start, and no new one after the wipe:\n{log}"
    );
    assert!(log.contains("not forming a new cluster"), "{log}");
    let status = cluster.status(wiped).expect("status of the wiped node");
    assert!(
        status.contains("REFUSED by the cluster") && status.contains("wiped"),
        "{status}"
    );
    assert!(
        members(&status).is_empty(),
        "it has no membership: {status}"
    );

    // The others go on confirming, in the same term, with the same leader.
    let c0 = progress.confirmed();
    progress
        .wait_for(c0 + 1000, Duration::from_secs(30))
        .await
        .expect("confirms go on while the wiped node is refused");
    progress.stop.store(true, Ordering::SeqCst);
    let confirmed = publishing
        .await
        .expect("the publisher task")
        .expect("publishing");
    let after = cluster.status(leader).expect("status of the leader");
    assert_eq!(term(&after), term_before, "no term inflation:\n{after}");
    assert_eq!(cluster.leader(), Some(leader));
    // The membership still records the old incarnation of the wiped node's id.
    assert!(
        members(&after).contains(&(wiped, "voter".into(), old_incarnation.clone())),
        "{after}"
    );

    let got = consume_numbers(cluster.node(publisher).uri(), "work", &confirmed)
        .await
        .expect("consume");
    let missing: Vec<&u32> = confirmed.difference(&got).collect();
    assert!(missing.is_empty(), "confirmed messages lost: {missing:?}");
    eprintln!(
        "{} confirmed, {} after the wipe; term {term_before} throughout; {:?}",
        confirmed.len(),
        confirmed.len() - c0,
        started.elapsed()
    );
}

/// Calls `Raft.Vote` on the gRPC port at `addr` with node `id`'s certificate, as node `id`.
async fn vote_as(id: usize, addr: &str) -> Result<(), tonic::Status> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |p: std::path::PathBuf| {
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let dir = certs().node_dir(id);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(certs().ca_dir().join("ca.crt"))))
        .identity(Identity::from_pem(
            read(dir.join("node.crt")),
            read(dir.join("node.key")),
        ))
        .domain_name("127.0.0.1");
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .expect("an address")
        .tls_config(tls)
        .expect("TLS settings")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("the TLS handshake (the CA's certificate)");
    RaftClient::new(channel)
        .vote(RaftRequest {
            group_id: 0,
            payload: Default::default(),
            from_node: id as u64,
            from_incarnation: 0,
            to_incarnation: 0,
        })
        .await
        .map(|_| ())
}

/// Found by the chaos suite (2026-12-06): node 4 joined after the last snapshot and came to
/// lead; node 5, added next, installed that snapshot, whose membership does not name node 4,
/// and refused every entry node 4 sent after it ("the certificate of node 4 does not name a
/// member"): it never caught up. A node takes Raft traffic from any node certificate of its CA
/// but those of nodes it has seen removed.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_catches_up_from_a_leader_that_joined_after_the_snapshot_it_installs() {
    let started = Instant::now();
    let snapshots = ["--snapshot-every", "300"];
    let mut cluster = Cluster::start(3, &snapshots).expect("three nodes form a cluster");
    let first = cluster.leader().expect("a leader");
    declare_durable(&cluster, first, "work").await;

    // Publish until the leader has written a snapshot (membership 1, 2, 3), then stop: no
    // snapshot is written after node 4 joins.
    let (progress, publishing) = publish_to_work(&cluster, first);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster.node(first).log().contains("snapshot written") {
        assert!(
            Instant::now() < deadline,
            "no snapshot after {} confirms",
            progress.confirmed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.stop.store(true, Ordering::SeqCst);
    let confirmed = publishing
        .await
        .expect("the publisher task")
        .expect("publishing");

    // Node 4 joins from that snapshot, becomes a voter, and comes to lead: the others are
    // removed, leaders first (a leader hands its leadership over before it goes).
    let four = cluster.start_joining(&snapshots).expect("node 4 starts");
    let added = member(&[
        "add",
        &cluster.member_spec(four),
        "--grpc",
        &cluster.grpc_addr(first),
    ]);
    assert!(added.contains("node 4 added as a learner"), "{added}");
    member(&["promote", "4", "--grpc", &cluster.grpc_addr(first)]);
    let mut removed = Vec::new();
    loop {
        let leader = cluster
            .wait_for_leader(Duration::from_secs(20))
            .expect("a leader");
        if leader == four {
            break;
        }
        let out = member(&[
            "remove",
            &leader.to_string(),
            "--grpc",
            &cluster.grpc_addr(four),
        ]);
        assert!(out.contains(&format!("node {leader} removed")), "{out}");
        cluster
            .node_mut(leader)
            .kill9()
            .expect("stop the removed node");
        removed.push(leader);
    }
    assert!(
        !cluster.node(four).log().contains("snapshot written"),
        "node 4's only snapshot must be the one it installed, from before it joined"
    );

    // Node 5 joins through node 4: it installs that snapshot, then takes node 4's entries.
    let five = cluster.start_joining(&snapshots).expect("node 5 starts");
    let added = member(&[
        "add",
        &cluster.member_spec(five),
        "--grpc",
        &cluster.grpc_addr(four),
        "--timeout",
        "30",
    ]);
    assert!(added.contains("node 5 added as a learner"), "{added}");
    let log = cluster.node(five).log();
    assert!(log.contains("snapshot installed"), "{log}");
    assert!(
        !log.lines()
            .any(|l| l.contains("gRPC call refused") && l.contains("Raft/")),
        "{log}"
    );
    member(&["promote", "5", "--grpc", &cluster.grpc_addr(four)]);

    // Every confirmed message is there, read through node 5.
    assert_all_in_work(&cluster, five, &confirmed).await;

    // A removed node's certificate is refused by the nodes that saw it leave (node 4 did);
    // one that was never a member reaches Raft, which refuses its vote itself.
    let refused = vote_as(removed[0], &cluster.grpc_addr(four))
        .await
        .expect_err("a removed node is refused");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("removed"),
        "{}",
        refused.message()
    );
    let stranger = vote_as(9, &cluster.grpc_addr(four))
        .await
        .expect_err("a vote of a node that is no voter");
    assert_eq!(
        stranger.code(),
        tonic::Code::FailedPrecondition,
        "{stranger:?}"
    );
    eprintln!(
        "{} confirmed, all read through node 5 (removed {removed:?}); {:?}",
        confirmed.len(),
        started.elapsed()
    );
}
