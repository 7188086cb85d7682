//! Generates the pixell.agent protobuf types and tonic stubs with no system `protoc`:
//! `protox` (pure Rust) compiles the .proto, `tonic-prost-build` generates from the descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
