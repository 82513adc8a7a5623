//! Compiles the DTM protos with protox (pure Rust: no system `protoc` needed) and generates
//! the prost messages and tonic client/server code into OUT_DIR.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/dtmgimp.proto", "proto/wf.proto"];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure()
        .btree_map(".")
        // Payload bytes as `Bytes`: a submit shares the request's payloads instead of copying.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
