//! warren binary.
fn main() {}
