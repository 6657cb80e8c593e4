//! Opting out: values wrapped in [`Inline`] are never proxied by the middleware.

use std::ops::{Deref, DerefMut};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The newtype-struct name under which [`Inline`] serializes, recognised by the middleware.
pub const INLINE_NEWTYPE_NAME: &str = "$proxystore::Inline";

/// A value that always travels inline in the task, whatever its size and the policy.
///
/// On the wire it is exactly its content (newtype structs are transparent in every common
/// format), so it costs nothing and a consumer may declare the field as the plain type.
///
/// ```
/// use proxystore_middleware::Inline;
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Task {
///     data: Vec<u8>,            // a candidate for proxying
///     lookup: Inline<Vec<u8>>,  // never proxied
/// }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Inline<T>(pub T);

impl<T> Inline<T> {
    /// The wrapped value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Inline<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> DerefMut for Inline<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T: Serialize> Serialize for Inline<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(INLINE_NEWTYPE_NAME, &self.0)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Inline<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(Inline)
    }
}
