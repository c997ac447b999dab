//! Embeds every file under `../pages` into the binary, so the dashboard works offline
//! and from any working directory.

use std::path::Path;

fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, base, out);
        } else {
            out.push(p.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/"));
        }
    }
}

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let pages = Path::new(&manifest).join("../pages").canonicalize().expect("pages/ exists");
    println!("cargo:rerun-if-changed={}", pages.display());
    let mut files = Vec::new();
    walk(&pages, &pages, &mut files);
    let mut code = String::from("pub static FILES: &[(&str, &[u8])] = &[\n");
    for f in &files {
        let abs = pages.join(f);
        println!("cargo:rerun-if-changed={}", abs.display());
        code.push_str(&format!("    ({f:?}, include_bytes!({:?})),\n", abs.display().to_string()));
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("assets.rs");
    std::fs::write(out, code).unwrap();
}
