//! Compiles `proto/` into Rust with pure-Rust tooling (protox), so that a
//! fresh machine needs no system `protoc`. The encoded descriptor set is also
//! written to `OUT_DIR` for gRPC server reflection, and so is the list of
//! every rpc's path, which labels the per-RPC metrics and tells the request
//! reading layer which rpcs take a stream of messages.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "streamgate/v1/entry.proto",
    "streamgate/v1/event_stream.proto",
    "streamgate/v1/stream_admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("streamgate_descriptor.bin"), fds.encode_to_vec())?;
    let mut methods = String::from("&[\n");
    for file in &fds.file {
        for service in &file.service {
            for method in &service.method {
                methods.push_str(&format!(
                    "    Method {{ path: \"/{}.{}/{}\", name: \"{}\", client_streaming: {} }},\n",
                    file.package(),
                    service.name(),
                    method.name(),
                    method.name(),
                    method.client_streaming()
                ));
            }
        }
    }
    methods.push(']');
    fs::write(out.join("streamgate_methods.rs"), methods)?;
    tonic_prost_build::configure()
        // prost's decoder, with an undecodable message answered as the
        // client's fault (INVALID_ARGUMENT), not INTERNAL.
        .codec_path("crate::pb::Codec")
        // Produce decodes these maps for every event: a BTreeMap skips
        // SipHash and arrives sorted, so the gateway need not sort again.
        .btree_map(".streamgate.v1.Event")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
