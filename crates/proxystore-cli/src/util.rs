//! Small parsers and helpers shared by the subcommands.

use std::io::IsTerminal;
use std::ops::Range;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Transfers larger than this show a progress bar (when stderr is a terminal).
pub(crate) const PROGRESS_THRESHOLD: u64 = 4 << 20;

/// Durations are written as for `proxystore serve --idle-timeout`: `500ms`, `30s`, `1.5m`, `2h`.
pub(crate) use proxystore_server::parse_duration;

/// Parse a byte range `START..END` (end exclusive), `START..` (to the end) or `..END`; both
/// bounds take size units (`1MiB..2MiB`).
pub(crate) fn parse_range(s: &str) -> Result<Range<u64>, String> {
    let Some((a, b)) = s.split_once("..") else {
        return Err(format!(
            "{s:?} is not a range (use START..END, START.. or ..END, e.g. 0..1MiB)"
        ));
    };
    let bound = |x: &str, default: u64| -> Result<u64, String> {
        if x.trim().is_empty() {
            Ok(default)
        } else {
            proxystore_server::parse_size(x)
        }
    };
    let start = bound(a, 0)?;
    let end = bound(b, u64::MAX)?;
    if start > end {
        return Err(format!("{s:?}: the start is after the end"));
    }
    Ok(start..end)
}

/// A progress bar for a transfer of `total` bytes (`None`: unknown), on stderr, shown only
/// when stderr is a terminal, `quiet` is off, and the transfer passes
/// [`PROGRESS_THRESHOLD`] (at once when the size is known, when it gets there otherwise).
#[derive(Clone)]
pub(crate) struct Progress {
    bar: ProgressBar,
    visible_after: Option<u64>,
}

impl Progress {
    pub(crate) fn new(total: Option<u64>, verb: &str, quiet: bool) -> Self {
        let wanted = !quiet && std::io::stderr().is_terminal();
        let bar = match total {
            Some(n) => {
                let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::hidden());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} {bar:32} {binary_bytes}/{binary_total_bytes} \
                         {binary_bytes_per_sec} eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar
            }
            None => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
                bar.set_style(
                    ProgressStyle::with_template(
                        "{msg} {spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            }
        };
        bar.set_message(verb.to_owned());
        let visible_after = match (wanted, total) {
            (false, _) => None,
            (true, Some(n)) if n > PROGRESS_THRESHOLD => Some(0),
            (true, Some(_)) => None,
            (true, None) => Some(PROGRESS_THRESHOLD),
        };
        let p = Progress { bar, visible_after };
        p.reveal_if_due(0);
        p
    }

    fn reveal_if_due(&self, position: u64) {
        if self.visible_after.is_some_and(|at| position >= at) && self.bar.is_hidden() {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    pub(crate) fn inc(&self, n: u64) {
        self.bar.inc(n);
        self.reveal_if_due(self.bar.position());
    }

    pub(crate) fn position(&self) -> u64 {
        self.bar.position()
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Write `text` to standard output and flush it (see [`crate::exit::output_error`]).
pub(crate) fn print(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(crate::exit::output_error)
}

/// Lower-case hexadecimal.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decode hexadecimal (either case); `None` unless the text is an even number of hex digits.
pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() || !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `4.00 MiB (4194304 bytes)`.
pub(crate) fn bytes_human(n: u64) -> String {
    if n < 1024 {
        format!("{n} bytes")
    } else {
        format!("{} ({n} bytes)", indicatif::BinaryBytes(n))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 fortnights").is_err());
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("10..20"), Ok(10..20));
        assert_eq!(parse_range("1KiB.."), Ok(1024..u64::MAX));
        assert_eq!(parse_range("..1MiB"), Ok(0..1 << 20));
        assert!(parse_range("20..10").is_err());
        assert!(parse_range("10").is_err());
        assert!(parse_range("a..b").is_err());
    }

    #[test]
    fn hex_round_trips() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(to_hex(&b), "0001abff");
        assert_eq!(from_hex("0001ABff").as_deref(), Some(&b[..]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex(""), None);
    }
}
