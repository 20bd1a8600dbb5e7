//! Human-readable tables and JSON output.

use std::io::Write;

/// A plain text table with a header row, columns padded to their widest cell.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&" ".repeat(widths[i].saturating_sub(cell.chars().count()) + 2));
                }
            }
            out.trim_end().to_owned()
        };
        let mut out = line(&self.header);
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }
}

/// Shortens text to `max` characters, marking the cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Prints to stdout; a closed pipe (`pcsaga list | head`) is not an error.
pub fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// Prints a value as pretty JSON.
pub fn print_json(value: &serde_json::Value) {
    print(&format!(
        "{}\n",
        serde_json::to_string_pretty(value).unwrap_or_default()
    ));
}

/// A value as JSON for `--json` output; an encoding failure is an error that says so, never a
/// silent `null`.
pub fn to_json<T: serde::Serialize>(
    value: &T,
    what: &str,
) -> Result<serde_json::Value, crate::exit::Failed> {
    serde_json::to_value(value).map_err(|e| {
        crate::exit::Failed::new(
            crate::exit::Exit::Failure,
            anyhow::anyhow!("cannot encode {what} as JSON ({e}); run the command without --json"),
        )
    })
}

/// A timestamp for tables: `2026-11-22 04:12:05`.
pub fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// ` --db PATH` when the database is not the default one, for commands printed as next steps
/// (they must run as printed); empty otherwise. Quoted when the path needs it.
pub fn db_flag(global: &crate::cli::Global) -> String {
    match &global.db {
        Some(path) if path.as_os_str() != "pcsaga.db" => {
            let text = path.display().to_string();
            if text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-+".contains(c))
            {
                format!(" --db {text}")
            } else {
                format!(" --db '{}'", text.replace('\'', "'\\''"))
            }
        }
        _ => String::new(),
    }
}
