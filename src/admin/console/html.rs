//! Small pieces of HTML shared by every console page: escaping, the page
//! frame, times and redaction markers.

use std::fmt::Write as _;

/// Text made safe for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    push_esc(&mut out, text);
    out
}

/// Appends `text`, escaped, to `out`.
pub fn push_esc(out: &mut String, text: &str) {
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
}

/// A query-string value, percent-encoded.
pub fn url_value(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Escaped text with each redaction marker (`[REDACTED:KIND]`) wrapped in
/// `<mark>`, so a reader sees at once what the sanitiser removed.
pub fn marked(text: &str) -> String {
    const OPEN: &str = "[REDACTED:";
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let kind_len = after
            .bytes()
            .take_while(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || *b == b'_')
            .count();
        if kind_len == 0 || after.as_bytes().get(kind_len) != Some(&b']') {
            push_esc(&mut out, &rest[..start + OPEN.len()]);
            rest = after;
            continue;
        }
        push_esc(&mut out, &rest[..start]);
        let marker = &rest[start..start + OPEN.len() + kind_len + 1];
        out.push_str("<mark>");
        push_esc(&mut out, marker);
        out.push_str("</mark>");
        rest = &rest[start + marker.len()..];
    }
    push_esc(&mut out, rest);
    out
}

/// A stored timestamp as a `<time>` element: UTC shown, and the script
/// adds the reader's local time as its title.
pub fn time(timestamp: &str) -> String {
    let shown = timestamp
        .get(..19)
        .map(|t| t.replace('T', " "))
        .unwrap_or_else(|| timestamp.to_owned());
    format!(
        "<time datetime=\"{}\" title=\"{} UTC\">{} UTC</time>",
        esc(timestamp),
        esc(timestamp),
        esc(&shown)
    )
}

/// Which console page a frame belongs to, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Overview,
    Events,
    Integrity,
    SignIn,
}

/// A whole page: head, navigation (with sign-out when signed in) and
/// `body`.
pub fn page(title: &str, section: Section, csrf: Option<&str>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"color-scheme\" content=\"light dark\">\
         <title>{} · llm-audit-proxy</title>\
         <link rel=\"stylesheet\" href=\"/ui/assets/console.css\">\
         <script src=\"/ui/assets/console.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a>",
        esc(title)
    );
    if section != Section::SignIn {
        out.push_str("<header><nav aria-label=\"Console\"><ul>");
        for (s, href, label) in [
            (Section::Overview, "/ui/overview", "Overview"),
            (Section::Events, "/ui/events", "Events"),
            (Section::Integrity, "/ui/integrity", "Integrity"),
        ] {
            let current = if s == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<li><a href=\"{href}\"{current}>{label}</a></li>");
        }
        out.push_str("</ul>");
        if let Some(csrf) = csrf {
            let _ = write!(
                out,
                "<form method=\"post\" action=\"/ui/logout\" class=\"signout\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
                 <button type=\"submit\">Sign out</button></form>",
                esc(csrf)
            );
        }
        out.push_str("</nav></header>");
    }
    let _ = write!(
        out,
        "<main id=\"main\"><h1>{}</h1>{body}</main></body></html>",
        esc(title)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_text_is_inert() {
        assert_eq!(
            esc("<script>alert('x')</script>&\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"
        );
    }

    #[test]
    fn redaction_markers_are_marked_and_the_rest_escaped() {
        assert_eq!(
            marked("card [REDACTED:CREDIT_CARD] <b>"),
            "card <mark>[REDACTED:CREDIT_CARD]</mark> &lt;b&gt;"
        );
        // Not markers: lower case, empty kind, no closing bracket.
        for text in ["[REDACTED:x]", "[REDACTED:]", "[REDACTED:EMAIL"] {
            assert!(!marked(text).contains("<mark>"), "{text}");
        }
        assert_eq!(
            marked("[REDACTED:] [REDACTED:EMAIL]"),
            "[REDACTED:] <mark>[REDACTED:EMAIL]</mark>"
        );
    }

    #[test]
    fn times_show_utc_and_keep_the_instant() {
        let t = time("2026-01-02T03:04:05.000006Z");
        assert!(t.contains("datetime=\"2026-01-02T03:04:05.000006Z\""));
        assert!(t.contains(">2026-01-02 03:04:05 UTC<"));
    }
}
