//! `proxystore stat`, `proxystore exists` and `proxystore evict`.

use std::fmt::Write as _;

use anyhow::Context as _;
use clap::Args;
use proxystore::{Connector, Key};

use crate::client::ClientArgs;
use crate::exit;
use crate::terminal::escape_for_terminal;
use crate::util::{bytes_human, print};

/// Options of `proxystore stat`.
#[derive(Debug, Args)]
pub(crate) struct StatArgs {
    /// Print JSON (the fields of the human form, sizes in bytes, limits null when unlimited).
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn stat(args: StatArgs) -> anyhow::Result<u8> {
    let url = &args.client.url;
    let s = args
        .client
        .connector()?
        .stat()
        .await
        .with_context(|| format!("stat {url}"))?;
    let mut out = String::new();
    if args.json {
        let mut v = serde_json::to_value(&s)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("url".into(), serde_json::Value::String(url.clone()));
        }
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
    } else {
        let limit = |l: Option<u64>| l.map_or_else(|| "unlimited".to_owned(), bytes_human);
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let rows = [
            ("server", url.clone()),
            ("version", escape_for_terminal(&s.version).into_owned()),
            ("backend", escape_for_terminal(&s.backend).into_owned()),
            ("objects", s.object_count.to_string()),
            ("bytes stored", bytes_human(s.bytes_used)),
            ("bytes in flight", bytes_human(s.bytes_in_flight)),
            ("max object size", limit(s.max_object_bytes)),
            ("max total bytes", limit(s.max_total_bytes)),
            ("chunk size", bytes_human(s.chunk_size)),
            ("max message size", bytes_human(s.max_message_bytes)),
            ("max key length", format!("{} B", s.max_key_bytes)),
            ("batch answer size", bytes_human(s.batch_response_bytes)),
            (
                "idle timeout",
                s.idle_timeout
                    .map_or_else(|| "none".to_owned(), |d| format!("{d:?}")),
            ),
            ("token required", yes_no(s.auth_required).to_owned()),
            ("caller-chosen keys", yes_no(s.caller_keys).to_owned()),
        ];
        for (name, value) in rows {
            writeln!(out, "{name:<19} {value}")?;
        }
    }
    print(&out)?;
    Ok(exit::OK)
}

/// Options of `proxystore exists`.
#[derive(Debug, Args)]
pub(crate) struct ExistsArgs {
    /// Key of the object.
    key: String,

    /// Print nothing; answer with the exit code only.
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn exists(args: ExistsArgs) -> anyhow::Result<u8> {
    let key = Key::from(args.key.as_str());
    let found = args
        .client
        .connector()?
        .exists(&key)
        .await
        .with_context(|| format!("exists {key} on {}", args.client.url))?;
    if !args.quiet {
        print(&format!("{found}\n"))?;
    }
    Ok(if found { exit::OK } else { exit::NOT_FOUND })
}

/// Options of `proxystore evict`.
#[derive(Debug, Args)]
pub(crate) struct EvictArgs {
    /// Keys of the objects to evict; keys that do not exist are not an error.
    #[arg(required = true, value_name = "KEY")]
    keys: Vec<String>,

    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn evict(args: EvictArgs) -> anyhow::Result<u8> {
    let keys: Vec<Key> = args.keys.iter().map(|k| Key::from(k.as_str())).collect();
    let connector = args.client.connector()?;
    let result = match keys.as_slice() {
        [one] => connector.evict(one).await,
        many => connector.evict_batch(many).await,
    };
    result.with_context(|| format!("evict {} key(s) on {}", keys.len(), args.client.url))?;
    Ok(exit::OK)
}
