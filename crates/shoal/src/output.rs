//! Rendering for people: sizes, tables, progress bars, `b3sum`-style lines.

use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// `1.5 GiB`-style size.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// One line as `b3sum` prints it: `<hex>  <path>`. Like `b3sum`, a path holding a
/// backslash or a newline has them escaped and the line starts with `\`, so every
/// line stays one line and can be parsed back.
pub fn checksum_line(id: &impl std::fmt::Display, path: &str) -> String {
    if path.contains('\\') || path.contains('\n') {
        let escaped = path.replace('\\', "\\\\").replace('\n', "\\n");
        format!("\\{id}  {escaped}")
    } else {
        format!("{id}  {path}")
    }
}

/// A path as the user typed it, lossily converted for display.
pub fn display_path(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A byte progress bar on stderr. indicatif draws nothing when stderr is not a
/// terminal, so scripts and tests see clean output.
pub fn byte_bar(total: Option<u64>, message: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(
                    "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        }
    };
    bar.set_message(message.to_owned());
    bar
}

/// Renders rows as a left-aligned table with a header.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut parts = Vec::new();
        for (i, cell) in cells.enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i + 1 == widths.len() {
                parts.push(cell.to_owned());
            } else {
                parts.push(format!("{cell}{}", " ".repeat(pad)));
            }
        }
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_units() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1024), "1.0 KiB");
        assert_eq!(human_size(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn checksum_lines_escape_like_b3sum() {
        assert_eq!(checksum_line(&"ab", "x"), "ab  x");
        assert_eq!(checksum_line(&"ab", "we\\ird"), "\\ab  we\\\\ird");
        assert_eq!(checksum_line(&"ab", "a\nb"), "\\ab  a\\nb");
    }

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["ID", "NAME"],
            &[vec!["1".into(), "x".into()], vec!["22".into(), "y".into()]],
        );
        assert_eq!(t, "ID  NAME\n1   x\n22  y\n");
    }
}
