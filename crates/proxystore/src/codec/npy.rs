//! Arrays of numbers stored as NPY files: the codec that NumPy arrays cross the language line with.
//!
//! An object stored with [`Codec::Npy`](super::Codec::Npy) is one file in NumPy's NPY format
//! (versions 1.0 to 3.0 are read, 1.0 or 2.0 written): the magic `\x93NUMPY`, a version, a
//! header giving the element type (`descr`, e.g. `<f8`), the memory order and the shape, padded
//! so that the data starts on a 64-byte boundary, then the elements. The layout travels inside
//! the stored bytes, so it is covered by the reference's digest and can never disagree with
//! them; a Python process reads it with `numpy.frombuffer` over the fetched buffer, without a
//! copy (see `bindings/python`).
//!
//! Only plain numeric element types cross: booleans, signed and unsigned integers, floats and
//! complex numbers (`b`, `i`, `u`, `f`, `c` kinds). Object arrays (which NumPy pickles) and
//! structured types are refused when decoding.
//!
//! ```
//! use proxystore::codec::npy::NpyArray;
//! let a = NpyArray::from_f64(vec![2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0])?;
//! let file = a.encode();
//! assert!(file.starts_with(b"\x93NUMPY"));
//! let back = NpyArray::decode(file)?;
//! assert_eq!((back.dtype(), back.shape()), ("<f8", &[2u64, 3][..]));
//! assert_eq!(back.to_f64()?, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
//! # Ok::<_, proxystore::Error>(())
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{Error, Result};

/// The NPY magic string.
pub const MAGIC: &[u8] = b"\x93NUMPY";

/// Longest header this reader accepts (NumPy itself refuses headers over 10,000 bytes by
/// default).
pub const MAX_HEADER_BYTES: usize = 65_536;

/// Most dimensions of an array (NumPy's own limit is 64).
pub const MAX_DIMS: usize = 64;

/// An n-dimensional array of plain numbers: its element type, shape, memory order and the
/// elements' bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyArray {
    dtype: String,
    shape: Vec<u64>,
    fortran_order: bool,
    data: Bytes,
}

fn bad(reason: impl Into<String>) -> Error {
    Error::config(format!("npy: {}", reason.into()))
}

/// The size in bytes of one element of `dtype` (a NumPy `descr` such as `<f8`, `|u1`), after
/// checking that it is a plain numeric type.
///
/// # Errors
/// [`Error::Config`] for anything else.
pub fn item_size(dtype: &str) -> Result<usize> {
    let b = dtype.as_bytes();
    if b.len() < 3 || !matches!(b[0], b'<' | b'>' | b'|' | b'=') {
        return Err(bad(format!(
            "element type {dtype:?} is not a plain numeric type (e.g. '<f8')"
        )));
    }
    if !matches!(b[1], b'b' | b'i' | b'u' | b'f' | b'c') {
        return Err(bad(format!(
            "element type {dtype:?} is not a bool, integer, float or complex type"
        )));
    }
    let size: usize = dtype[2..]
        .parse()
        .ok()
        .filter(|s| (1..=32).contains(s))
        .ok_or_else(|| bad(format!("element type {dtype:?} has no valid size")))?;
    Ok(size)
}

impl NpyArray {
    /// An array of `shape` whose elements of type `dtype` (a NumPy `descr`, e.g. `<f8` for
    /// little-endian f64) are `data`, in C (row-major) order.
    ///
    /// # Errors
    /// [`Error::Config`] when `dtype` is not a plain numeric type, or `data` is not exactly
    /// the size the shape asks for.
    pub fn new(dtype: impl Into<String>, shape: Vec<u64>, data: Bytes) -> Result<Self> {
        let a = NpyArray {
            dtype: dtype.into(),
            shape,
            fortran_order: false,
            data,
        };
        a.check()?;
        Ok(a)
    }

    /// A little-endian f64 array of `shape` (copies `values` once).
    ///
    /// # Errors
    /// As for [`NpyArray::new`].
    pub fn from_f64(shape: Vec<u64>, values: &[f64]) -> Result<Self> {
        let mut data = BytesMut::with_capacity(values.len() * 8);
        for v in values {
            data.put_f64_le(*v);
        }
        NpyArray::new("<f8", shape, data.freeze())
    }

    /// The elements as f64 when the element type is little-endian f64 (`<f8`).
    ///
    /// # Errors
    /// [`Error::Config`] for any other element type.
    pub fn to_f64(&self) -> Result<Vec<f64>> {
        if self.dtype != "<f8" {
            return Err(bad(format!("element type is {}, not <f8", self.dtype)));
        }
        Ok(self
            .data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    /// Element type, a NumPy `descr` such as `<f8`.
    pub fn dtype(&self) -> &str {
        &self.dtype
    }

    /// Length of each dimension.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Whether the elements are in Fortran (column-major) order rather than C order.
    pub fn fortran_order(&self) -> bool {
        self.fortran_order
    }

    /// The elements' bytes.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// A short description such as `ndarray(<f8)[2,3]`, for [`crate::Reference::type_name`].
    pub fn type_name(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        format!("ndarray({})[{}]", self.dtype, dims.join(","))
    }

    fn check(&self) -> Result<()> {
        let item = item_size(&self.dtype)? as u64;
        if self.shape.len() > MAX_DIMS {
            return Err(bad(format!(
                "{} dimensions (at most {MAX_DIMS})",
                self.shape.len()
            )));
        }
        let count = self
            .shape
            .iter()
            .try_fold(1u64, |n, d| n.checked_mul(*d))
            .and_then(|n| n.checked_mul(item))
            .ok_or_else(|| bad("shape overflows"))?;
        if count != self.data.len() as u64 {
            return Err(bad(format!(
                "shape {:?} of {} needs {count} bytes, the data has {}",
                self.shape,
                self.dtype,
                self.data.len()
            )));
        }
        Ok(())
    }

    /// The NPY file of this array (version 1.0, or 2.0 for a header over 64 KiB).
    pub fn encode(&self) -> Bytes {
        let dims: Vec<String> = self.shape.iter().map(u64::to_string).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let dict = format!(
            "{{'descr': '{}', 'fortran_order': {}, 'shape': {}, }}",
            self.dtype,
            if self.fortran_order { "True" } else { "False" },
            shape
        );
        let v1 = dict.len() + 1 + MAGIC.len() + 4 <= usize::from(u16::MAX);
        let prefix = MAGIC.len() + if v1 { 4 } else { 6 };
        // Pad with spaces so that the data starts on a 64-byte boundary; end with a newline.
        let unpadded = prefix + dict.len() + 1;
        let header_len = dict.len() + 1 + (64 - unpadded % 64) % 64;
        let mut out = BytesMut::with_capacity(prefix + header_len + self.data.len());
        out.put_slice(MAGIC);
        if v1 {
            out.put_slice(&[1, 0]);
            out.put_u16_le(header_len as u16);
        } else {
            out.put_slice(&[2, 0]);
            out.put_u32_le(header_len as u32);
        }
        out.put_slice(dict.as_bytes());
        out.put_bytes(b' ', header_len - dict.len() - 1);
        out.put_u8(b'\n');
        out.put_slice(&self.data);
        out.freeze()
    }

    /// Read an NPY file; the elements are a slice of `file`, not a copy.
    ///
    /// # Errors
    /// [`Error::Config`] for anything that is not a well-formed NPY file of a plain numeric
    /// type whose data is exactly the size its header says.
    pub fn decode(file: Bytes) -> Result<Self> {
        let (header, start) = header_of(&file)?;
        let a = parse_header(header)?;
        let a = NpyArray {
            data: file.slice(start..),
            ..a
        };
        a.check()?;
        Ok(a)
    }

    /// Offset of the elements in an NPY file, with the header's element type, shape and
    /// order, without taking the file (what a reader that keeps its own buffer needs).
    ///
    /// # Errors
    /// As for [`NpyArray::decode`].
    pub fn layout(file: &[u8]) -> Result<(String, Vec<u64>, bool, usize)> {
        let (header, start) = header_of(file)?;
        let a = parse_header(header)?;
        let item = item_size(&a.dtype)? as u64;
        let need = a
            .shape
            .iter()
            .try_fold(item, |n, d| n.checked_mul(*d))
            .ok_or_else(|| bad("shape overflows"))?;
        if need != (file.len() - start) as u64 {
            return Err(bad(format!(
                "header says {need} bytes of data, the file has {}",
                file.len() - start
            )));
        }
        Ok((a.dtype, a.shape, a.fortran_order, start))
    }
}

/// An array serializes as the bytes of its NPY file, in any serde format; with
/// [`Codec::Npy`](super::Codec::Npy) (what a store picks for an `NpyArray`) those bytes are
/// the stored object itself.
impl serde::Serialize for NpyArray {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> serde::Deserialize<'de> for NpyArray {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let file = serde_bytes_buf(d)?;
        NpyArray::decode(Bytes::from(file)).map_err(serde::de::Error::custom)
    }
}

fn serde_bytes_buf<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<u8>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the bytes of an NPY file")
        }
        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }
        fn visit_byte_buf<E: serde::de::Error>(
            self,
            v: Vec<u8>,
        ) -> std::result::Result<Vec<u8>, E> {
            Ok(v)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> std::result::Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
    d.deserialize_byte_buf(V)
}

/// The header text of an NPY file and where its data starts.
fn header_of(file: &[u8]) -> Result<(&str, usize)> {
    if file.len() < MAGIC.len() + 4 || !file.starts_with(MAGIC) {
        return Err(bad("not an NPY file (no \\x93NUMPY magic)"));
    }
    let major = file[MAGIC.len()];
    let at = MAGIC.len() + 2;
    let (len, start) = match major {
        1 => (
            usize::from(u16::from_le_bytes([file[at], file[at + 1]])),
            at + 2,
        ),
        2 | 3 if file.len() >= at + 4 => (
            u32::from_le_bytes([file[at], file[at + 1], file[at + 2], file[at + 3]]) as usize,
            at + 4,
        ),
        _ => return Err(bad(format!("unsupported NPY version {major}"))),
    };
    if len > MAX_HEADER_BYTES || start + len > file.len() {
        return Err(bad(format!(
            "header of {len} bytes is too long or truncated"
        )));
    }
    let text =
        std::str::from_utf8(&file[start..start + len]).map_err(|_| bad("header is not text"))?;
    Ok((text, start + len))
}

/// The value after `'name':` in a header dict.
fn field<'h>(header: &'h str, name: &str) -> Result<&'h str> {
    let tag = format!("'{name}'");
    let at = header
        .find(&tag)
        .ok_or_else(|| bad(format!("header has no {tag}")))?;
    let rest = header[at + tag.len()..].trim_start();
    rest.strip_prefix(':')
        .map(str::trim_start)
        .ok_or_else(|| bad(format!("header's {tag} has no value")))
}

fn parse_header(header: &str) -> Result<NpyArray> {
    let descr = field(header, "descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or_else(|| bad("element type is not a plain type string"))?;
    item_size(descr)?;
    let fortran = field(header, "fortran_order")?;
    let fortran_order = if fortran.starts_with("True") {
        true
    } else if fortran.starts_with("False") {
        false
    } else {
        return Err(bad("fortran_order is neither True nor False"));
    };
    let shape = field(header, "shape")?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("shape is not a tuple"))?;
    let mut dims = Vec::new();
    for d in inner.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if dims.len() == MAX_DIMS {
            return Err(bad(format!("more than {MAX_DIMS} dimensions")));
        }
        dims.push(
            d.trim_end_matches('L')
                .parse::<u64>()
                .map_err(|_| bad(format!("shape dimension {d:?} is not a number")))?,
        );
    }
    Ok(NpyArray {
        dtype: descr.to_owned(),
        shape: dims,
        fortran_order,
        data: Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_aligns_data() {
        for shape in [vec![], vec![0], vec![5], vec![2, 3, 1]] {
            let n: u64 = shape.iter().product();
            let values: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let a = NpyArray::from_f64(shape.clone(), &values).unwrap();
            let file = a.encode();
            assert_eq!((file.len() - a.data().len()) % 64, 0);
            let b = NpyArray::decode(file.clone()).unwrap();
            assert_eq!(b, a);
            let (dtype, s, f, start) = NpyArray::layout(&file).unwrap();
            assert_eq!((dtype.as_str(), s, f), ("<f8", shape, false));
            assert_eq!(start, file.len() - a.data().len());
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let good = NpyArray::from_f64(vec![2], &[1.0, 2.0]).unwrap().encode();
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            b"\x93NUMPY".to_vec(),
            b"\x93NUMPY\x09\x00\x10\x00".to_vec(),
            good[..good.len() - 1].to_vec(),
        ];
        let start = good.len() - 16;
        let text = String::from_utf8_lossy(&good[10..start]).into_owned();
        for (from, to) in [
            ("<f8", "|O8"),
            ("<f8", "<V8"),
            ("(2,)", "(99999999999999999, 99999)"),
            ("False", "Maybe"),
        ] {
            let mut header = text.replacen(from, to, 1);
            header.truncate(start - 10);
            let mut f = good[..10].to_vec();
            f.extend_from_slice(header.as_bytes());
            f.extend_from_slice(&good[start..]);
            cases.push(f);
        }
        for c in cases {
            assert!(NpyArray::decode(Bytes::from(c.clone())).is_err(), "{c:?}");
            assert!(NpyArray::layout(&c).is_err());
        }
        assert!(NpyArray::new("<f8", vec![3], Bytes::from_static(&[0; 16])).is_err());
    }
}
