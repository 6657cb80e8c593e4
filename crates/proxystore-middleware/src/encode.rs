//! The producer side: a serializer that builds the small task tree and puts every argument above
//! the policy into its store on the way, leaving its reference in the tree.
//!
//! Large arguments never become tree nodes: the size check runs a counting postcard serializer
//! that stops as soon as the threshold is crossed (so it costs O(threshold), not O(object)), and
//! an argument above it is serialized once, straight into the bytes that go to the store.

use std::cell::RefCell;
use std::collections::BTreeMap;

use bytes::Bytes;
use proxystore::future::PROMISE_NEWTYPE_NAME;
use proxystore::proxy::{PROXY_NEWTYPE_NAME, REFERENCE_FIELD};
use proxystore::{Codec, PutOptions, Reference};
use serde::ser::{self, Serialize};
use serde_value::Value;

use crate::error::{MiddlewareError, Result};
use crate::inline::INLINE_NEWTYPE_NAME;
use crate::policy::ArgumentPolicy;
use crate::stores::Stores;

/// State shared by the serializers of one task.
pub(crate) struct EncodeCtx<'a> {
    pub(crate) policy: &'a ArgumentPolicy,
    pub(crate) task: &'a str,
    pub(crate) stores: &'a Stores,
    pub(crate) proxied: RefCell<Vec<Reference>>,
    /// Mark the references made evict-on-resolve (a result read once).
    pub(crate) evict_on_read: bool,
}

impl EncodeCtx<'_> {
    /// Put `value` into `store` and return the reference node that replaces it.
    fn proxy<T: ?Sized + Serialize>(&self, value: &T, store: &str, path: &str) -> Result<Value> {
        let store = self.stores.get(store)?;
        let data = Bytes::from(
            postcard::to_stdvec(value)
                .map_err(|e| MiddlewareError::Encode(format!("{path}: {e}")))?,
        );
        let type_name = std::any::type_name::<T>().to_owned();
        let options = PutOptions::named(format!("{}/{path}", self.task));
        let mut reference = proxystore::runtime::block_on(async move {
            store
                .put_encoded(data, Codec::Postcard, &type_name, &options)
                .await
        })??;
        reference.evict_on_resolve = self.evict_on_read;
        let node = serde_value::to_value(&reference)
            .map_err(|e| MiddlewareError::Encode(e.to_string()))?;
        self.proxied.borrow_mut().push(reference);
        Ok(Value::Map(BTreeMap::from([(
            Value::String(REFERENCE_FIELD.to_owned()),
            node,
        )])))
    }
}

/// Counts postcard bytes and stops with an error once past the limit.
struct Limit {
    count: u64,
    limit: u64,
}

impl postcard::ser_flavors::Flavor for Limit {
    type Output = u64;

    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        self.try_extend(&[0])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.count += data.len() as u64;
        if self.count > self.limit {
            Err(postcard::Error::SerializeBufferFull)
        } else {
            Ok(())
        }
    }

    fn finalize(self) -> postcard::Result<u64> {
        Ok(self.count)
    }
}

/// Whether `value` encodes to more than `limit` bytes, looking at no more than `limit + 1` of
/// them. Values postcard cannot encode count as small: they stay inline.
/// A measurement, not a send: owned proxies inside keep their ownership.
pub(crate) fn exceeds<T: ?Sized + Serialize>(value: &T, limit: u64) -> bool {
    proxystore::lifetime::serialize_without_moving(|| {
        matches!(
            postcard::serialize_with_flavor(value, Limit { count: 0, limit }),
            Err(postcard::Error::SerializeBufferFull)
        )
    })
}

/// Newtypes never proxied: an explicit proxy (already a reference), a promise (a reference to
/// complete: it must reach its task as written), an `Inline` (asked not to be proxied).
fn is_marker(name: &str) -> bool {
    name == PROXY_NEWTYPE_NAME || name == PROMISE_NEWTYPE_NAME || name == INLINE_NEWTYPE_NAME
}

/// Whether `value` is an explicit `Proxy`, a `Promise` or an `Inline`: never a candidate. Costs one call:
/// the probe fails on the first thing that is not such a newtype.
fn is_marked<T: ?Sized + Serialize>(value: &T) -> bool {
    shape(value) == Shape::Marked
}

/// The top-level shape of `value`, found by serializing no further than its first call.
fn shape<T: ?Sized + Serialize>(value: &T) -> Shape {
    match proxystore::lifetime::serialize_without_moving(|| value.serialize(MarkerProbe)) {
        Ok(s) => s,
        Err(Probe::Container) => Shape::Container,
        Err(Probe::Other) => Shape::Other,
    }
}

/// What a value serializes as, at its top level.
#[derive(Debug, PartialEq, Eq)]
enum Shape {
    /// An explicit `Proxy` or an `Inline`.
    Marked,
    /// A struct, map or tuple: a container of named or positional members.
    Container,
    /// Anything else.
    Other,
}

/// A serializer that answers only "is this a marked newtype?".
struct MarkerProbe;

macro_rules! not_marked {
    ($($method:ident ( $($arg:ty),* ) -> $ret:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> std::result::Result<$ret, Probe> {
            Err(Probe::Other)
        }
    )*};
}

/// How a probe stops: the shape is known from the first call.
#[derive(Debug)]
enum Probe {
    Container,
    Other,
}

impl std::fmt::Display for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shape probe stopped at a {self:?}")
    }
}

impl std::error::Error for Probe {}

impl ser::Error for Probe {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        Probe::Other
    }
}

/// Ends a probe at the first call on a container: the answer is already known.
struct Stop;

macro_rules! stop {
    ($($trait:ident :: $method:ident),*) => {$(
        impl ser::$trait for Stop {
            type Ok = Shape;
            type Error = Probe;
            fn $method<T: ?Sized + Serialize>(&mut self, _: &T) -> std::result::Result<(), Probe> {
                Err(Probe::Container)
            }
            fn end(self) -> std::result::Result<Shape, Probe> {
                Ok(Shape::Container)
            }
        }
    )*};
}

stop!(
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field
);

impl ser::SerializeMap for Stop {
    type Ok = Shape;
    type Error = Probe;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, _: &T) -> std::result::Result<(), Probe> {
        Err(Probe::Container)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, _: &T) -> std::result::Result<(), Probe> {
        Err(Probe::Container)
    }
    fn end(self) -> std::result::Result<Shape, Probe> {
        Ok(Shape::Container)
    }
}

impl ser::SerializeStruct for Stop {
    type Ok = Shape;
    type Error = Probe;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        _: &'static str,
        _: &T,
    ) -> std::result::Result<(), Probe> {
        Err(Probe::Container)
    }
    fn end(self) -> std::result::Result<Shape, Probe> {
        Ok(Shape::Container)
    }
}

impl ser::Serializer for MarkerProbe {
    type Ok = Shape;
    type Error = Probe;
    type SerializeSeq = ser::Impossible<Shape, Probe>;
    type SerializeTuple = Stop;
    type SerializeTupleStruct = Stop;
    type SerializeTupleVariant = ser::Impossible<Shape, Probe>;
    type SerializeMap = Stop;
    type SerializeStruct = Stop;
    type SerializeStructVariant = ser::Impossible<Shape, Probe>;

    not_marked! {
        serialize_bool(bool) -> Shape;
        serialize_i8(i8) -> Shape;
        serialize_i16(i16) -> Shape;
        serialize_i32(i32) -> Shape;
        serialize_i64(i64) -> Shape;
        serialize_u8(u8) -> Shape;
        serialize_u16(u16) -> Shape;
        serialize_u32(u32) -> Shape;
        serialize_u64(u64) -> Shape;
        serialize_f32(f32) -> Shape;
        serialize_f64(f64) -> Shape;
        serialize_char(char) -> Shape;
        serialize_str(&str) -> Shape;
        serialize_bytes(&[u8]) -> Shape;
        serialize_none() -> Shape;
        serialize_unit() -> Shape;
        serialize_unit_struct(&'static str) -> Shape;
        serialize_unit_variant(&'static str, u32, &'static str) -> Shape;
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
        serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
    }

    fn serialize_tuple(self, _: usize) -> std::result::Result<Stop, Probe> {
        Ok(Stop)
    }

    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> std::result::Result<Stop, Probe> {
        Ok(Stop)
    }

    fn serialize_map(self, _: Option<usize>) -> std::result::Result<Stop, Probe> {
        Ok(Stop)
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> std::result::Result<Stop, Probe> {
        Ok(Stop)
    }

    fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> std::result::Result<Shape, Probe> {
        Err(Probe::Other)
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> std::result::Result<Shape, Probe> {
        if is_marker(name) {
            Ok(Shape::Marked)
        } else {
            value.serialize(self)
        }
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> std::result::Result<Shape, Probe> {
        Err(Probe::Other)
    }
}

/// Builds a [`Value`] tree, proxying candidates above the policy.
pub(crate) struct TreeSer<'c, 'a> {
    pub(crate) ctx: &'c EncodeCtx<'a>,
    pub(crate) path: &'c str,
    pub(crate) intercept: bool,
}

impl<'c, 'a> TreeSer<'c, 'a> {
    fn child(&self) -> TreeSer<'c, 'a> {
        TreeSer {
            ctx: self.ctx,
            path: self.path,
            intercept: self.intercept,
        }
    }

    /// A named member (struct field, map entry): proxied if the policy says so, else recursed.
    fn member<T: ?Sized + Serialize>(&self, name: &str, value: &T) -> Result<Value> {
        let path = if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.path)
        };
        TreeSer {
            ctx: self.ctx,
            path: &path,
            intercept: self.intercept,
        }
        .candidate(value)
    }

    /// The whole argument value of a task: a struct, map or tuple is descended into (its
    /// members are the arguments); any other value is itself a candidate.
    pub(crate) fn root<T: ?Sized + Serialize>(self, value: &T) -> Result<Value> {
        match shape(value) {
            Shape::Container | Shape::Marked => value.serialize(self),
            Shape::Other => self.candidate(value),
        }
    }

    /// The value at this serializer's path: proxied if the policy says so, else recursed.
    fn candidate<T: ?Sized + Serialize>(self, value: &T) -> Result<Value> {
        if self.intercept
            && !is_marked(value)
            && let Some(d) = self.ctx.policy.decide(self.ctx.task, self.path)
            && exceeds(value, d.threshold)
        {
            return self.ctx.proxy(value, &d.store, self.path);
        }
        value.serialize(self)
    }
}

fn variant_map(variant: &'static str, value: Value) -> Value {
    Value::Map(BTreeMap::from([(Value::String(variant.to_owned()), value)]))
}

impl<'c, 'a> ser::Serializer for TreeSer<'c, 'a> {
    type Ok = Value;
    type Error = MiddlewareError;
    type SerializeSeq = SeqSer<'c, 'a>;
    type SerializeTuple = SeqSer<'c, 'a>;
    type SerializeTupleStruct = SeqSer<'c, 'a>;
    type SerializeTupleVariant = SeqSer<'c, 'a>;
    type SerializeMap = MapSer<'c, 'a>;
    type SerializeStruct = MapSer<'c, 'a>;
    type SerializeStructVariant = MapSer<'c, 'a>;

    fn is_human_readable(&self) -> bool {
        true
    }

    fn serialize_bool(self, v: bool) -> Result<Value> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value> {
        Ok(Value::I8(v))
    }
    fn serialize_i16(self, v: i16) -> Result<Value> {
        Ok(Value::I16(v))
    }
    fn serialize_i32(self, v: i32) -> Result<Value> {
        Ok(Value::I32(v))
    }
    fn serialize_i64(self, v: i64) -> Result<Value> {
        Ok(Value::I64(v))
    }
    fn serialize_u8(self, v: u8) -> Result<Value> {
        Ok(Value::U8(v))
    }
    fn serialize_u16(self, v: u16) -> Result<Value> {
        Ok(Value::U16(v))
    }
    fn serialize_u32(self, v: u32) -> Result<Value> {
        Ok(Value::U32(v))
    }
    fn serialize_u64(self, v: u64) -> Result<Value> {
        Ok(Value::U64(v))
    }
    fn serialize_f32(self, v: f32) -> Result<Value> {
        Ok(Value::F32(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Value> {
        Ok(Value::F64(v))
    }
    fn serialize_char(self, v: char) -> Result<Value> {
        Ok(Value::Char(v))
    }
    fn serialize_str(self, v: &str) -> Result<Value> {
        Ok(Value::String(v.to_owned()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value> {
        Ok(Value::Option(None))
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<Value> {
        Ok(Value::Option(Some(Box::new(value.serialize(self)?))))
    }
    fn serialize_unit(self) -> Result<Value> {
        Ok(Value::Unit)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value> {
        Ok(Value::Unit)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value> {
        Ok(Value::String(variant.to_owned()))
    }

    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value> {
        let intercept = self.intercept && !is_marker(name);
        value.serialize(TreeSer {
            ctx: self.ctx,
            path: self.path,
            intercept,
        })
    }

    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value> {
        Ok(variant_map(variant, value.serialize(self)?))
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer<'c, 'a>> {
        Ok(SeqSer {
            ser: self.child(),
            items: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            variant: None,
            positional: false,
        })
    }

    fn serialize_tuple(self, len: usize) -> Result<SeqSer<'c, 'a>> {
        let mut s = self.serialize_seq(Some(len))?;
        s.positional = true;
        Ok(s)
    }

    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer<'c, 'a>> {
        self.serialize_tuple(len)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqSer<'c, 'a>> {
        let mut s = self.serialize_tuple(len)?;
        s.variant = Some(variant);
        Ok(s)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<MapSer<'c, 'a>> {
        Ok(MapSer {
            ser: self.child(),
            entries: BTreeMap::new(),
            key: None,
            variant: None,
        })
    }

    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapSer<'c, 'a>> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapSer<'c, 'a>> {
        let mut m = self.serialize_map(Some(len))?;
        m.variant = Some(variant);
        Ok(m)
    }
}

/// Sequences, tuples and tuple variants. Tuple elements are candidates named by position
/// (`0`, `1`, ...); sequence elements are not, but their named members are (under the
/// sequence's path).
pub(crate) struct SeqSer<'c, 'a> {
    ser: TreeSer<'c, 'a>,
    items: Vec<Value>,
    variant: Option<&'static str>,
    positional: bool,
}

impl SeqSer<'_, '_> {
    fn push<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        let v = if self.positional {
            self.ser.member(&self.items.len().to_string(), value)?
        } else {
            value.serialize(self.ser.child())?
        };
        self.items.push(v);
        Ok(())
    }

    fn finish(self) -> Value {
        let seq = Value::Seq(self.items);
        match self.variant {
            Some(v) => variant_map(v, seq),
            None => seq,
        }
    }
}

impl ser::SerializeSeq for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = MiddlewareError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = MiddlewareError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = MiddlewareError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SeqSer<'_, '_> {
    type Ok = Value;
    type Error = MiddlewareError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        self.push(value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

/// Maps, structs and struct variants: string-keyed entries and fields are candidates.
pub(crate) struct MapSer<'c, 'a> {
    ser: TreeSer<'c, 'a>,
    entries: BTreeMap<Value, Value>,
    key: Option<Value>,
    variant: Option<&'static str>,
}

impl MapSer<'_, '_> {
    fn finish(self) -> Value {
        let map = Value::Map(self.entries);
        match self.variant {
            Some(v) => variant_map(v, map),
            None => map,
        }
    }

    fn field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<()> {
        let v = self.ser.member(key, value)?;
        self.entries.insert(Value::String(key.to_owned()), v);
        Ok(())
    }
}

impl ser::SerializeMap for MapSer<'_, '_> {
    type Ok = Value;
    type Error = MiddlewareError;

    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<()> {
        self.key = Some(key.serialize(TreeSer {
            ctx: self.ser.ctx,
            path: self.ser.path,
            intercept: false,
        })?);
        Ok(())
    }

    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<()> {
        let key = self
            .key
            .take()
            .ok_or_else(|| <MiddlewareError as ser::Error>::custom("map value without a key"))?;
        let v = match &key {
            Value::String(name) => self.ser.member(name, value)?,
            _ => value.serialize(self.ser.child())?,
        };
        self.entries.insert(key, v);
        Ok(())
    }

    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapSer<'_, '_> {
    type Ok = Value;
    type Error = MiddlewareError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapSer<'_, '_> {
    type Ok = Value;
    type Error = MiddlewareError;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<()> {
        self.field(key, value)
    }
    fn end(self) -> Result<Value> {
        Ok(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceeds_stops_early_and_counts_right() {
        assert!(!exceeds(&vec![0u8; 10], 11));
        assert!(exceeds(&vec![0u8; 10], 10));
        assert!(exceeds(&vec![1.0f64; 10_000_000], 100));
    }
}
