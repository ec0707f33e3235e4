//! A Warren node as a library: [`node::start`] wires a node together from a resolved
//! [`node::NodeConfig`], so the `warren` binary (flags, TOML file, logging, signals) and tests
//! can start one. The operator subcommands stay in the binary.

mod memory_relief;
pub mod node;
pub mod systemd;
