//! Shared by the bench binaries: writing a generated section into docs/BENCHMARKS.md.

use std::path::Path;

/// Replaces the section between `<!-- NAME:start -->` and `<!-- NAME:end -->` in `doc`
/// with `body` (or appends the section), so that re-running a bench updates its table in
/// place and leaves the hand-written text around it alone.
pub fn write_section(doc: &Path, name: &str, body: &str) {
    let start = format!("<!-- {name}:start -->");
    let end = format!("<!-- {name}:end -->");
    let section = format!("{start}\n{body}\n{end}");
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let updated = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if a < b => {
            format!("{}{}{}", &text[..a], section, &text[b + end.len()..])
        }
        _ => format!("{text}\n{section}\n"),
    };
    std::fs::write(doc, updated).unwrap_or_else(|e| panic!("cannot write {}: {e}", doc.display()));
}

/// Today's date (UTC) from the system clock, without a date crate.
pub fn today() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place_or_appended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let doc = dir.path().join("B.md");
        std::fs::write(&doc, "# B\n<!-- t:start -->\nold\n<!-- t:end -->\ntail\n").expect("write");
        write_section(&doc, "t", "new");
        write_section(&doc, "u", "other");
        let text = std::fs::read_to_string(&doc).expect("read");
        assert_eq!(
            text,
            "# B\n<!-- t:start -->\nnew\n<!-- t:end -->\ntail\n\n<!-- u:start -->\nother\n<!-- u:end -->\n"
        );
        assert_eq!(today().len(), 10);
    }
}
