//! Generates the gRPC code from `proto/` with protox, a protobuf compiler written in Rust, so
//! that building needs no `protoc` on the machine.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not when it was compiled: a cached script binary may have been
    // built for a checkout elsewhere.
    let root = format!("{}/../../proto", std::env::var("CARGO_MANIFEST_DIR")?);
    let root = root.as_str();
    let files = ["catalog/v1/inventory.proto", "cart/v1/cart.proto", "identity/v1/identity.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let descriptors = protox::compile(files, [root])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
