//! Records the target triple the host is built for: precompiled plugin
//! artifacts are looked up, and checked, by it.

fn main() {
    let target = std::env::var("TARGET").expect("cargo sets TARGET for build scripts");
    println!("cargo:rustc-env=EDGECASCADE_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
