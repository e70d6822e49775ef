//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and
//! generates the prost message types and tonic services.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it compiles: a build
    // script binary can be reused for another checkout of this crate.
    let root = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "concord/meta.proto",
        "concord/kv.proto",
        "concord/admin.proto",
        "concord/catalog.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .bytes(".concord.kv.RaftEnvelope.message")
        .compile_fds(fds)?;
    Ok(())
}
