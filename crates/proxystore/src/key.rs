//! Keys: opaque, connector-specific object identifiers.

use std::{fmt, str::FromStr, sync::Arc};

use serde::{Deserialize, Serialize};

/// An opaque identifier of one object in one connector.
///
/// Each connector chooses its own keys (a UUID for file, `name:inner` for multi) and
/// validates keys it is handed. A key is cheap to clone and round-trips through `Display` and
/// `FromStr`.
///
/// ```
/// use proxystore::Key;
/// let k: Key = "abc".parse().unwrap();
/// assert_eq!(k.to_string(), "abc");
/// assert_eq!(k, Key::from("abc"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Key(Arc<str>);

impl Key {
    /// A new random key (UUID v4, 36 characters), as used by the file connector.
    pub fn random() -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        Key(Arc::from(
            &*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf),
        ))
    }

    /// The key as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({:?})", &*self.0)
    }
}

impl FromStr for Key {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Key(Arc::from(s)))
    }
}

impl From<&str> for Key {
    fn from(s: &str) -> Self {
        Key(Arc::from(s))
    }
}

impl From<String> for Key {
    fn from(s: String) -> Self {
        Key(Arc::from(s))
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_keys_differ_and_round_trip() {
        let a = Key::random();
        let b = Key::random();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 36);
        assert_eq!(a.to_string().parse::<Key>().unwrap(), a);
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
    }
}
