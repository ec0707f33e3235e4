//! The chaos harness's parts: the network of namespaces, the node processes, the AMQP workload,
//! the standing backlog, the history it records and the checker. The binary (`src/main.rs`) is
//! the nemesis and the run's driver.

pub mod addr;
pub mod backlog;
pub mod checker;
pub mod history;
pub mod net;
pub mod nodes;
pub mod proxy;
pub mod workload;
