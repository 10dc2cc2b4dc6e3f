//! Code generated from `proto/streamgate/v1/*.proto`, plus the encoded
//! descriptor set that server reflection serves, and the codec the
//! generated services and clients use.

mod codec;

/// The generated code, exempt from the lints the crate's own code keeps.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod generated {
    tonic::include_proto!("streamgate.v1");
}

pub use generated::*;

pub use codec::Codec;
pub(crate) use codec::UNDECODABLE;

/// The encoded `FileDescriptorSet` of every streamgate proto file.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/streamgate_descriptor.bin"));

/// One streamgate rpc, as the protos declare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Method {
    /// The HTTP/2 path, e.g. `/streamgate.v1.EventStream/Produce`.
    pub path: &'static str,
    /// The method name, e.g. `Produce`.
    pub name: &'static str,
    /// Whether the client sends a stream of messages (ProduceStream,
    /// Consume) rather than exactly one.
    pub client_streaming: bool,
}

/// Every streamgate rpc, from the protos.
pub const METHODS: &[Method] = include!(concat!(env!("OUT_DIR"), "/streamgate_methods.rs"));

/// The streamgate rpc served at `path`, if any.
pub fn method(path: &str) -> Option<&'static Method> {
    METHODS.iter().find(|method| method.path == path)
}
