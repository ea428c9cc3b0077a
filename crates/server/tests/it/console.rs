//! The console's page and assets: served from the binary with a strict policy, and a script that
//! never turns a string into HTML or code.

use axum::http::StatusCode;

use crate::harness::TestServer;

#[tokio::test]
async fn console_assets_carry_a_strict_policy() {
    let server = TestServer::new().await;
    for (path, content_type) in [("/", "text/html"), ("/console/app.js", "text/javascript"), ("/console/releases.js", "text/javascript"), ("/console/retrieval.js", "text/javascript"), ("/console/app.css", "text/css")] {
        let reply = server.get(path, None).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert!(reply.header("content-type").unwrap().starts_with(content_type), "{path}");
        let policy = reply.header("content-security-policy").unwrap();
        for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(reply.header("x-content-type-options").as_deref(), Some("nosniff"));
    }
    let page = String::from_utf8(server.get("/", None).await.body.to_vec()).unwrap();
    assert!(page.contains("<script type=\"module\" src=\"/console/app.js\">") && !page.contains("<script>"), "no inline script");
    assert!(!page.contains("style="), "no inline style");
}

#[test]
fn the_console_script_never_parses_strings_as_html_or_code() {
    let script = [include_str!("../../src/console/app.js"), include_str!("../../src/console/releases.js"), include_str!("../../src/console/retrieval.js")].concat();
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setTimeout(\"", "localStorage"] {
        assert!(!script.contains(sink), "the console's scripts use {sink}");
    }
    // Tokens stay out of URLs: no query parameter carries one.
    assert!(!script.contains("?token=") && !script.contains("&token="));
}
