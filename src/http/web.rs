//! # The browser clients: `web/`, embedded in the binary
//!
//! Every file under `web/` is compiled into the binary (see `build.rs`) and served under
//! `/web/<path>`. With the environment variable `ROUNDTABLE_WEB_DIR` set to a directory, files
//! are read from there on every request instead (development: edit, reload).
//!
//! Pages: `/join?token=...` serves the page of the token's role (`web/<role>.html`), and
//! `/timer?token=...` the lectern timer (`web/timer.html`). The token is checked first (an
//! HTTP error with a JSON body otherwise, as for `/ws`); the page reads it from its own URL and
//! opens the websocket with it.

use std::borrow::Cow;
use std::path::{Component, Path, PathBuf};

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

mod assets {
    include!(concat!(env!("OUT_DIR"), "/web_assets.rs"));
}

/// Where the files come from.
fn dev_dir() -> Option<PathBuf> {
    std::env::var_os("ROUNDTABLE_WEB_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// A relative path with no `..`, no root and no empty or hidden component.
fn clean(path: &str) -> Option<&str> {
    if path.is_empty() || path.len() > 256 || path.contains('\\') {
        return None;
    }
    let ok = Path::new(path).components().all(|c| match c {
        Component::Normal(s) => !s.to_string_lossy().starts_with('.'),
        _ => false,
    });
    ok.then_some(path)
}

/// The bytes of `web/<path>`, embedded or from the development directory.
pub fn file(path: &str) -> Option<Cow<'static, [u8]>> {
    let path = clean(path)?;
    match dev_dir() {
        Some(dir) => std::fs::read(dir.join(path)).ok().map(Cow::Owned),
        None => assets::ASSETS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, b)| Cow::Borrowed(*b)),
    }
}

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// The `sha256-…` sources of a page's inline scripts (`<script>` without `src`), for its
/// Content-Security-Policy: those scripts run, no other inline script does.
fn inline_script_hashes(html: &[u8]) -> Vec<String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let text = String::from_utf8_lossy(html);
    let mut out = Vec::new();
    let mut rest = &text[..];
    while let Some(i) = rest.find("<script") {
        let after = &rest[i..];
        let Some(open_end) = after.find('>') else {
            break;
        };
        let tag = &after[..open_end];
        let body_start = open_end + 1;
        let Some(close) = after[body_start..].find("</script>") else {
            break;
        };
        let body = &after[body_start..body_start + close];
        if !tag.contains("src=") && !body.trim().is_empty() {
            let digest = sha2::Sha256::digest(body.as_bytes());
            out.push(format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD.encode(digest)
            ));
        }
        rest = &after[body_start + close + "</script>".len()..];
    }
    out
}

/// The Content-Security-Policy of a page: everything from this origin only (the websocket
/// included), no inline script but the page's own (by hash), no inline style, no plugins, no
/// framing, no `<base>`.
pub fn content_security_policy(html: &[u8]) -> String {
    let mut script = vec!["'self'".to_owned()];
    script.extend(inline_script_hashes(html));
    format!(
        "default-src 'self'; script-src {}; style-src 'self'; img-src 'self' data: blob:; \
         media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
         form-action 'self'; frame-ancestors 'none'",
        script.join(" ")
    )
}

/// A response with the file, or 404.
pub fn serve(path: &str) -> Response {
    match file(path) {
        Some(bytes) => respond(path, StatusCode::OK, bytes.into_owned()),
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The page of a refused invitation link (`refused.html`): the status and code of the
/// refusal, its code and message in `<meta name="rt-refusal">` for the page to explain. Without
/// that page in this build, plain text.
pub fn refused_page(status: StatusCode, code: &str, message: &str) -> Response {
    const SLOT: &str = r#"<meta name="rt-refusal" content="" data-message="">"#;
    let Some(bytes) = file("refused.html") else {
        return (status, format!("{code}: {message}")).into_response();
    };
    let html = String::from_utf8_lossy(&bytes).replacen(
        SLOT,
        &format!(
            r#"<meta name="rt-refusal" content="{}" data-message="{}">"#,
            html_escape(code),
            html_escape(message)
        ),
        1,
    );
    respond("refused.html", status, html.into_bytes())
}

/// Text for HTML, attribute values in either quotes included.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The file's bytes with their type and our headers (a page's with its CSP).
fn respond(path: &str, status: StatusCode, bytes: Vec<u8>) -> Response {
    let csp = content_type(path)
        .starts_with("text/html")
        .then(|| content_security_policy(&bytes));
    let mut r = (status, bytes).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(content_type(path)),
    );
    // Pages and modules change with the server version: revalidate every time.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(csp) = csp {
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(
            "permissions-policy",
            HeaderValue::from_static(
                "camera=(self), microphone=(self), display-capture=(self), \
                         geolocation=(), payment=(), usb=()",
            ),
        );
        h.insert(
            "cross-origin-opener-policy",
            HeaderValue::from_static("same-origin"),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_link_gets_a_page_naming_the_refusal() {
        let r = refused_page(
            StatusCode::UNAUTHORIZED,
            "token_revoked",
            r#"withdrawn <by "the chair">"#,
        );
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let csp = r
            .headers()
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let body = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        let html = String::from_utf8_lossy(&body);
        assert!(
            html.contains(
                r#"<meta name="rt-refusal" content="token_revoked" data-message="withdrawn &lt;by &quot;the chair&quot;&gt;">"#
            ),
            "{html}"
        );
        assert!(html.contains("/web/refused.js"), "{html}");
    }

    #[test]
    fn every_page_allows_exactly_its_own_inline_script() {
        use base64::Engine as _;
        use sha2::Digest as _;
        for page in [
            "delegate.html",
            "moderator.html",
            "assistant.html",
            "observer.html",
            "room.html",
            "technician.html",
            "timer.html",
        ] {
            let html = file(page).expect(page);
            let text = String::from_utf8_lossy(&html);
            // The one inline script, cut out by hand.
            let start = text.find("<script>").expect("an inline script") + "<script>".len();
            let end = start + text[start..].find("</script>").expect("its end");
            let want = format!(
                "'sha256-{}'",
                base64::engine::general_purpose::STANDARD
                    .encode(sha2::Sha256::digest(text[start..end].as_bytes()))
            );
            let csp = content_security_policy(&html);
            assert!(
                csp.contains(&format!("script-src 'self' {want};")),
                "{page}: {csp}"
            );
            assert!(csp.contains("frame-ancestors 'none'") && csp.contains("object-src 'none'"));
            let r = serve(page);
            assert_eq!(
                r.headers()[header::CONTENT_SECURITY_POLICY]
                    .to_str()
                    .unwrap(),
                csp
            );
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        }
        // A module has none of the page headers.
        assert!(
            !serve("protocol.js")
                .headers()
                .contains_key(header::CONTENT_SECURITY_POLICY)
        );
        // A script with src is not hashed; one without is.
        let h = inline_script_hashes(b"<script src=\"/a.js\"></script><script>x()</script>");
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn paths_outside_web_are_refused() {
        for bad in [
            "",
            "../Cargo.toml",
            "a/../../x",
            "/etc/passwd",
            ".hidden",
            "a\\b",
        ] {
            assert!(clean(bad).is_none(), "{bad}");
        }
        assert_eq!(clean("delegate.html"), Some("delegate.html"));
        assert_eq!(clean("lib/x.js"), Some("lib/x.js"));
    }
}
