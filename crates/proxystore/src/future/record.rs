//! What a future's key and its heartbeat key hold (the format is in
//! `proto/proxystore_rs/v1/proxy.proto`, message `Future`).
//!
//! A future record: `PSF1`, a tag byte (value, failed, dropped), a big-endian u16 length and
//! that many bytes of trace context of the span that completed it, then the body (the value's
//! encoded bytes, or the error message). The reader slices the body out without copying it.

use bytes::{BufMut, Bytes, BytesMut};

use crate::trace::TraceContext;

const MAGIC: &[u8; 4] = b"PSF1";
const TAG_VALUE: u8 = 0;
const TAG_FAILED: u8 = 1;
const TAG_DROPPED: u8 = 2;
const HEADER: usize = MAGIC.len() + 1 + 2;

/// How a future completed.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// Set: the value's encoded bytes.
    Value(Bytes),
    /// The producer's error message.
    Failed(String),
    /// The producer dropped its promise unset.
    Dropped,
}

/// A future record for `outcome`, carrying the trace context of the span that completed it.
pub(crate) fn encode(outcome: &Outcome, trace: Option<&TraceContext>) -> Bytes {
    let context = trace.map_or_else(String::new, |t| {
        if t.tracestate.is_empty() {
            t.traceparent.clone()
        } else {
            format!("{} {}", t.traceparent, t.tracestate)
        }
    });
    // A trace context longer than the length field allows is dropped, not cut.
    let context = if context.len() > usize::from(u16::MAX) {
        ""
    } else {
        context.as_str()
    };
    let (tag, body): (u8, &[u8]) = match outcome {
        Outcome::Value(b) => (TAG_VALUE, b),
        Outcome::Failed(m) => (TAG_FAILED, m.as_bytes()),
        Outcome::Dropped => (TAG_DROPPED, b""),
    };
    let mut out = BytesMut::with_capacity(HEADER + context.len() + body.len());
    out.put_slice(MAGIC);
    out.put_u8(tag);
    out.put_u16(context.len() as u16);
    out.put_slice(context.as_bytes());
    out.put_slice(body);
    out.freeze()
}

/// The outcome a record holds and the trace context of its completion.
///
/// # Errors
/// Why `data` is not a future record.
pub(crate) fn decode(data: Bytes) -> Result<(Outcome, Option<TraceContext>), String> {
    if data.len() < HEADER || &data[..MAGIC.len()] != MAGIC {
        return Err(format!(
            "{} bytes that do not start with the future record header",
            data.len()
        ));
    }
    let tag = data[MAGIC.len()];
    let len = usize::from(u16::from_be_bytes([data[5], data[6]]));
    let Some(context) = data.get(HEADER..HEADER + len) else {
        return Err(format!(
            "a trace context of {len} bytes in a record of {} bytes",
            data.len()
        ));
    };
    let trace = std::str::from_utf8(context)
        .ok()
        .filter(|c| !c.is_empty())
        .map(|c| match c.split_once(' ') {
            Some((parent, state)) => TraceContext::new(parent, state),
            None => TraceContext::new(c, ""),
        });
    let body = data.slice(HEADER + len..);
    let outcome = match tag {
        TAG_VALUE => Outcome::Value(body),
        TAG_FAILED => Outcome::Failed(String::from_utf8_lossy(&body).into_owned()),
        TAG_DROPPED => Outcome::Dropped,
        other => return Err(format!("unknown outcome tag {other}")),
    };
    Ok((outcome, trace))
}

/// What a heartbeat object holds while its promise is in transit (serialized, not yet
/// deserialized by the process that will complete it): consumers then do not count silence.
pub(crate) const PARKED: [u8; 8] = [0xff; 8];

/// A new heartbeat: 8 random bytes, different from the last with overwhelming probability
/// (a consumer looks for change, so clocks of different machines never meet).
pub(crate) fn beat() -> Bytes {
    let mut b = (uuid::Uuid::new_v4().as_u128() as u64).to_be_bytes();
    if b == PARKED {
        b[0] = 0;
    }
    Bytes::copy_from_slice(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused() {
        let t = TraceContext::new(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "a=b",
        );
        for outcome in [
            Outcome::Value(Bytes::from_static(b"\x00\x01payload")),
            Outcome::Value(Bytes::new()),
            Outcome::Failed("disk full".into()),
            Outcome::Dropped,
        ] {
            for trace in [None, Some(&t)] {
                let (back, tr) = decode(encode(&outcome, trace)).unwrap();
                assert_eq!(back, outcome);
                assert_eq!(tr.as_ref(), trace);
            }
        }
        for bad in [
            &b""[..],
            b"PSF",
            b"XXXX\x00\x00\x00",
            b"PSF1\x00\x00\x09ab",
            b"PSF1\x07\x00\x00",
        ] {
            assert!(decode(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
        assert_ne!(beat(), beat());
        assert_ne!(&beat()[..], &PARKED[..]);
    }
}
