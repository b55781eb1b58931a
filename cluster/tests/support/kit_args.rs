//! The kit's command lines as the tests run them, here and in the end-to-end suite
//! (tests/tests/cluster_kit.rs includes this file).

use std::path::Path;

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 test path")
}

/// `render -f FILE --ca-cert CA -o OUT`.
pub fn render<'a>(file: &'a Path, ca: &'a Path, out: &'a Path) -> [&'a str; 7] {
    [
        "render",
        "-f",
        text(file),
        "--ca-cert",
        text(ca),
        "-o",
        text(out),
    ]
}

/// `pki init -f FILE --ca-cert CA`.
pub fn pki_init<'a>(file: &'a Path, ca: &'a Path) -> [&'a str; 6] {
    ["pki", "init", "-f", text(file), "--ca-cert", text(ca)]
}
