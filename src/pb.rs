//! Code generated from `proto/streamgate/v1/*.proto`, plus the encoded
//! descriptor set that server reflection serves.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

tonic::include_proto!("streamgate.v1");

/// The encoded `FileDescriptorSet` of every streamgate proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/streamgate_descriptor.bin"));

/// Every streamgate rpc as `(path, method name)`, e.g.
/// `("/streamgate.v1.EventStream/Produce", "Produce")`, from the protos.
pub const METHODS: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/streamgate_methods.rs"));
