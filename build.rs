//! Embeds the browser clients (`web/`) into the binary: writes `$OUT_DIR/web_assets.rs`, a
//! table of every file under `web/` (but `node_modules`) as `include_bytes!`, so the release
//! binary serves them without the source tree. `ROUNDTABLE_WEB_DIR` at run time serves them
//! from disk instead (development).

use std::path::{Path, PathBuf};
use std::{env, fs};

fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            walk(&path, base, out);
        } else if let Ok(rel) = path.strip_prefix(base) {
            let rel = rel.to_string_lossy().replace('\\', "/");
            out.push((rel, path.canonicalize().unwrap_or(path)));
        }
    }
}

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let web = root.join("web");
    println!("cargo:rerun-if-changed=web");
    let mut files = Vec::new();
    walk(&web, &web, &mut files);
    let mut src = String::from("/// Every file under web/, by path relative to it.\n");
    src.push_str("pub static ASSETS: &[(&str, &[u8])] = &[\n");
    for (rel, path) in &files {
        src.push_str(&format!(
            "    ({rel:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    src.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("web_assets.rs");
    fs::write(out, src).expect("OUT_DIR is writable");
}
