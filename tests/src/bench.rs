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

/// The machine a measurement ran on, as a bench's table states it: the cores this process
/// may use and the CPU's model name (e.g. `2 cores of AMD EPYC`).
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|rest| rest.split_once(':'))
                .map(|(_, name)| name.trim().to_owned())
        })
        .filter(|name| !name.is_empty());
    match cpu {
        Some(cpu) => format!("{cores} cores of {cpu}"),
        None => format!("{cores} cores"),
    }
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
        assert!(machine().starts_with(|c: char| c.is_ascii_digit()));
    }
}
