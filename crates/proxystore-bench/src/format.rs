//! Human-readable units of the report and the progress lines: durations, rates, sizes,
//! ratios.

/// Human-readable duration: `850ns`, `12.3us`, `4.56ms`, `1.234s`.
pub(crate) fn fmt_time(s: f64) -> String {
    if !s.is_finite() {
        "-".into()
    } else if s < 1e-6 {
        format!("{:.0}ns", s * 1e9)
    } else if s < 1e-3 {
        format!("{:.1}us", s * 1e6)
    } else if s < 1.0 {
        format!("{:.2}ms", s * 1e3)
    } else {
        format!("{s:.3}s")
    }
}

/// Human-readable rate in bytes per second (decimal units, as the Python bench prints them).
pub(crate) fn fmt_rate(bps: f64) -> String {
    if !bps.is_finite() {
        "-".into()
    } else if bps >= 1e9 {
        format!("{:.2}GB/s", bps / 1e9)
    } else if bps >= 1e6 {
        format!("{:.1}MB/s", bps / 1e6)
    } else if bps >= 1e3 {
        format!("{:.1}kB/s", bps / 1e3)
    } else {
        format!("{bps:.0}B/s")
    }
}

/// `1KiB`, `100MiB`, `1GiB`, or `100B`.
pub(crate) fn fmt_size(n: u64) -> String {
    for (unit, mult) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= mult && n.is_multiple_of(mult) {
            return format!("{}{unit}", n / mult);
        }
    }
    format!("{n}B")
}

/// A ratio with two, one or no decimals as it grows: `0.95x`, `12.3x`, `150x`.
pub(crate) fn fmt_ratio(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}x")
    } else if x >= 10.0 {
        format!("{x:.1}x")
    } else {
        format!("{x:.2}x")
    }
}

/// Sizes with units (`100B`, `1MiB`), each error naming its input.
pub(crate) fn parse_sizes(sizes: &[String]) -> anyhow::Result<Vec<u64>> {
    sizes.iter().map(|s| parse_size(s)).collect()
}

/// A size with units, the error naming it.
pub(crate) fn parse_size(s: &str) -> anyhow::Result<u64> {
    proxystore_server::parse_size(s).map_err(|e| anyhow::anyhow!("size {s}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_print_compactly() {
        assert_eq!(fmt_size(100), "100B");
        assert_eq!(fmt_size(1 << 20), "1MiB");
        assert_eq!(fmt_size(100 << 20), "100MiB");
        assert_eq!(fmt_time(12.34e-6), "12.3us");
        assert_eq!(fmt_rate(2.5e9), "2.50GB/s");
    }
}
