//! The library's layers, lowest first, checked by a test over the sources.
//!
//! Data flows one way: request → sandbox → decision → cloud → answer. A module
//! may use the modules of lower layers only, so that the picture below is the
//! code's, and a module that reaches back up the chain fails the test, which
//! names the edge. Paths go through the module that defines a thing
//! (`crate::error::Error`), not through the crate root's re-exports, so that
//! every dependency shows.
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | 0 | `error` | every failure, named by its cause |
//! | 1 | `fsutil`, `sandbox` | hashing and atomic writes; one wasmtime instance and the checked calls into it |
//! | 2 | `plugin` | package formats (manifest, signature, artifact) and the instance pool |
//! | 3 | `engine` | the wasmtime engine, the module cache, loading precompiled code |
//! | 3 | `metrics`, `spool`, `cloud` | counters; the on-disk record queue; large-model clients |
//! | 4 | `router` | the routing decision and the cascade |
//! | 5 | `eval`, `inspect` | replaying labelled rows through the decision; what a package holds |
//! | 6 | `gate` | promotion by measured accuracy and cost |
//! | 7 | `distill`, `serve` | the distillation loop; the HTTP tier |
//! | 8 | `fleet` | devices and the trainer over NATS JetStream |

/// Every top-level module of the library and its layer (read by the test below).
#[cfg(test)]
pub(crate) const LAYERS: &[(&str, u8)] = &[
    ("error", 0),
    ("fsutil", 1),
    ("sandbox", 1),
    ("plugin", 2),
    ("engine", 3),
    ("metrics", 3),
    ("spool", 3),
    ("cloud", 3),
    ("router", 4),
    ("eval", 5),
    ("inspect", 5),
    ("gate", 6),
    ("distill", 7),
    ("serve", 7),
    ("fleet", 8),
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The top-level module a source file belongs to (`None` for the crate roots and this file).
    fn module_of(src: &Path, file: &Path) -> Option<String> {
        let rel = file.strip_prefix(src).ok()?;
        let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
        (!matches!(first.as_str(), "lib" | "main" | "cli" | "layers")).then_some(first)
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("host/src is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The code of a file without comments and without its `#[cfg(test)] mod tests` (tests may reach anywhere).
    fn code(text: &str) -> String {
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or(text);
        text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n")
    }

    /// The first path segments after `crate::`, including those inside `use crate::{a::…, b}`.
    fn crate_paths(code: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let end = group.find('}').unwrap_or(group.len());
                for item in group[..end].split(',') {
                    found.push(item.trim().split("::").next().unwrap_or("").to_string());
                }
            } else {
                let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
                found.push(rest[..end].to_string());
            }
        }
        found.retain(|s| !s.is_empty());
        found
    }

    #[test]
    fn every_module_uses_only_lower_layers_and_names_what_it_uses_by_its_home() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let layer = |m: &str| LAYERS.iter().find(|(name, _)| *name == m).map(|(_, l)| *l);
        let mut modules = BTreeSet::new();
        let mut faults = Vec::new();
        for file in &files {
            let Some(module) = module_of(&src, file) else { continue };
            let Some(own) = layer(&module) else {
                faults.push(format!("{module} is not in layers::LAYERS: give it a layer"));
                continue;
            };
            modules.insert(module.clone());
            let text = std::fs::read_to_string(file).expect("a readable source file");
            for used in crate_paths(&code(&text)) {
                if used == module || used == "self" {
                    continue;
                }
                match layer(&used) {
                    Some(theirs) if theirs < own => {}
                    Some(theirs) => faults.push(format!(
                        "{} (layer {own}) uses crate::{used} (layer {theirs}): an edge up or sideways",
                        file.strip_prefix(&src).unwrap().display()
                    )),
                    None => faults.push(format!(
                        "{} uses crate::{used}, a re-export of the crate root: name its module instead",
                        file.strip_prefix(&src).unwrap().display()
                    )),
                }
            }
        }
        assert!(faults.is_empty(), "the layering is broken:\n{}", faults.join("\n"));
        // The table names only modules that exist, so it stays the picture of the code.
        for (name, _) in LAYERS {
            assert!(modules.contains(*name), "layers::LAYERS names {name}, which has no source file");
        }
    }

    #[test]
    fn the_check_sees_an_edge_up_and_a_root_re_export() {
        let paths = crate_paths("use crate::{error::Error, Runtime};\nlet x = crate::router::decide(); // crate::gate");
        assert_eq!(paths, ["error", "Runtime", "router", "gate"]);
        assert_eq!(crate_paths(&code("let x = 1; // crate::gate\n")), Vec::<String>::new());
    }
}
