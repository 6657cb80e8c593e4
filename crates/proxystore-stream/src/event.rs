//! The messages a producer publishes (`proto/proxystore_rs/v1/stream.proto`), and reading them
//! back, refusing what is not ours.

use bytes::Bytes;
use prost::Message as _;
use proxystore::Reference;
use proxystore_proto::v1::{
    EndOfStream, NewObject, StreamEvent, StreamMessage, stream_event::Kind,
};

use crate::Metadata;

/// The `format` of our messages.
pub(crate) const FORMAT: &str = "proxystore-stream/1";

/// One event, as a consumer reads it.
#[derive(Debug)]
pub(crate) enum Event {
    Object {
        reference: Box<Reference>,
        metadata: Metadata,
        evict: bool,
        sequence: u64,
    },
    End {
        objects: u64,
    },
}

/// A new-object event, for a batch.
pub(crate) fn object(
    reference: &Reference,
    metadata: &Metadata,
    evict: bool,
    sequence: u64,
) -> StreamEvent {
    StreamEvent {
        kind: Some(Kind::Object(NewObject {
            reference: reference.to_bytes(),
            metadata: metadata
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            evict,
            sequence,
        })),
    }
}

/// An end-of-stream event.
pub(crate) fn end(objects: u64) -> StreamEvent {
    StreamEvent {
        kind: Some(Kind::End(EndOfStream { objects })),
    }
}

/// A message of `events`.
pub(crate) fn encode(topic: &str, producer: &str, events: Vec<StreamEvent>) -> Bytes {
    StreamMessage {
        format: FORMAT.to_owned(),
        topic: topic.to_owned(),
        producer: producer.to_owned(),
        events,
    }
    .encode_to_vec()
    .into()
}

/// The producer and events of a message; why not, when it is not one of ours.
pub(crate) fn decode(topic: &str, message: &[u8]) -> Result<(String, Vec<Event>), String> {
    let m = StreamMessage::decode(message).map_err(|e| format!("not a stream message: {e}"))?;
    if m.format != FORMAT {
        return Err(format!("format {:?}, not {FORMAT:?}", m.format));
    }
    if m.topic != topic {
        return Err(format!("a message of topic {:?}", m.topic));
    }
    let mut events = Vec::with_capacity(m.events.len());
    for e in m.events {
        events.push(match e.kind {
            Some(Kind::Object(o)) => Event::Object {
                reference: Box::new(
                    Reference::from_bytes(&o.reference)
                        .map_err(|e| format!("an event with a bad reference: {e}"))?,
                ),
                metadata: o.metadata.into_iter().collect(),
                evict: o.evict,
                sequence: o.sequence,
            },
            Some(Kind::End(end)) => Event::End {
                objects: end.objects,
            },
            None => return Err("an event of an unknown kind".into()),
        });
    }
    Ok((m.producer, events))
}
