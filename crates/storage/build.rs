//! No build step: this script exists so that the `[build-dependencies]` in
//! Cargo.toml take part in feature resolution (see the comment there).
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
