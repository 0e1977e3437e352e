//! Generates the hangar.plugin.v1 gRPC code (PluginService).
//! Needs `protoc` (Debian: protobuf-compiler).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        .bytes(".hangar.plugin.v1")
        .compile_protos(&["proto/plugin.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/plugin.proto");
    Ok(())
}
