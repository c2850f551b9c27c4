//! Regenerates include/edgecascade.h from the Rust source with cbindgen, so
//! the committed header cannot drift from the code (a test checks it is clean).

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let config = cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("capi/cbindgen.toml is valid");
    match cbindgen::generate_with_config(&dir, config) {
        Ok(bindings) => {
            bindings.write_to_file(format!("{dir}/include/edgecascade.h"));
        }
        // A syntax error in lib.rs: let rustc report it, not cbindgen.
        Err(e) => println!("cargo:warning=cbindgen could not generate the header: {e}"),
    }
}
