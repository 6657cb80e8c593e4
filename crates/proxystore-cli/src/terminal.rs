//! Text for a human's terminal: what must be escaped before it is printed.

use std::borrow::Cow;

/// Whether `c` must not reach a terminal raw: control characters (C0, DEL, C1 such as U+0085
/// NEL), line and paragraph separators, and the bidirectional marks, embeddings, overrides and
/// isolates that reorder what is shown after them.
fn is_unsafe_for_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with every character that could move the cursor, start an escape sequence (colours,
/// window titles, hyperlinks), end the line or reorder the text shown as a visible escape:
/// `\n`, `\r`, `\t`, or `\u{1b}` style. Text read from a reference, a server or the command
/// line goes through this before it is printed for a human, so it cannot forge other lines.
/// Backslashes are left as they are: the JSON output carries the exact values.
pub(crate) fn escape_for_terminal(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe_for_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe_for_terminal(c) => {
                use std::fmt::Write;
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_show_controls_and_bidi_marks() {
        assert!(matches!(
            escape_for_terminal("plain-key/é/日本"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_for_terminal("a\x1b]0;title\x07b\x1b[31mc\nd\re\tf"),
            "a\\u{1b}]0;title\\u{7}b\\u{1b}[31mc\\nd\\re\\tf"
        );
        assert_eq!(
            escape_for_terminal("\u{85}\u{9b}\u{7f}\0"),
            "\\u{85}\\u{9b}\\u{7f}\\u{0}"
        );
        assert_eq!(
            escape_for_terminal("x\u{202e}y\u{2066}z\u{2069}\u{200f}\u{2028}"),
            "x\\u{202e}y\\u{2066}z\\u{2069}\\u{200f}\\u{2028}"
        );
        let escaped =
            escape_for_terminal("\u{202a}\u{202b}\u{202c}\u{202d}\u{2067}\u{2068}\u{61c}");
        assert!(
            escaped
                .chars()
                .all(|c| c.is_ascii() && !c.is_ascii_control()),
            "{escaped}"
        );
    }
}
