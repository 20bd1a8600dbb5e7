//! HTML building: escaping and the page frame. Every text that comes from the database or a
//! request goes through [`escape`] (or [`attr`]) before it reaches a page.

use std::fmt::Write as _;

/// Escapes text for an HTML element's content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a quoted attribute value (the same set: quotes included).
pub fn attr(text: &str) -> String {
    escape(text)
}

/// Percent-encodes a path segment or query value (ids and filters in links).
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A whole page: the frame with its navigation around `body`.
pub fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · pcsaga</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/console.css\">\n\
         <script src=\"/assets/console.js\" defer></script>\n</head>\n<body>\n\
         <header><a class=\"brand\" href=\"/\">pcsaga</a>\
         <nav><a href=\"/\">Purchases</a><a href=\"/?stuck=1\">Stuck</a>\
         <a href=\"/?status=needs_attention\">Needs attention</a>\
         <a href=\"/?status=failed\">Failed</a></nav>\
         <span class=\"readonly\" title=\"Operators act through the CLI, which records a reason\">read-only</span></header>\n\
         <main>\n{body}\n</main>\n<footer>pcsaga {version} · this console changes nothing: every action is a CLI command, shown where it applies</footer>\n\
         </body>\n</html>\n",
        title = escape(title),
        version = env!("CARGO_PKG_VERSION"),
    )
}

/// A timestamp the browser shows in local time (the text is UTC until the script runs).
pub fn time(at: chrono::DateTime<chrono::Utc>) -> String {
    let iso = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    format!(
        "<time datetime=\"{iso}\">{}</time>",
        at.format("%Y-%m-%d %H:%M:%S UTC")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            super::escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(super::encode("a b/c?d"), "a%20b%2Fc%3Fd");
        assert_eq!(super::encode("0199-abc_~."), "0199-abc_~.");
    }
}
