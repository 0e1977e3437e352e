//! Generates the hangar.v1 gRPC code and the descriptor set for server reflection.
//! Needs `protoc` (Debian: protobuf-compiler; `.ci/run` installs it). The one
//! well-known type hangar.v1 imports, `google/protobuf/struct.proto`, is kept
//! in `proto/` (unchanged from protobuf's release), since Debian's protoc
//! ships without it; its Rust type is prost-types'.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("hangar_v1_descriptor.bin"))
        .compile_protos(&["proto/hangar/v1/hangar.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/hangar/v1/hangar.proto");
    println!("cargo:rerun-if-changed=proto/google/protobuf/struct.proto");
    Ok(())
}
