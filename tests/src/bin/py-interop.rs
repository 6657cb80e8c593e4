//! The Rust side of the Python binding's cross-language tests: makes references for Python to
//! resolve, and resolves references Python made, as any Rust process would.
//!
//! Usage (references are hex-encoded protobuf `ProxyReference` bytes; output is one JSON line):
//!
//! - `py-interop put-bytes KIND OPTIONS_JSON STORE SIZE`: store `pattern(SIZE)` as raw bytes;
//!   prints `{"reference": HEX}`.
//! - `py-interop put-array KIND OPTIONS_JSON STORE ROWS COLS`: store a `<f8` array of shape
//!   `[ROWS, COLS]` whose element `i` is `i / 2`; prints `{"reference": HEX}`.
//! - `py-interop put-postcard KIND OPTIONS_JSON STORE`: store a postcard-encoded `Vec<u32>`;
//!   prints `{"reference": HEX}`.
//! - `py-interop resolve HEX`: resolve as bytes or array by the reference's codec; prints
//!   `{"codec": .., "len": .., "checksum": ..}` (bytes: sum of the bytes) or
//!   `{"codec": "npy", "dtype": .., "shape": [..], "sum": ..}`.

use std::sync::Arc;

use anyhow::{Context, bail};
use proxystore::codec::npy::NpyArray;
use proxystore::{Bytes, Codec, ConnectorConfig, PutOptions, Reference, Store};

fn store(kind: &str, options: &str, name: &str) -> anyhow::Result<Store> {
    let config = ConnectorConfig::from_json_options(kind, options)?;
    Ok(Store::new(name, proxystore::kinds::from_config(&config)?))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> anyhow::Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd hex length");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("not hex"))
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = proxystore::runtime::block_on(async move {
        let arg = |i: usize| -> anyhow::Result<&str> {
            args.get(i)
                .map(String::as_str)
                .with_context(|| format!("missing argument {i}; see the module docs"))
        };
        match arg(0)? {
            "put-bytes" => {
                let s = store(arg(1)?, arg(2)?, arg(3)?)?;
                let data = Bytes::from(proxystore_tests::pattern(arg(4)?.parse()?));
                let r = s
                    .put_encoded(data, Codec::Raw, "Bytes", &PutOptions::default())
                    .await?;
                Ok(serde_json::json!({"reference": hex(&r.to_bytes())}))
            }
            "put-array" => {
                let s = store(arg(1)?, arg(2)?, arg(3)?)?;
                let (rows, cols): (u64, u64) = (arg(4)?.parse()?, arg(5)?.parse()?);
                let values: Vec<f64> = (0..rows * cols).map(|i| i as f64 / 2.0).collect();
                let array = NpyArray::from_f64(vec![rows, cols], &values)?;
                let (data, codec) = Codec::Npy.encode(&array)?;
                let r = s
                    .put_encoded(data, codec, &array.type_name(), &PutOptions::default())
                    .await?;
                Ok(serde_json::json!({"reference": hex(&r.to_bytes())}))
            }
            "put-postcard" => {
                let s = store(arg(1)?, arg(2)?, arg(3)?)?;
                let r = s.proxy(&vec![1u32, 2, 3]).await?;
                let r = r.reference().context("a fresh proxy has a reference")?;
                Ok(serde_json::json!({"reference": hex(&r.to_bytes())}))
            }
            "resolve" => {
                let r = Reference::from_bytes(&unhex(arg(1)?)?)?;
                let s = proxystore::store_for_reference(&r, &proxystore::resolve_policy()?)?;
                match r.codec {
                    Codec::Npy => {
                        let a: Arc<NpyArray> = s.get_by_reference(&r).await?;
                        Ok(serde_json::json!({
                            "codec": "npy",
                            "dtype": a.dtype(),
                            "shape": a.shape(),
                            "sum": a.to_f64()?.iter().sum::<f64>(),
                        }))
                    }
                    _ => {
                        let b: Arc<Bytes> = s.get_by_reference(&r).await?;
                        Ok(serde_json::json!({
                            "codec": r.codec.as_str(),
                            "len": b.len(),
                            "checksum": b.iter().map(|x| u64::from(*x)).sum::<u64>(),
                        }))
                    }
                }
            }
            other => bail!("unknown command {other:?}; see the module docs"),
        }
    })?;
    println!("{}", out?);
    Ok(())
}
