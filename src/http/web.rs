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

/// A response with the file, or 404.
pub fn serve(path: &str) -> Response {
    match file(path) {
        Some(bytes) => {
            let mut r = (StatusCode::OK, bytes.into_owned()).into_response();
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
            r
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
