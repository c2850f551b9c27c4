//! End-to-end tests over the real binary, real wasm plugins and real models.
//!
//! All areas link into this one test binary so the slow link happens once.
//! `cargo xtask test` builds the plugins first and points these tests at
//! them with `EDGECASCADE_PLUGINS`; modules are compiled once into the
//! shared cache in `EDGECASCADE_CACHE_DIR`.

mod servers;
mod support;

mod abi_compat;
mod aot;
mod bedrock;
mod cache;
mod capi;
mod cascade;
mod cli;
mod device_build;
mod distill;
mod edge;
mod faults;
mod fleet;
mod hostile;
mod hostile_wat;
mod models;
mod packages;
mod promotion;
mod robustness;
mod second_language;
mod signing;
mod spine;
mod wasi_nn;
