//! The worker side: a deserializer over the small task tree that, where it meets a reference,
//! either hands it to a `Proxy<T>` field unresolved (lazy), or fetches the bytes and forwards the
//! field's visitor to a deserializer over them (transparent resolution of plain fields).
//!
//! Fetched bytes live in an arena that outlives the deserialization, so the forwarded
//! deserializer borrows from them like any zero-copy deserializer would.

use std::cell::{Cell, RefCell};
use std::collections::btree_map;

use bytes::Bytes;
use proxystore::proxy::{PROXY_NEWTYPE_NAME, REFERENCE_FIELD};
use proxystore::{Codec, Factory, Reference};
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use serde_value::{Value, ValueDeserializer};
use typed_arena::Arena;

use crate::error::{MiddlewareError, Result};

/// State shared by the deserializers of one task.
pub(crate) struct DecodeCtx<'a> {
    pub(crate) arena: &'a Arena<Bytes>,
    pub(crate) fetched: RefCell<Vec<Reference>>,
    pub(crate) lazy: Cell<usize>,
    /// Keys of the references the encoder made (the policy's), as opposed to explicit proxies
    /// the task's arguments already held.
    made_here: std::collections::HashSet<proxystore::Key>,
}

impl<'a> DecodeCtx<'a> {
    pub(crate) fn new(arena: &'a Arena<Bytes>, proxied: &[Reference]) -> Self {
        DecodeCtx {
            arena,
            fetched: RefCell::new(Vec::new()),
            lazy: Cell::new(0),
            made_here: proxied.iter().map(|r| r.key.clone()).collect(),
        }
    }

    fn fetch(&self, r: &Reference) -> Result<&'a [u8]> {
        let store = Factory::<()>::new(r.clone()).store()?;
        let owned = r.clone();
        let bytes =
            proxystore::runtime::block_on(async move { store.get_verified_bytes(&owned).await })??;
        self.fetched.borrow_mut().push(r.clone());
        Ok(&self.arena.alloc(bytes)[..])
    }
}

/// The reference a node stands for, if it is a reference node.
pub(crate) fn reference_of(v: &Value) -> Option<Result<Reference>> {
    let Value::Map(m) = v else { return None };
    if m.len() != 1 {
        return None;
    }
    let r = m.get(&Value::String(REFERENCE_FIELD.to_owned()))?;
    Some(
        <Reference as Deserialize>::deserialize(ValueDeserializer::<MiddlewareError>::new(
            r.clone(),
        ))
        .map_err(|e| MiddlewareError::Decode(format!("bad proxy reference in task: {e}"))),
    )
}

fn codec_error(r: &Reference, e: impl std::fmt::Display) -> MiddlewareError {
    MiddlewareError::Decode(format!(
        "proxied argument {} ({}, {}): {e}",
        r.key, r.type_name, r.codec
    ))
}

/// Forward `$method` to a deserializer over the fetched bytes of reference `$r`.
macro_rules! fetched {
    ($self:ident, $r:ident, $visitor:ident, $method:ident ( $($arg:expr),* )) => {{
        let buf = $self.ctx.fetch(&$r)?;
        match $r.codec {
            Codec::Postcard => {
                let mut de = postcard::Deserializer::from_bytes(buf);
                de::Deserializer::$method(&mut de, $($arg,)* $visitor).map_err(|e| codec_error(&$r, e))
            }
            Codec::Json => {
                let mut de = serde_json::Deserializer::from_slice(buf);
                de::Deserializer::$method(&mut de, $($arg,)* $visitor).map_err(|e| codec_error(&$r, e))
            }
            Codec::MessagePack => {
                let mut de = rmp_serde::Deserializer::from_read_ref(buf);
                de::Deserializer::$method(&mut de, $($arg,)* $visitor).map_err(|e| codec_error(&$r, e))
            }
            // An NPY file is bytes to a serde type: its header and elements as stored.
            Codec::Raw | Codec::Npy => $visitor.visit_borrowed_bytes(buf),
        }
    }};
}

/// Deserializes one node of the task tree.
pub(crate) struct TreeDe<'c, 'a> {
    pub(crate) value: Value,
    pub(crate) ctx: &'c DecodeCtx<'a>,
}

impl<'c, 'a> TreeDe<'c, 'a> {
    fn reference(&self) -> Result<Option<Reference>> {
        reference_of(&self.value).transpose()
    }

    /// Visit a plain (non-reference) node by its shape.
    fn visit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        let ctx = self.ctx;
        match self.value {
            Value::Bool(v) => visitor.visit_bool(v),
            Value::U8(v) => visitor.visit_u8(v),
            Value::U16(v) => visitor.visit_u16(v),
            Value::U32(v) => visitor.visit_u32(v),
            Value::U64(v) => visitor.visit_u64(v),
            Value::I8(v) => visitor.visit_i8(v),
            Value::I16(v) => visitor.visit_i16(v),
            Value::I32(v) => visitor.visit_i32(v),
            Value::I64(v) => visitor.visit_i64(v),
            Value::F32(v) => visitor.visit_f32(v),
            Value::F64(v) => visitor.visit_f64(v),
            Value::Char(v) => visitor.visit_char(v),
            Value::String(v) => visitor.visit_string(v),
            Value::Unit => visitor.visit_unit(),
            Value::Option(None) => visitor.visit_none(),
            Value::Option(Some(v)) => visitor.visit_some(TreeDe { value: *v, ctx }),
            Value::Newtype(v) => visitor.visit_newtype_struct(TreeDe { value: *v, ctx }),
            Value::Seq(items) => {
                let len = items.len();
                let mut seq = SeqDe {
                    iter: items.into_iter(),
                    ctx,
                };
                let v = visitor.visit_seq(&mut seq)?;
                if seq.iter.len() != 0 {
                    return Err(de::Error::invalid_length(len, &"fewer elements"));
                }
                Ok(v)
            }
            Value::Map(m) => visitor.visit_map(MapDe {
                iter: m.into_iter(),
                value: None,
                ctx,
            }),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
        }
    }
}

macro_rules! forward {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
            match self.reference()? {
                Some(r) => fetched!(self, r, visitor, $method()),
                None => self.visit(visitor),
            }
        }
    )*};
}

impl<'a> de::Deserializer<'a> for TreeDe<'_, 'a> {
    type Error = MiddlewareError;

    fn is_human_readable(&self) -> bool {
        true
    }

    forward!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier
    );

    fn deserialize_i128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_u128<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        if let Some(r) = self.reference()? {
            // An explicit proxy (`Option<Proxy<T>>`, `Option<OwnedProxy<T>>`) is a `Some` whose
            // node is the reference, as text formats write it; only the policy's own
            // references stand for a whole proxied `Option`.
            if !self.ctx.made_here.contains(&r.key) {
                return visitor.visit_some(self);
            }
            return fetched!(self, r, visitor, deserialize_option());
        }
        match self.value {
            Value::Option(None) | Value::Unit => visitor.visit_none(),
            Value::Option(Some(v)) => visitor.visit_some(TreeDe {
                value: *v,
                ctx: self.ctx,
            }),
            value => visitor.visit_some(TreeDe {
                value,
                ctx: self.ctx,
            }),
        }
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        if let Some(r) = self.reference()? {
            return fetched!(self, r, visitor, deserialize_unit());
        }
        self.visit(visitor)
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if let Some(r) = self.reference()? {
            return fetched!(self, r, visitor, deserialize_unit_struct(name));
        }
        self.visit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        if name == PROXY_NEWTYPE_NAME {
            // A `Proxy<T>` field: hand it the node as it is; it stays lazy.
            if reference_of(&self.value).is_some() {
                self.ctx.lazy.set(self.ctx.lazy.get() + 1);
            }
            return visitor
                .visit_newtype_struct(ValueDeserializer::<MiddlewareError>::new(self.value));
        }
        if let Some(r) = self.reference()? {
            return fetched!(self, r, visitor, deserialize_newtype_struct(name));
        }
        let value = match self.value {
            Value::Newtype(v) => *v,
            value => value,
        };
        visitor.visit_newtype_struct(TreeDe {
            value,
            ctx: self.ctx,
        })
    }

    fn deserialize_tuple<V: Visitor<'a>>(self, len: usize, visitor: V) -> Result<V::Value> {
        if let Some(r) = self.reference()? {
            return fetched!(self, r, visitor, deserialize_tuple(len));
        }
        self.visit(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        if let Some(r) = self.reference()? {
            return fetched!(self, r, visitor, deserialize_tuple_struct(name, len));
        }
        self.visit(visitor)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if let Some(r) = self.reference()? {
            return fetched!(self, r, visitor, deserialize_struct(name, fields));
        }
        self.visit(visitor)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        if let Some(r) = self.reference()? {
            return fetched!(self, r, visitor, deserialize_enum(name, variants));
        }
        let ctx = self.ctx;
        match self.value {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            Value::Map(m) if m.len() == 1 => {
                let mut it = m.into_iter();
                match it.next() {
                    Some((variant, value)) => visitor.visit_enum(EnumDe {
                        variant,
                        value,
                        ctx,
                    }),
                    None => Err(de::Error::custom("empty enum map")),
                }
            }
            other => Err(de::Error::custom(format!(
                "expected an enum (a string or a one-entry map), found {other:?}"
            ))),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value> {
        // An ignored argument is never fetched.
        visitor.visit_unit()
    }
}

struct SeqDe<'c, 'a> {
    iter: std::vec::IntoIter<Value>,
    ctx: &'c DecodeCtx<'a>,
}

impl<'a> de::SeqAccess<'a> for &mut SeqDe<'_, 'a> {
    type Error = MiddlewareError;

    fn next_element_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        match self.iter.next() {
            Some(value) => seed
                .deserialize(TreeDe {
                    value,
                    ctx: self.ctx,
                })
                .map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'c, 'a> {
    iter: btree_map::IntoIter<Value, Value>,
    value: Option<Value>,
    ctx: &'c DecodeCtx<'a>,
}

impl<'a> de::MapAccess<'a> for MapDe<'_, 'a> {
    type Error = MiddlewareError;

    fn next_key_seed<K: DeserializeSeed<'a>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(TreeDe {
                    value: k,
                    ctx: self.ctx,
                })
                .map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<T: DeserializeSeed<'a>>(&mut self, seed: T) -> Result<T::Value> {
        let value = self.value.take().ok_or_else(|| {
            <MiddlewareError as de::Error>::custom("map value requested before its key")
        })?;
        seed.deserialize(TreeDe {
            value,
            ctx: self.ctx,
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct EnumDe<'c, 'a> {
    variant: Value,
    value: Value,
    ctx: &'c DecodeCtx<'a>,
}

impl<'c, 'a> de::EnumAccess<'a> for EnumDe<'c, 'a> {
    type Error = MiddlewareError;
    type Variant = TreeDe<'c, 'a>;

    fn variant_seed<V: DeserializeSeed<'a>>(self, seed: V) -> Result<(V::Value, TreeDe<'c, 'a>)> {
        let v = seed.deserialize(TreeDe {
            value: self.variant,
            ctx: self.ctx,
        })?;
        Ok((
            v,
            TreeDe {
                value: self.value,
                ctx: self.ctx,
            },
        ))
    }
}

impl<'a> de::VariantAccess<'a> for TreeDe<'_, 'a> {
    type Error = MiddlewareError;

    fn unit_variant(self) -> Result<()> {
        match self.value {
            Value::Unit => Ok(()),
            other => Err(de::Error::custom(format!(
                "expected a unit variant, found {other:?}"
            ))),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'a>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'a>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    fn struct_variant<V: Visitor<'a>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}
