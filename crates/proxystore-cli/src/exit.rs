//! Exit codes, and how an error becomes one.

use std::fmt;

use crate::terminal::escape_for_terminal;

/// Success.
pub(crate) const OK: u8 = 0;
/// A failure not covered below (local I/O, a server-side error).
pub(crate) const FAILURE: u8 = 1;
/// Invalid arguments or option values (also clap's own code for usage errors).
pub(crate) const USAGE: u8 = 2;
/// No object under that key.
pub(crate) const NOT_FOUND: u8 = 3;
/// The server wants a token, or refused the one sent.
pub(crate) const UNAUTHORIZED: u8 = 4;
/// No server at the URL, the server is unavailable, or a call timed out.
pub(crate) const UNREACHABLE: u8 = 5;
/// The object is larger than the server accepts, or the server is full.
pub(crate) const LIMIT_EXCEEDED: u8 = 6;
/// A reference that does not decode or that the resolve policy refuses, or bytes whose digest
/// does not match.
pub(crate) const INVALID_DATA: u8 = 7;

/// The exit-code table of the top-level `--help`.
pub(crate) const HELP: &str = "\
Exit codes:
  0  success (for `exists`: the key exists)
  1  failure not covered below (local I/O error, server-side error)
  2  usage: invalid arguments, option values or keys
  3  not found: no object under that key (for `exists`: the key is absent)
  4  unauthorized: the server wants a token (PROXYSTORE_TOKEN) or refused it
  5  unreachable: no server at the URL, server unavailable, or a timeout
  6  limit exceeded: the object is too large for the server, or the server is full
  7  invalid data: a reference that does not decode or is refused, or a digest mismatch";

/// An error that carries its exit code (for failures that are not a [`proxystore::Error`]).
#[derive(Debug)]
pub(crate) struct Coded {
    pub(crate) code: u8,
    pub(crate) message: String,
    /// Advice that fits this failure better than the one of its code.
    pub(crate) hint: Option<&'static str>,
}

impl Coded {
    pub(crate) fn new(code: u8, message: impl Into<String>) -> Self {
        Coded {
            code,
            message: message.into(),
            hint: None,
        }
    }

    /// Print `hint` instead of the advice of the exit code.
    pub(crate) fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }
}

impl fmt::Display for Coded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Coded {}

/// An error writing to standard output. A closed pipe (`proxystore get K | head -c 100`) means
/// the reader chose to stop: the command then ends quietly with success, as ripgrep does.
pub(crate) fn output_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Coded::new(OK, "").into()
    } else {
        anyhow::Error::new(e).context("cannot write to standard output")
    }
}

/// The exit code of `e`: from the first [`Coded`] or [`proxystore::Error`] in its chain.
pub(crate) fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(c) = cause.downcast_ref::<Coded>() {
            return c.code;
        }
        if let Some(e) = cause.downcast_ref::<proxystore::Error>() {
            return code_of_library_error(e);
        }
    }
    FAILURE
}

fn code_of_library_error(e: &proxystore::Error) -> u8 {
    use proxystore::Error as E;
    match e {
        E::NotFound { .. } => NOT_FOUND,
        E::Unauthorized { .. } => UNAUTHORIZED,
        E::Timeout { .. } => UNREACHABLE,
        E::LimitExceeded { .. } => LIMIT_EXCEEDED,
        E::InvalidReference { .. }
        | E::Refused { .. }
        | E::UnsupportedVersion { .. }
        | E::DigestMismatch { .. }
        | E::InvalidDigest { .. }
        | E::Decode { .. } => INVALID_DATA,
        E::InvalidKey { .. } | E::Config { .. } => USAGE,
        E::Backend { .. } if unavailable(e) => UNREACHABLE,
        _ => FAILURE,
    }
}

/// Whether a backend error came from a gRPC `UNAVAILABLE` status: the connection could not be
/// made or was lost (the connector has already retried).
fn unavailable(e: &proxystore::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(status) = s.downcast_ref::<tonic::Status>() {
            return matches!(
                status.code(),
                tonic::Code::Unavailable | tonic::Code::Cancelled
            );
        }
        source = s.source();
    }
    false
}

/// The message of `e` on one line: its contexts down to the library error, then the root
/// cause (the OS error, say) when that says something new. The layers in between (transport
/// wrappers) only repeat themselves.
///
/// Keys, store names and server messages in it come from outside: their control characters
/// are shown escaped ([`escape_for_terminal`]).
pub(crate) fn message(e: &anyhow::Error) -> String {
    escape_for_terminal(&raw_message(e)).into_owned()
}

fn raw_message(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cut = false;
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.downcast_ref::<proxystore::Error>().is_some() {
            cut = true;
            break;
        }
    }
    if cut {
        let root = e.root_cause().to_string();
        if !parts.iter().any(|p| p.contains(&root)) {
            parts.push(root);
        }
    }
    parts.join(": ")
}

/// A line of advice printed after the error `e` of exit code `code`: its own, or the one of
/// the code where there is an obvious next step.
pub(crate) fn hint(e: &anyhow::Error, code: u8) -> Option<&'static str> {
    if let Some(h) = e
        .chain()
        .find_map(|c| c.downcast_ref::<Coded>())
        .and_then(|c| c.hint)
    {
        return Some(h);
    }
    match code {
        UNAUTHORIZED => Some(
            "the server requires a bearer token: set PROXYSTORE_TOKEN (or --token) to the \
             token it was started with",
        ),
        UNREACHABLE => Some(
            "is a server running at that URL? Start one with `proxystore serve`, or point \
             --url / PROXYSTORE_URL at it",
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_errors_map_to_their_codes() {
        let nf = anyhow::Error::new(proxystore::Error::not_found(
            "s",
            proxystore::Key::from("k"),
        ))
        .context("get k");
        assert_eq!(code_of(&nf), NOT_FOUND);
        let un = anyhow::Error::new(proxystore::Error::from(tonic::Status::unavailable(
            "connection refused",
        )));
        assert_eq!(code_of(&un), UNREACHABLE);
        let internal = anyhow::Error::new(proxystore::Error::from(tonic::Status::internal("boom")));
        assert_eq!(code_of(&internal), FAILURE);
        let coded = anyhow::Error::new(Coded::new(INVALID_DATA, "bad")).context("inspect");
        assert_eq!(code_of(&coded), INVALID_DATA);
        assert_eq!(code_of(&anyhow::anyhow!("plain")), FAILURE);
        let refused = anyhow::Error::new(proxystore::Error::Refused {
            store: "s".into(),
            kind: "file".into(),
            reason: "directory /etc is outside the allowed directories".into(),
        });
        assert_eq!(code_of(&refused), INVALID_DATA);
    }

    #[test]
    fn messages_escape_keys_and_store_names_from_outside() {
        let e = anyhow::Error::new(proxystore::Error::not_found(
            "s\u{202e}tore",
            proxystore::Key::from("k\x1b]0;owned\x07\nerror: forged"),
        ))
        .context("get k\x1b[31m from http://h");
        let m = message(&e);
        assert!(!m.chars().any(|c| c.is_control() || c == '\u{202e}'), "{m}");
        assert!(m.contains("k\\u{1b}]0;owned\\u{7}\\nerror: forged"), "{m}");
    }
}
