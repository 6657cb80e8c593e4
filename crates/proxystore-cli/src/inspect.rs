//! `proxystore inspect`: decode a serialized proxy reference and show it, fetching nothing.

use std::fmt::Write as _;
use std::io::Read;

use anyhow::Context as _;
use base64::Engine as _;
use clap::Args;
use proxystore::Reference;
use serde_json::{Value, json};

use crate::exit::{self, Coded};
use crate::terminal::escape_for_terminal;
use crate::util::{bytes_human, from_hex, print};

/// Longest input read: references are a few hundred bytes; anything this large is not one.
const MAX_INPUT: u64 = 1 << 20;

/// Options of `proxystore inspect`.
#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The reference: its text (base64 or hex of the protobuf bytes, or JSON, bare or as
    /// `{"$proxy": {...}}`), `@FILE` to read it (text or raw protobuf) from a file, or `-` to
    /// read it from standard input.
    #[arg(value_name = "REF|@FILE|-", allow_hyphen_values = true)]
    reference: String,

    /// Print JSON: the reference's fields (secrets redacted), how it was encoded, and its
    /// size as protobuf.
    #[arg(long)]
    json: bool,
}

/// How the input was encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    Protobuf,
    Base64,
    Hex,
    Json,
    ProxyJson,
}

impl Form {
    fn name(self) -> &'static str {
        match self {
            Form::Protobuf => "protobuf",
            Form::Base64 => "base64",
            Form::Hex => "hex",
            Form::Json => "json",
            Form::ProxyJson => "proxy-json",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Form::Protobuf => "raw protobuf",
            Form::Base64 => "base64 of protobuf",
            Form::Hex => "hex of protobuf",
            Form::Json => "JSON",
            Form::ProxyJson => "JSON of a proxy ({\"$proxy\": ...})",
        }
    }
}

pub(crate) fn inspect(args: InspectArgs) -> anyhow::Result<u8> {
    let input = read_input(&args.reference)?;
    let (r, form) = decode(&input)?;
    let mut out = String::new();
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&to_json(&r, form))?)?;
    } else {
        // Every name and value may come from the reference: one line per field, whatever it holds.
        let rows: Vec<(String, String)> = rows(&r, form)
            .into_iter()
            .map(|(n, v)| {
                (
                    escape_for_terminal(&n).into_owned(),
                    escape_for_terminal(&v).into_owned(),
                )
            })
            .collect();
        let width = rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .max()
            .unwrap_or(0);
        for (name, value) in rows {
            writeln!(out, "{name:<width$}  {value}")?;
        }
    }
    print(&out)?;
    Ok(exit::OK)
}

fn read_input(arg: &str) -> anyhow::Result<Vec<u8>> {
    let read_limited = |r: &mut dyn Read, what: &str| -> anyhow::Result<Vec<u8>> {
        let mut buf = Vec::new();
        r.take(MAX_INPUT + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("cannot read {what}"))?;
        if buf.len() as u64 > MAX_INPUT {
            return Err(Coded::new(
                exit::INVALID_DATA,
                format!("{what} is larger than 1 MiB: not a proxy reference"),
            )
            .into());
        }
        Ok(buf)
    };
    if arg == "-" {
        read_limited(&mut std::io::stdin().lock(), "standard input")
    } else if let Some(path) = arg.strip_prefix('@') {
        let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
        read_limited(&mut f, path)
    } else {
        Ok(arg.as_bytes().to_vec())
    }
}

fn invalid(message: impl Into<String>) -> anyhow::Error {
    Coded::new(exit::INVALID_DATA, message).into()
}

/// Decode a reference in any of the accepted forms.
fn decode(input: &[u8]) -> anyhow::Result<(Reference, Form)> {
    let binary = input
        .iter()
        .any(|&b| (b < 0x20 && !b" \t\r\n".contains(&b)) || b == 0x7f);
    let text = match std::str::from_utf8(input) {
        Ok(t) if !binary => t.trim(),
        _ => {
            let r = Reference::from_bytes(input)
                .context("the input is binary but not a protobuf proxy reference")?;
            return Ok((r, Form::Protobuf));
        }
    };
    if text.is_empty() {
        return Err(invalid("the input is empty: no reference to inspect"));
    }
    if text.starts_with('{') {
        return decode_json(text);
    }
    // Base64 and hex may be wrapped over lines.
    let compact: String = text.split_whitespace().collect();
    let hex_error = match from_hex(&compact).map(|b| Reference::from_bytes(&b)) {
        Some(Ok(r)) => return Ok((r, Form::Hex)),
        Some(Err(e)) => Some(e),
        None => None,
    };
    let base64 = decode_base64(&compact).map(|b| (b.len(), Reference::from_bytes(&b)));
    match (hex_error, base64) {
        (_, Some((_, Ok(r)))) => Ok((r, Form::Base64)),
        (Some(e), _) => Err(anyhow::Error::new(e).context("hex input")),
        (None, Some((n, Err(e)))) => {
            Err(anyhow::Error::new(e).context(format!("base64 input ({n} bytes decoded)")))
        }
        (_, None) => Err(invalid(
            "not a proxy reference: the input is neither base64, hex nor JSON",
        )),
    }
}

fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
        .filter(|b| !b.is_empty())
}

fn decode_json(text: &str) -> anyhow::Result<(Reference, Form)> {
    let v: Value = serde_json::from_str(text)
        .map_err(|e| invalid(format!("not a proxy reference: invalid JSON: {e}")))?;
    let (inner, form) = match v.get(proxystore::proxy::REFERENCE_FIELD) {
        Some(inner) if v.as_object().is_some_and(|m| m.len() == 1) => (inner, Form::ProxyJson),
        _ => (&v, Form::Json),
    };
    let r = Reference::from_json(&inner.to_string()).context("JSON input")?;
    Ok((r, form))
}

/// Option names whose values are secrets. Names of environment variables and files that hold
/// a secret (`token_env`, `token_file`) are not secrets themselves and stay visible.
fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n.ends_with("_env") || n.ends_with("_file") || n.ends_with("_path") {
        return false;
    }
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "private_key",
        "api_key",
        "apikey",
    ]
    .iter()
    .any(|s| n.contains(s))
}

const REDACTED: &str = "<redacted>";

/// `options` with secret values, and passwords inside URLs, replaced by `<redacted>`.
fn redact(v: &Value) -> Value {
    match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Null | Value::Bool(_) => v.clone(),
                    _ if is_secret_name(k) => Value::String(REDACTED.into()),
                    _ => redact(v),
                };
                (k.clone(), v)
            })
            .collect(),
        Value::Array(a) => a.iter().map(redact).collect(),
        Value::String(s) => Value::String(redact_url_password(s)),
        other => other.clone(),
    }
}

/// `scheme://user:password@host/...` with the password replaced.
fn redact_url_password(s: &str) -> String {
    let Some(scheme_end) = s.find("://") else {
        return s.to_owned();
    };
    let rest_start = scheme_end + 3;
    let rest = &s[rest_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return s.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return s.to_owned();
    };
    let mut out = String::with_capacity(s.len());
    out.push_str(&s[..rest_start + colon + 1]);
    out.push_str(REDACTED);
    out.push_str(&s[rest_start + at..]);
    out
}

/// Leaves of `v` as `(dotted.path, value)`.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                flatten(&join(k), v, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

fn kind_known(kind: &str) -> bool {
    proxystore::kinds::registered_connector_kinds()
        .iter()
        .any(|k| k == kind)
}

fn rows(r: &Reference, form: Form) -> Vec<(String, String)> {
    let encoded = r.to_bytes().len();
    let mut rows = vec![
        (
            "encoding".to_owned(),
            format!("{} ({encoded} bytes as protobuf)", form.describe()),
        ),
        ("format version".to_owned(), r.version.to_string()),
        ("store".to_owned(), r.store.clone()),
    ];
    let kind = if kind_known(r.connector.kind()) {
        r.connector.kind().to_owned()
    } else {
        format!(
            "{} (not a kind this build of proxystore can rebuild)",
            r.connector.kind()
        )
    };
    rows.push(("connector".to_owned(), kind));
    let mut options = Vec::new();
    if !r.connector.options_value().is_null() {
        flatten("", &redact(r.connector.options_value()), &mut options);
    }
    if options.is_empty() {
        rows.push(("  (no options)".to_owned(), String::new()));
    }
    rows.extend(options.into_iter().map(|(k, v)| (format!("  {k}"), v)));
    rows.extend([
        ("key".to_owned(), r.key.to_string()),
        (
            "size".to_owned(),
            if r.size == 0 {
                "unknown".to_owned()
            } else {
                bytes_human(r.size)
            },
        ),
        (
            "digest".to_owned(),
            r.digest
                .map_or_else(|| "none".to_owned(), |d| d.to_string()),
        ),
        ("codec".to_owned(), r.codec.as_str().to_owned()),
        ("type name".to_owned(), or_dash(&r.type_name)),
        (
            "evict on resolve".to_owned(),
            if r.evict_on_resolve { "yes" } else { "no" }.to_owned(),
        ),
        ("traceparent".to_owned(), or_dash(&r.traceparent)),
        ("tracestate".to_owned(), or_dash(&r.tracestate)),
    ]);
    rows
}

fn to_json(r: &Reference, form: Form) -> Value {
    json!({
        "input": form.name(),
        "protobuf_bytes": r.to_bytes().len(),
        "version": r.version,
        "store": r.store,
        "connector": {
            "kind": r.connector.kind(),
            "kind_known": kind_known(r.connector.kind()),
            "options": redact(r.connector.options_value()),
        },
        "key": r.key.to_string(),
        "size": r.size,
        "digest": r.digest.map(|d| d.to_string()),
        "codec": r.codec.as_str(),
        "type_name": r.type_name,
        "evict_on_resolve": r.evict_on_resolve,
        "traceparent": r.traceparent,
        "tracestate": r.tracestate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_but_variable_names_are_not() {
        let v = json!({
            "address": "http://127.0.0.1:1",
            "token": "s3cret",
            "token_env": "PROXYSTORE_TOKEN",
            "export_token": true,
            "password": null,
            "url": "redis://user:hunter2@localhost:6379/0",
            "nested": {"secret_access_key": "AKIA-secret", "list": ["rediss://:pw@h/"]},
        });
        let r = redact(&v);
        let s = r.to_string();
        assert!(!s.contains("s3cret") && !s.contains("hunter2"), "{s}");
        assert!(!s.contains("AKIA-secret") && !s.contains(":pw@"), "{s}");
        assert_eq!(r["token_env"], "PROXYSTORE_TOKEN");
        assert_eq!(r["export_token"], true);
        assert_eq!(r["password"], Value::Null);
        assert_eq!(r["url"], "redis://user:<redacted>@localhost:6379/0");
        assert_eq!(r["address"], "http://127.0.0.1:1");
    }

    #[test]
    fn urls_without_passwords_are_unchanged() {
        for s in [
            "http://h:1/x",
            "redis://user@h",
            "no url",
            "http://h/p@q:r",
            "s3://b",
        ] {
            assert_eq!(redact_url_password(s), s);
        }
    }

    #[test]
    fn garbage_is_invalid_data_not_a_panic() {
        for input in [
            &b""[..],
            b"   ",
            b"hello world",
            b"{not json",
            b"{\"version\": 1}",
            b"00ff",
            b"AAAA",
            b"\x08\x01\x12",
            &[0xff; 64],
        ] {
            let e = decode(input).unwrap_err();
            assert_eq!(exit::code_of(&e), exit::INVALID_DATA, "{input:?}: {e:#}");
        }
    }
}
