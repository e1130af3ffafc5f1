//! Generates the `scaidrive.connector.v1` messages (prost) and the tonic client and server
//! code from `v1/*.proto`, with the protoc from `protoc-bin-vendored`: no system protoc needed.

use std::error::Error;
use std::path::PathBuf;

const PROTOS: &[&str] = &["v1/common.proto", "v1/control_plane.proto", "v1/files.proto", "v1/connectivity.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    // prost-build runs the program named by PROTOC. Build scripts are single-threaded, and this
    // edition's `set_var` is safe.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    // google/protobuf/*.proto (Timestamp, Duration), shipped with the vendored protoc.
    let well_known = protoc_bin_vendored::include_path()?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // The password must never reach a log: lib.rs implements a redacting Debug instead.
        .skip_debug([".scaidrive.connector.v1.SmbCredentials"])
        .compile_protos(&PROTOS.iter().map(PathBuf::from).collect::<Vec<_>>(), &[PathBuf::from("."), well_known])?;

    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
