//! The protobuf codec of every streamgate rpc: prost's, except that a
//! message prost cannot decode is INVALID_ARGUMENT.
//!
//! tonic-prost answers an undecodable message with INTERNAL, which the
//! gRPC status guide reserves for the server's own faults; a client that
//! sends garbage must learn that the fault is its own. The message starts
//! with [`UNDECODABLE`] so that the reading layer
//! ([`crate::limits::ReadingLayer`]) can name the rpc, which a codec does
//! not know.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{self, BufferSettings, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder};

/// How every undecodable-message status begins.
pub(crate) const UNDECODABLE: &str = "cannot decode ";

/// The codec the generated services and clients use (`build.rs`).
#[derive(Debug, Clone)]
pub struct Codec<T, U> {
    prost: ProstCodec<T, U>,
}

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec {
            prost: ProstCodec::default(),
        }
    }
}

impl<T, U> codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as codec::Codec>::Encoder;
    type Decoder = Decode<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.prost.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        Decode {
            prost: self.prost.decoder(),
            _message: PhantomData,
        }
    }
}

/// prost's decoder with the status of a decoding failure replaced.
#[derive(Debug)]
pub struct Decode<U> {
    prost: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: Message + Default> Decoder for Decode<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.prost.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "{UNDECODABLE}{}: {}",
                message_name::<U>(),
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.prost.buffer_settings()
    }
}

/// `ProduceRequest` for `streamgate::pb::ProduceRequest`.
fn message_name<U>() -> &'static str {
    let full = std::any::type_name::<U>();
    full.rsplit("::").next().unwrap_or(full)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use tonic::Code;
    use tonic::codec::{Codec as _, Streaming};

    #[tokio::test]
    async fn garbage_is_invalid_argument_naming_the_message() {
        // A gRPC frame whose body is a field with an invalid wire type.
        let mut frame = vec![0u8, 0, 0, 0, 2];
        frame.extend_from_slice(&[0x0f, 0x01]);
        let body = http_body_util::Full::new(bytes::Bytes::from(frame));
        let mut stream = Streaming::<pb::ProduceRequest>::new_request(
            Codec::<pb::ProduceResponse, pb::ProduceRequest>::default().decoder(),
            body,
            None,
            None,
        );
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status
                .message()
                .starts_with("cannot decode ProduceRequest: "),
            "{}",
            status.message()
        );
    }
}
