//! Warren's micro-benchmarks live in `benches/`: `cargo bench -p warren-benches`. The whole-broker
//! comparison with RabbitMQ (`benches/compare`, `warren-perf`) is separate work.
