//! Empty: a build script makes cargo resolve the `[build-dependencies]`, which pin the
//! features of the proc-macros' and build scripts' own dependencies.
fn main() {}
