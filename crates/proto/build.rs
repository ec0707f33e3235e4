//! Compiles `proto/` with the protoc that `protoc-bin-vendored` ships, so no protoc install is
//! needed on any machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through $PROTOC.
    std::env::set_var("PROTOC", protoc);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let raft = root.join("warren/raft.proto");
    println!("cargo:rerun-if-changed={}", raft.display());
    tonic_prost_build::configure().compile_protos(&[raft], &[root])?;
    Ok(())
}
