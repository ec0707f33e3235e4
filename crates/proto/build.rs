//! Compiles `proto/` with the protoc that `protoc-bin-vendored` ships, so no protoc install is
//! needed on any machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through $PROTOC.
    std::env::set_var("PROTOC", protoc);
    // Read at run time, not with env!(): a build-script binary is reused from a shared target
    // directory by clones in other places, and must not carry the first clone's path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let raft = root.join("warren/raft.proto");
    let access = root.join("warren/access.proto");
    let management = root.join("warren/management.proto");
    for file in [&raft, &access, &management] {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    // `bytes` fields as `Bytes`: relayed message bodies are not copied into a `Vec` on the way.
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&[raft, access, management], &[root])?;
    Ok(())
}
