//! Link flags of the agent's binary.

fn main() {
    // Relative relocations packed as RELR (DT_RELR) instead of 24-byte RELA entries. A
    // static-pie binary carries one per pointer in its read-only data (vtables, string
    // tables), which made up ~6% of the shipped agent (issue 14's 10 MB budget).
    // musl's static-pie start-up code applies them (musl >= 1.2.4, Rust's bundled
    // musl); GNU ld >= 2.38 and lld write them; an older ld ignores the flag with a
    // warning. Only for musl: a glibc binary linked this way needs glibc >= 2.36.
    if std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("musl") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
