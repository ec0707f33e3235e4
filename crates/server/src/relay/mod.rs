//! What the nodes' brokers tell each other. A client talks to its own node's broker only; the
//! brokers reach each other over *home streams* (`Relay.Attach`, one from each node to each
//! other node it needs: [`Links`] sends, [`RelayService`] receives): logged commands for the
//! leader to propose, queue commands and their answers between a channel's node and a queue's
//! owner, messages for transient queues homed elsewhere, and the nodes' client counts for the
//! limits. Every node applies the whole log, so the one that leads next has the whole state.
//!
//! [`spawn_leadership`] watches Raft and says who leads ([`Route`]). When this node becomes
//! leader it first commits a take-over (or, after a whole-cluster restart, a recovery) command,
//! then decides the replicated queues; when it stops leading its broker gives them up.

pub(crate) mod codec;
mod leadership;
pub(crate) mod links;
mod service;

pub use leadership::{spawn_leadership, spawn_member_addresses, Route};
pub use links::Links;
pub use service::RelayService;
