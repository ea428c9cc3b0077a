//! Text from an uploaded file, chosen by its name: plain text and Markdown (and other text
//! formats) as they are, HTML without its markup, scripts and styles. Linear in the input, no
//! recursion, no allocation beyond the output (which is never longer than the input), so a
//! hostile document costs at most one pass. PDF is read elsewhere: in a child process with its
//! own memory and CPU limits (`mantle extract-text`, see `retrieval::pdf_text`).

/// Why a file gave no text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

const TEXT: &[&str] = &["txt", "md", "markdown", "rst", "csv", "tsv", "json", "jsonl", "xml", "yaml", "yml", "toml", "py", "rs", "js", "ts", "java", "c", "h", "cpp", "go", "rb", "sh", "tex", "log"];

/// Whether a file is a PDF (read in a child process, not here).
pub(crate) fn is_pdf(filename: &str) -> bool {
    filename.rsplit_once('.').is_some_and(|(_, e)| e.eq_ignore_ascii_case("pdf"))
}

/// The text of a file named `filename`.
pub(crate) fn text_of(filename: &str, bytes: &[u8]) -> Result<String, Refused> {
    let extension = filename.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    let utf8 = |bytes: &[u8]| String::from_utf8(bytes.to_vec()).map_err(|_| Refused { code: "invalid_file", message: format!("{filename} is not UTF-8 text") });
    let text = match extension.as_str() {
        "html" | "htm" | "xhtml" => strip_html(&utf8(bytes)?),
        "pdf" => return Err(Refused { code: "unsupported_file", message: "PDF text is read in a child process, not in the server".into() }),
        ext if TEXT.contains(&ext) || ext.is_empty() => utf8(bytes)?,
        other => return Err(Refused { code: "unsupported_file", message: format!("files of type .{other} are not supported") }),
    };
    if text.trim().is_empty() {
        return Err(Refused { code: "invalid_file", message: format!("{filename} holds no text") });
    }
    Ok(text)
}

/// HTML's text: tags dropped (block tags become line breaks), `script`, `style`, `head` and
/// comments dropped with their content, the common entities decoded.
fn strip_html(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let lower = html.to_ascii_lowercase();
    let mut at = 0;
    while at < html.len() {
        let rest = &html[at..];
        if rest.starts_with("<!--") {
            at += rest.find("-->").map_or(rest.len(), |end| end + 3);
            continue;
        }
        if rest.starts_with('<') {
            let end = rest.find('>').map_or(rest.len(), |end| end + 1);
            let tag = lower[at + 1..at + end].trim_start_matches('/');
            let name: String = tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            at += end;
            if matches!(name.as_str(), "script" | "style" | "head" | "noscript" | "template") && !lower[at - end..].starts_with("</") {
                // Skip to the matching close tag (or the end).
                let close = format!("</{name}");
                at = lower[at..].find(&close).map_or(html.len(), |i| at + i);
                continue;
            }
            if matches!(name.as_str(), "p" | "div" | "br" | "li" | "tr" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "section" | "article" | "pre" | "blockquote" | "table" | "ul" | "ol") && !out.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        if rest.starts_with('&') {
            if let Some((entity, len)) = [("&amp;", '&'), ("&lt;", '<'), ("&gt;", '>'), ("&quot;", '"'), ("&#39;", '\''), ("&apos;", '\''), ("&nbsp;", ' ')].iter().find(|(e, _)| rest.starts_with(e)).map(|(e, c)| (*c, e.len())) {
                out.push(entity);
                at += len;
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        at += c.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_loses_markup_scripts_and_styles() {
        let html = "<html><head><title>t</title><style>p{color:red}</style></head><body><h1>Title</h1><p>One &amp; two</p><script>alert('x<p>')</script><!-- hidden --><p>Three</p></body></html>";
        let text = text_of("page.html", html.as_bytes()).unwrap();
        assert!(text.contains("Title") && text.contains("One & two") && text.contains("Three"), "{text:?}");
        assert!(!text.contains("alert") && !text.contains("color") && !text.contains("hidden") && !text.contains('<'), "{text:?}");
    }

    #[test]
    fn hostile_html_ends_in_one_pass() {
        let open = "<script>".repeat(100_000);
        assert!(text_of("x.html", open.as_bytes()).is_err());
        let unclosed = "<".repeat(200_000) + "text";
        let _ = text_of("x.html", unclosed.as_bytes());
        let comments = "<!--".repeat(100_000);
        assert!(text_of("x.html", comments.as_bytes()).is_err());
    }

    #[test]
    fn binary_and_unknown_files_are_refused_with_a_reason() {
        assert_eq!(text_of("a.bin", b"\x00\x01").unwrap_err().code, "unsupported_file");
        assert_eq!(text_of("a.txt", &[0xff, 0xfe, 0x00]).unwrap_err().code, "invalid_file");
        assert_eq!(text_of("a.pdf", b"%PDF-1.7").unwrap_err().code, "unsupported_file");
        assert_eq!(text_of("notes.md", b"# Hi\nthere").unwrap(), "# Hi\nthere");
    }
}
