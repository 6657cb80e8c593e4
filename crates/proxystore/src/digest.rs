//! Content digests recorded at put and checked at resolve.

use std::{fmt, str::FromStr};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which digest a store computes over an object's encoded bytes.
///
/// `Xxh3` (the default) is a fast non-cryptographic 64-bit hash that catches truncation and
/// corruption at memory speed; `Blake3` is cryptographic, for when tamper evidence matters;
/// `None` skips the digest.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DigestAlgorithm {
    /// No digest.
    None,
    /// XXH3-64.
    #[default]
    Xxh3,
    /// BLAKE3-256.
    Blake3,
}

impl DigestAlgorithm {
    /// Digest of `data`, or `None` for [`DigestAlgorithm::None`].
    pub fn digest(self, data: &[u8]) -> Option<Digest> {
        match self {
            DigestAlgorithm::None => None,
            DigestAlgorithm::Xxh3 => Some(Digest::Xxh3(twox_hash::XxHash3_64::oneshot(data))),
            DigestAlgorithm::Blake3 => Some(Digest::Blake3(*blake3::hash(data).as_bytes())),
        }
    }

    /// Identifier used in configs and references.
    pub fn as_str(self) -> &'static str {
        match self {
            DigestAlgorithm::None => "none",
            DigestAlgorithm::Xxh3 => "xxh3",
            DigestAlgorithm::Blake3 => "blake3",
        }
    }

    /// Length in bytes of this algorithm's digests (0 for [`DigestAlgorithm::None`]).
    pub fn digest_len(self) -> usize {
        match self {
            DigestAlgorithm::None => 0,
            DigestAlgorithm::Xxh3 => 8,
            DigestAlgorithm::Blake3 => 32,
        }
    }
}

impl FromStr for DigestAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(DigestAlgorithm::None),
            "xxh3" => Ok(DigestAlgorithm::Xxh3),
            "blake3" => Ok(DigestAlgorithm::Blake3),
            other => Err(Error::InvalidDigest {
                reason: format!("unknown algorithm '{other}' (expected none, xxh3 or blake3)"),
            }),
        }
    }
}

/// A content digest. Written as `algorithm:hex`, e.g. `xxh3:9f86d081884c7d65`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    /// XXH3-64 value.
    Xxh3(u64),
    /// BLAKE3-256 value.
    Blake3([u8; 32]),
}

impl Digest {
    /// The algorithm that produced this digest.
    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            Digest::Xxh3(_) => DigestAlgorithm::Xxh3,
            Digest::Blake3(_) => DigestAlgorithm::Blake3,
        }
    }

    /// Whether `data` has this digest.
    pub fn matches(&self, data: &[u8]) -> bool {
        self.algorithm().digest(data).as_ref() == Some(self)
    }

    /// The raw digest bytes (big-endian for XXH3).
    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Digest::Xxh3(v) => v.to_be_bytes().to_vec(),
            Digest::Blake3(b) => b.to_vec(),
        }
    }

    /// Rebuild from an algorithm and raw bytes.
    ///
    /// # Errors
    /// [`Error::InvalidDigest`] when the length does not fit the algorithm. Callers that
    /// read the digest from a larger message (a reference, a request) say which.
    pub fn from_parts(algorithm: DigestAlgorithm, bytes: &[u8]) -> Result<Option<Self>> {
        let bad = || Error::InvalidDigest {
            reason: format!(
                "a {alg} digest of {} bytes ({alg} digests are {} bytes)",
                bytes.len(),
                algorithm.digest_len(),
                alg = algorithm.as_str(),
            ),
        };
        Ok(match algorithm {
            DigestAlgorithm::None => None,
            DigestAlgorithm::Xxh3 => Some(Digest::Xxh3(u64::from_be_bytes(
                bytes.try_into().map_err(|_| bad())?,
            ))),
            DigestAlgorithm::Blake3 => Some(Digest::Blake3(bytes.try_into().map_err(|_| bad())?)),
        })
    }
}

/// Objects of at least this many bytes in all are hashed beside the write that stores them, on
/// a thread of the blocking pool (see [`digest_beside`]).
const DIGEST_ASIDE_BYTES: u64 = 1 << 20;

/// `write` and the digests of `data` (the objects it writes) with `algorithm`: for large
/// objects ([`DIGEST_ASIDE_BYTES`]) on a thread of the blocking pool while `write` runs,
/// otherwise before it. Before, a 100 MiB put hashed first (reading the object from memory
/// once more) and wrote after, and the hash was a sixth of its time. A connector that writes
/// an object in pieces does better: it hashes each piece as it writes it
/// ([`crate::connector::Connector::put_hashing`]).
pub(crate) async fn digest_beside<T>(
    algorithm: DigestAlgorithm,
    data: &[Bytes],
    write: impl Future<Output = Result<T>>,
) -> Result<(T, Vec<Option<Digest>>)> {
    let digest_all = move |data: &[Bytes]| -> Vec<Option<Digest>> {
        data.iter().map(|b| algorithm.digest(b)).collect()
    };
    let large = data.iter().map(|b| b.len() as u64).sum::<u64>() >= DIGEST_ASIDE_BYTES;
    let aside = (algorithm != DigestAlgorithm::None && large)
        .then(tokio::runtime::Handle::try_current)
        .and_then(std::result::Result::ok);
    match aside {
        Some(rt) => {
            let owned = data.to_vec();
            let hashing = rt.spawn_blocking(move || digest_all(&owned));
            let (written, digests) = tokio::join!(write, hashing);
            let digests = digests.unwrap_or_else(|_| digest_all(data));
            Ok((written?, digests))
        }
        None => {
            let digests = digest_all(data);
            Ok((write.await?, digests))
        }
    }
}

/// [`digest_beside`] for one object: `write(data)` and the digest of `data` with `algorithm`
/// (the write takes the bytes; the digest reads another handle of them).
pub(crate) async fn digest_one_beside<T, F>(
    algorithm: DigestAlgorithm,
    data: Bytes,
    write: impl FnOnce(Bytes) -> F,
) -> Result<(T, Option<Digest>)>
where
    F: Future<Output = Result<T>>,
{
    let hashed = data.clone();
    let (written, mut digests) =
        digest_beside(algorithm, std::slice::from_ref(&hashed), write(data)).await?;
    Ok((written, digests.pop().flatten()))
}

/// A digest computed piece by piece, for bytes that arrive in chunks: the same value as
/// [`DigestAlgorithm::digest`] of all the pieces joined, without joining them. Hashing each
/// piece as it lands, while it is still in the CPU's cache, spares a second pass over a large
/// object in memory (see [`crate::connector::ObjectSink::hashing`]).
///
/// ```
/// use proxystore::digest::{DigestAlgorithm, DigestHasher};
/// let mut h = DigestHasher::new(DigestAlgorithm::Xxh3).unwrap();
/// h.update(b"hello ");
/// h.update(b"world");
/// assert_eq!(Some(h.finish()), DigestAlgorithm::Xxh3.digest(b"hello world"));
/// ```
#[derive(Clone)]
pub struct DigestHasher(HasherState);

#[derive(Clone)]
enum HasherState {
    Xxh3(Box<twox_hash::XxHash3_64>),
    Blake3(Box<blake3::Hasher>),
}

impl DigestHasher {
    /// A hasher of `algorithm`; `None` for [`DigestAlgorithm::None`].
    pub fn new(algorithm: DigestAlgorithm) -> Option<Self> {
        match algorithm {
            DigestAlgorithm::None => None,
            DigestAlgorithm::Xxh3 => Some(DigestHasher(HasherState::Xxh3(Box::default()))),
            DigestAlgorithm::Blake3 => Some(DigestHasher(HasherState::Blake3(Box::default()))),
        }
    }

    /// The algorithm of this hasher.
    pub fn algorithm(&self) -> DigestAlgorithm {
        match &self.0 {
            HasherState::Xxh3(_) => DigestAlgorithm::Xxh3,
            HasherState::Blake3(_) => DigestAlgorithm::Blake3,
        }
    }

    /// Add the next piece.
    pub fn update(&mut self, data: &[u8]) {
        use std::hash::Hasher as _;
        match &mut self.0 {
            HasherState::Xxh3(h) => h.write(data),
            HasherState::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of all the pieces so far.
    pub fn finish(&self) -> Digest {
        use std::hash::Hasher as _;
        match &self.0 {
            HasherState::Xxh3(h) => Digest::Xxh3(h.finish()),
            HasherState::Blake3(h) => Digest::Blake3(*h.finalize().as_bytes()),
        }
    }
}

impl fmt::Debug for DigestHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DigestHasher")
            .field(&self.algorithm())
            .finish()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.algorithm().as_str())?;
        f.write_str(":")?;
        for b in self.to_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidDigest {
            reason: format!("{s:?}: {reason}"),
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("expected algorithm:hex"))?;
        let alg: DigestAlgorithm = alg.parse().map_err(|_| bad("unknown algorithm"))?;
        if hex.len() % 2 != 0 || !hex.is_ascii() {
            return Err(bad("not hexadecimal"));
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| bad("not hexadecimal"))?;
        match Digest::from_parts(alg, &bytes) {
            Ok(Some(d)) => Ok(d),
            Ok(None) => Err(bad("algorithm none has no value")),
            Err(Error::InvalidDigest { reason }) => Err(bad(&reason)),
            Err(e) => Err(e),
        }
    }
}

impl Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh3_matches_the_reference_test_vector() {
        // XXH3_64bits("") with seed 0, from the xxHash reference implementation.
        assert_eq!(
            DigestAlgorithm::Xxh3.digest(b""),
            Some(Digest::Xxh3(0x2D06_8005_38D3_94C2))
        );
    }

    #[test]
    fn a_digest_in_pieces_is_the_digest_of_the_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
            let whole = alg.digest(&data).unwrap();
            // Pieces around xxh3's internal block and stripe sizes, and empty ones.
            for piece in [1, 63, 64, 240, 1024, 4096, 65_537, 300_000] {
                let mut h = DigestHasher::new(alg).unwrap();
                h.update(&[]);
                for chunk in data.chunks(piece) {
                    h.update(chunk);
                }
                assert_eq!(h.finish(), whole, "{alg:?} in pieces of {piece}");
            }
            assert_eq!(
                DigestHasher::new(alg).unwrap().finish(),
                alg.digest(b"").unwrap()
            );
        }
        assert!(DigestHasher::new(DigestAlgorithm::None).is_none());
    }

    #[test]
    fn digests_round_trip_and_detect_change() {
        for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
            let d = alg.digest(b"hello").unwrap();
            assert!(d.matches(b"hello"));
            assert!(!d.matches(b"hellp"));
            let s = d.to_string();
            assert_eq!(s.parse::<Digest>().unwrap(), d);
        }
        assert!(DigestAlgorithm::None.digest(b"x").is_none());
        for bad in [
            "",
            "xxh3",
            "md5:00",
            "xxh3:zz",
            "xxh3:00",
            "blake3:0011",
            "xxh3:é0",
        ] {
            assert!(
                matches!(bad.parse::<Digest>(), Err(Error::InvalidDigest { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_wrong_length_is_a_digest_error_that_says_the_lengths() {
        let e = Digest::from_parts(DigestAlgorithm::Xxh3, &[0; 3]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid digest: a xxh3 digest of 3 bytes (xxh3 digests are 8 bytes)"
        );
        let e = Digest::from_parts(DigestAlgorithm::Blake3, &[0; 8]).unwrap_err();
        assert!(matches!(&e, Error::InvalidDigest { reason } if reason.contains("32 bytes")));
        assert_eq!(
            Digest::from_parts(DigestAlgorithm::None, &[1, 2]).unwrap(),
            None
        );
        for alg in [DigestAlgorithm::Xxh3, DigestAlgorithm::Blake3] {
            let d = alg.digest(b"x").unwrap();
            assert_eq!(d.to_bytes().len(), alg.digest_len());
            assert_eq!(Digest::from_parts(alg, &d.to_bytes()).unwrap(), Some(d));
        }
        assert!(matches!(
            "md5".parse::<DigestAlgorithm>(),
            Err(Error::InvalidDigest { .. })
        ));
    }
}
