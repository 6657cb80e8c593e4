//! Codecs: how objects become bytes and back.
//!
//! Byte payloads (`Bytes`, `Vec<u8>`) are never run through serde: they are stored as they are
//! ([`Codec::Raw`]), so a `Bytes` put is zero-copy and a `Vec<u8>` is copied once. Arrays of
//! numbers ([`npy::NpyArray`]) are stored as NPY files ([`Codec::Npy`]), which NumPy reads
//! without a copy.

use std::any::{Any, TypeId};

use std::{fmt, str::FromStr};

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::error::{Error, Result};

pub mod npy;

/// Nesting depth at which MessagePack decoding stops with an error instead of recursing on:
/// serde_json's limit, low enough for a 2 MiB thread stack in a debug build.
pub const MAX_DEPTH: usize = 128;

/// The encoding of one stored object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// The object's own bytes, for `Bytes` and `Vec<u8>` payloads.
    Raw,
    /// [postcard](https://docs.rs/postcard): compact binary, the default.
    #[default]
    Postcard,
    /// JSON, readable by anything.
    Json,
    /// MessagePack (self-describing binary).
    #[serde(rename = "msgpack")]
    MessagePack,
    /// An NPY file of a [`npy::NpyArray`] (element type and shape in its header): how arrays
    /// of numbers cross between Rust and Python's NumPy. Only `NpyArray` encodes and decodes
    /// with it.
    Npy,
}

impl Codec {
    /// Identifier used in configs and references.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Raw => "raw",
            Codec::Postcard => "postcard",
            Codec::Json => "json",
            Codec::MessagePack => "msgpack",
            Codec::Npy => "npy",
        }
    }

    /// Encode `value`. Byte payloads bypass the codec and come back tagged [`Codec::Raw`].
    ///
    /// # Errors
    /// [`Error::Encode`] when serde fails.
    pub fn encode<T: Serialize + 'static>(self, value: &T) -> Result<(Bytes, Codec)> {
        if let Some(raw) = raw_bytes(value) {
            return Ok((raw, Codec::Raw));
        }
        if let Some(a) = (value as &dyn Any).downcast_ref::<npy::NpyArray>() {
            return Ok((a.encode(), Codec::Npy));
        }
        let err = |source: crate::error::BoxError| Error::Encode {
            type_name: std::any::type_name::<T>().to_owned(),
            codec: self.as_str().to_owned(),
            source,
        };
        let out = match self {
            Codec::Postcard | Codec::Raw => {
                postcard::to_stdvec(value).map_err(|e| err(e.into()))?
            }
            Codec::Json => serde_json::to_vec(value).map_err(|e| err(e.into()))?,
            Codec::MessagePack => rmp_serde::to_vec_named(value).map_err(|e| err(e.into()))?,
            Codec::Npy => {
                return Err(err(
                    "the npy codec encodes proxystore::codec::npy::NpyArray values only".into(),
                ));
            }
        };
        Ok((Bytes::from(out), self))
    }

    /// Decode `data` as `T`. Raw payloads decode into `Bytes` without a copy and into `Vec<u8>`
    /// with at most one.
    ///
    /// # Errors
    /// A boxed codec error; [`crate::Store`] wraps it into [`Error::Decode`] with context.
    pub fn decode<T: DeserializeOwned + 'static>(
        self,
        data: Bytes,
    ) -> std::result::Result<T, crate::error::BoxError> {
        if self == Codec::Raw {
            return from_raw_bytes::<T>(data).ok_or_else(|| {
                format!(
                    "raw bytes can only be read as Bytes or Vec<u8>, not {}",
                    std::any::type_name::<T>()
                )
                .into()
            });
        }
        if self == Codec::Npy {
            let a = npy::NpyArray::decode(data)?;
            let mut slot = Some(a);
            return (&mut slot as &mut dyn Any)
                .downcast_mut::<Option<T>>()
                .and_then(Option::take)
                .ok_or_else(|| {
                    format!(
                        "an npy array can only be read as proxystore::codec::npy::NpyArray, not {}",
                        std::any::type_name::<T>()
                    )
                    .into()
                });
        }
        Ok(match self {
            Codec::Postcard | Codec::Raw | Codec::Npy => postcard::from_bytes(&data)?,
            Codec::Json => serde_json::from_slice(&data)?,
            Codec::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(&data[..]);
                de.set_max_depth(MAX_DEPTH);
                T::deserialize(&mut de)?
            }
        })
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "raw" => Ok(Codec::Raw),
            "postcard" => Ok(Codec::Postcard),
            "json" => Ok(Codec::Json),
            "msgpack" => Ok(Codec::MessagePack),
            "npy" => Ok(Codec::Npy),
            other => Err(Error::config(format!(
                "unknown codec '{other}' (expected postcard, json, msgpack, raw or npy)"
            ))),
        }
    }
}

/// The bytes of a byte payload, without copying a `Bytes` and copying a `Vec<u8>` once.
fn raw_bytes<T: 'static>(value: &T) -> Option<Bytes> {
    let any: &dyn Any = value;
    if let Some(b) = any.downcast_ref::<Bytes>() {
        return Some(b.clone());
    }
    any.downcast_ref::<Vec<u8>>()
        .map(|v| Bytes::copy_from_slice(v))
}

fn from_raw_bytes<T: 'static>(data: Bytes) -> Option<T> {
    // Move the value out through `Option<T>: Any` instead of boxing it.
    fn take<T: 'static, U: 'static>(value: U) -> Option<T> {
        let mut slot = Some(value);
        (&mut slot as &mut dyn Any)
            .downcast_mut::<Option<T>>()
            .and_then(Option::take)
    }
    if TypeId::of::<T>() == TypeId::of::<Bytes>() {
        take(data)
    } else if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        take(Vec::<u8>::from(data))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Point {
        x: i32,
        label: String,
    }

    #[test]
    fn serde_codecs_round_trip() {
        let p = Point {
            x: -3,
            label: "a".into(),
        };
        for c in [Codec::Postcard, Codec::Json, Codec::MessagePack] {
            let (b, used) = c.encode(&p).unwrap();
            assert_eq!(used, c);
            assert_eq!(used.decode::<Point>(b).unwrap(), p);
            assert_eq!(c.as_str().parse::<Codec>().unwrap(), c);
        }
    }

    #[test]
    fn bytes_pass_through_without_copy() {
        let data = Bytes::from(vec![7u8; 1024]);
        let (b, c) = Codec::Postcard.encode(&data).unwrap();
        assert_eq!(c, Codec::Raw);
        assert_eq!(b.as_ptr(), data.as_ptr());
        let back: Bytes = c.decode(b.clone()).unwrap();
        assert_eq!(back.as_ptr(), data.as_ptr());
        let v: Vec<u8> = c.decode(b).unwrap();
        assert_eq!(v, vec![7u8; 1024]);
        assert!(c.decode::<String>(data).is_err());
        let (vb, c) = Codec::Json.encode(&vec![1u8, 2]).unwrap();
        assert_eq!((c, &vb[..]), (Codec::Raw, &[1u8, 2][..]));
    }

    #[test]
    fn deep_messagepack_nesting_is_an_error_not_a_stack_overflow() {
        // 100,000 nested one-element arrays.
        let mut doc = vec![0x91u8; 100_000];
        doc.push(0xc0);
        let e = Codec::MessagePack.decode::<serde_value::Value>(Bytes::from(doc));
        assert!(e.is_err());
    }

    #[test]
    fn arrays_round_trip_as_npy_only() {
        let a = npy::NpyArray::from_f64(vec![2], &[1.0, 2.0]).unwrap();
        let (b, c) = Codec::Postcard.encode(&a).unwrap();
        assert_eq!(c, Codec::Npy);
        assert_eq!(c.decode::<npy::NpyArray>(b.clone()).unwrap(), a);
        assert!(c.decode::<Vec<u8>>(b).is_err());
        assert!(Codec::Npy.encode(&3u8).is_err());
        assert_eq!("npy".parse::<Codec>().unwrap(), Codec::Npy);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for c in [Codec::Postcard, Codec::Json, Codec::MessagePack] {
            assert!(
                c.decode::<Point>(Bytes::from_static(&[0xff, 0x00, 0x13]))
                    .is_err()
            );
            assert!(c.decode::<Point>(Bytes::new()).is_err());
        }
    }
}
