//! The protobuf codec of the generated client and server: tonic's prost codec, with the status
//! code the store service documents for a message that does not decode.
//!
//! tonic answers INTERNAL when a request is not valid protobuf (or holds a string field that
//! is not UTF-8, such as a key), which tells a client the server is broken; the request is
//! what is wrong, and `proto/proxystore_rs/v1/store.proto` promises INVALID_ARGUMENT.
//!
//! Its encoder leaves large `Get` and `Put` chunks out of the encode buffer when a
//! [`SplicedBody`](crate::splice::SplicedBody) sends them from their own bytes (see
//! [`crate::splice`]); everywhere else it encodes as prost does.

use std::any::Any;
use std::marker::PhantomData;

use prost::encoding::{WireType, encode_key, encode_varint};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

use crate::splice::{self, SPLICE_MIN_BYTES};
use crate::v1;

/// A prost codec whose decoding errors are INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U> {
    inner: ProstCodec<T, U>,
}

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec {
            inner: ProstCodec::default(),
        }
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProtoEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProtoEncoder {
            inner: self.inner.encoder(),
        }
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder {
            inner: self.inner.decoder(),
            _message: PhantomData,
        }
    }
}

/// The decoder of [`ProtoCodec`].
#[derive(Debug)]
pub struct ProtoDecoder<U> {
    inner: ProstDecoder<U>,
    _message: PhantomData<U>,
}

impl<U: prost::Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.inner.decode(buf).map_err(|s| match s.code() {
            Code::Internal => Status::invalid_argument(s.message().to_owned()),
            _ => s,
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.inner.buffer_settings()
    }
}

/// The encoder of [`ProtoCodec`]: prost's, except for the large chunks of `Get` answers and
/// `Put` requests that a [`SplicedBody`](crate::splice::SplicedBody) polling on this thread
/// sends from their own bytes.
#[derive(Debug)]
pub struct ProtoEncoder<T> {
    inner: ProstEncoder<T>,
}

impl<T: prost::Message + 'static> Encoder for ProtoEncoder<T> {
    type Item = T;
    type Error = Status;

    fn encode(&mut self, mut item: T, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        if !splice::recording() {
            return self.inner.encode(item, buf);
        }
        let Some(chunk) = large_chunk(&mut item as &mut dyn Any) else {
            splice::record(None);
            return self.inner.encode(item, buf);
        };
        // The message is the chunk field alone: its key and length, then (left out) its bytes.
        let (head, n) = chunk_field_head(chunk.len());
        bytes::BufMut::put_slice(buf, &head[..n]);
        splice::record(Some(chunk));
        Ok(())
    }

    fn buffer_settings(&self) -> BufferSettings {
        if splice::recording() && carries_chunks::<T>() {
            // Each message as soon as it is encoded: see `crate::splice`. (tonic reads the
            // buffer size, tonic's default here, only when it allocates the buffer, before any
            // poll.)
            BufferSettings::new(8 * 1024, 1)
        } else {
            self.inner.buffer_settings()
        }
    }
}

/// The field number of `GetResponse.chunk` and `PutRequest.chunk`
/// (`proto/proxystore_rs/v1/store.proto`).
const CHUNK_FIELD: u32 = 2;

/// The key and length of a chunk field of `len` bytes, as prost encodes them: the first `n`
/// bytes of the array (at most 1 + 10).
pub(crate) fn chunk_field_head(len: usize) -> ([u8; 11], usize) {
    let mut head = [0u8; 11];
    let mut rest = &mut head[..];
    encode_key(CHUNK_FIELD, WireType::LengthDelimited, &mut rest);
    encode_varint(len as u64, &mut rest);
    let n = 11 - rest.len();
    (head, n)
}

/// Whether `T` is a message that carries an object's chunks: a `Get` answer or a `Put`
/// request.
fn carries_chunks<T: 'static>() -> bool {
    use std::any::TypeId;
    let t = TypeId::of::<T>();
    t == TypeId::of::<v1::GetResponse>() || t == TypeId::of::<v1::PutRequest>()
}

/// The chunk of a `Get` answer or a `Put` request of at least [`SPLICE_MIN_BYTES`], taken out
/// of the message (which is then that field alone, emptied).
fn large_chunk(message: &mut dyn Any) -> Option<bytes::Bytes> {
    let chunk = if let Some(v1::GetResponse {
        msg: Some(v1::get_response::Msg::Chunk(chunk)),
    }) = message.downcast_mut::<v1::GetResponse>()
    {
        chunk
    } else if let Some(v1::PutRequest {
        msg: Some(v1::put_request::Msg::Chunk(chunk)),
    }) = message.downcast_mut::<v1::PutRequest>()
    {
        chunk
    } else {
        return None;
    };
    (chunk.len() >= SPLICE_MIN_BYTES).then(|| std::mem::take(chunk))
}
