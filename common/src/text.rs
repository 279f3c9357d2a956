//! Text from callers made safe to log and to pass on.

/// `text` fit for a log line or a message other processes receive: control characters (a
/// newline that would forge a log line, an ANSI escape) written as `\u{..}`, and cut at a
/// character boundary to at most `max` bytes, marked with `…`.
pub fn bounded(text: &str, max: usize) -> String {
    let room = max.saturating_sub('…'.len_utf8());
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let escaped = c.is_control();
        let len = if escaped {
            c.escape_unicode().len()
        } else {
            c.len_utf8()
        };
        if out.len() + len > room {
            out.push('…');
            return out;
        }
        if escaped {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_cut_at_a_character_boundary() {
        assert_eq!(bounded("connect refused", 256), "connect refused");
        // A newline and an ANSI escape cannot forge a log line or colour a terminal.
        assert_eq!(
            bounded("x\nERROR forged\u{1b}[31m", 256),
            "x\\u{a}ERROR forged\\u{1b}[31m"
        );
        let cut = bounded(&"é".repeat(1000), 256);
        assert!(cut.len() <= 256, "{}", cut.len());
        assert!(cut.ends_with('…') && cut.starts_with("éé"));
        assert_eq!(bounded("", 8), "");
    }
}
