//! Clients at any node. Exactly one broker decides: the leader's. A node that does not lead
//! relays its connections' inputs to the leader over a gRPC stream (`Relay.Attach`) and streams
//! the effects back ([`router`]); the leader serves those streams ([`RelayService`]). Every node
//! still applies the whole log, so the one that leads next has the whole state.
//!
//! [`spawn_leadership`] watches Raft and says where the broker is ([`Route`]). When this node
//! becomes leader it first commits a take-over (or, after a whole-cluster restart, a recovery)
//! command, then serves; when it stops leading its broker drops every connection and goes back
//! to the log's view. A connection whose route changes is resumed on the new decider from the
//! session image its node keeps ([`image`]): the client keeps its connection.

pub(crate) mod codec;
pub(crate) mod image;
mod leadership;
pub(crate) mod links;
pub(crate) mod router;
mod service;

pub use leadership::{spawn_leadership, spawn_member_addresses, Route};
pub use links::Links;
pub use service::RelayService;
