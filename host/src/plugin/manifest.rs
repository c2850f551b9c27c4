//! `plugin.toml`, manifest format 1: the typed contract of a plugin package.
//!
//! ```toml
//! format = 1                     # the manifest format; optional, default 1
//!
//! [plugin]
//! name = "news-topic"            # [a-z0-9_-], 1-64 chars
//! version = "1.0.0"
//! abi_version = 1                # the guest ABI the wasm implements
//! labels = ["business", "entertainment", "politics", "sport", "tech"]
//!
//! [wasm]
//! file = "news_topic.wasm"
//! sha256 = "…"                   # hex; required to load, filled in by `edgecascade pack`
//!
//! [[models]]                     # ONNX files, handed to the guest by name
//! name = "model"
//! file = "news-small.onnx"
//! sha256 = "…"
//!
//! [[assets]]                     # any other files (a vocabulary)
//! name = "vocab"
//! file = "vocab.txt"
//! sha256 = "…"
//!
//! [limits]                       # all optional; defaults below
//! memory = "256 MiB"
//! deadline = "250ms"
//! load_deadline = "30s"
//! stderr = "64 KiB"
//! instances = 2
//!
//! [policy]
//! threshold = 0.8                # escalate when confidence is below this
//! cloud_model = "news-topic-large"   # the model name asked of the cloud
//! audit_rate = 0.05              # also ask the cloud about 5% of confident answers (default 0)
//!
//! [config]                       # free-form, handed to the guest as JSON
//! max_tokens = 128
//! ```
//!
//! Unknown fields are errors, so a typo never silently falls back to a default.
//!
//! # Versioning
//!
//! `format` names the version of this file format ([`MANIFEST_FORMAT`]). A
//! field added later comes with a new format number, so a host reads every
//! format up to its own, and refuses a newer one by that number (`manifest
//! format 2 is newer than this host reads`), before any field is judged,
//! instead of naming the new field as a typo. Format 1 is written without the
//! line, so the bytes (and signatures) of existing packages do not change.
//!
//! A package directory may also hold `precompiled/<target triple>.ecaot`:
//! the plugin compiled ahead of time by `edgecascade compile`. The manifest
//! does not list those files; each is bound to the package's digest instead
//! (see [`crate::engine::aot`]).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path};
use std::time::Duration;

/// The manifest file's name inside a package.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// The newest manifest format this host reads (and the one it writes).
pub const MANIFEST_FORMAT: u32 = 1;

fn format_1() -> u32 {
    1
}

fn is_format_1(format: &u32) -> bool {
    *format == 1
}

/// A parsed `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest format, 1 to [`MANIFEST_FORMAT`]. Default 1 (and not written when 1).
    #[serde(default = "format_1", skip_serializing_if = "is_format_1")]
    pub format: u32,
    /// Who the plugin is.
    pub plugin: PluginInfo,
    /// The module.
    pub wasm: FileRef,
    /// ONNX models, handed to the guest at load. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<NamedFile>,
    /// Other files, handed to the guest at load. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assets: Vec<NamedFile>,
    /// Sandbox limits.
    #[serde(default)]
    pub limits: Limits,
    /// The default cascade policy.
    #[serde(default)]
    pub policy: Policy,
    /// Free-form settings for the guest, passed as JSON. Default: none.
    #[serde(default, skip_serializing_if = "toml::Table::is_empty")]
    pub config: toml::Table,
    /// The signature, written by `edgecascade sign` (see [`crate::plugin::TrustPolicy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// The `[signature]` table: who signed the manifest, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// What the signature covers. `manifest-bytes-v1` (what `edgecascade sign`
    /// writes): the exact bytes of `plugin.toml` before the line `[signature]`,
    /// trailing whitespace dropped. Absent: the legacy form, the manifest
    /// re-serialized without this table (still verified, for packages signed
    /// before the scheme existed; never written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// The signer's ed25519 public key, hex.
    pub key: String,
    /// The ed25519 signature, hex.
    pub ed25519: String,
}

/// The `[plugin]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginInfo {
    /// The plugin's name: lowercase letters, digits, `-` and `_`.
    pub name: String,
    /// Its version; shown in answers and logs.
    pub version: String,
    /// One line on what it does. Default: empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The guest ABI version the module implements; this host loads only `1`.
    pub abi_version: u32,
    /// Output labels, in model order. Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// A file of the package and its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRef {
    /// Path relative to the package directory; no `..`, not absolute.
    pub file: String,
    /// Lowercase hex sha256 of the file. Required to load; `pack` fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A model or asset: a name the guest asks for, and the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedFile {
    /// The name the guest asks for it by.
    pub name: String,
    /// Path relative to the package directory; no `..`, not absolute.
    pub file: String,
    /// Lowercase hex sha256 of the file. Required to load; `pack` fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The `[limits]` table: what one instance of the plugin may use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Cap on the guest's linear memory. Default `256 MiB`; 1 MiB to 4 GiB.
    /// A grow past it traps the call with [`Error::MemoryCap`].
    #[serde(with = "size")]
    pub memory: u64,
    /// Wall-clock budget of one call (infer, prompt, parse). Default `250ms`.
    /// Enforced by epoch interruption; a call past it fails with [`Error::Deadline`].
    #[serde(with = "humantime_serde")]
    pub deadline: Duration,
    /// Budget of instantiating and loading the model. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub load_deadline: Duration,
    /// Cap on stderr kept per call for the host's log; the rest is dropped. Default `64 KiB`.
    #[serde(with = "size")]
    pub stderr: u64,
    /// Cap on a result frame the guest returns. Default `1 MiB`.
    #[serde(with = "size")]
    pub output: u64,
    /// Most instances alive at once, for concurrent callers. Default 2.
    pub instances: usize,
}

impl Limits {
    /// The caps the sandbox enforces per instance.
    pub(crate) fn sandbox(&self) -> crate::sandbox::SandboxLimits {
        crate::sandbox::SandboxLimits {
            memory: self.memory,
            load_deadline: self.load_deadline,
            stderr: self.stderr,
            output: self.output,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 256 << 20,
            deadline: Duration::from_millis(250),
            load_deadline: Duration::from_secs(30),
            stderr: 64 << 10,
            output: 1 << 20,
            instances: 2,
        }
    }
}

/// The `[policy]` table: when to escalate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Escalate when the local confidence is below this, in `[0, 1]`. Default 0.5.
    pub threshold: f32,
    /// The model name to ask the cloud for. Default: the plugin's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_model: Option<String>,
    /// The share of confident local answers also sent to the cloud as an
    /// audit sample, in `[0, 1]` (see `CascadeConfig::audit_rate`). Default 0: off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audit_rate: f64,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

impl Default for Policy {
    fn default() -> Self {
        Policy { threshold: 0.5, cloud_model: None, audit_rate: 0.0 }
    }
}

impl Manifest {
    /// Parses and validates a manifest. `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Manifest> {
        let bad = |message: String| Error::Manifest { path: path.to_path_buf(), message };
        // The format first: a newer file is named as such, not by its first new field.
        let table: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        match table.get("format").map(|f| f.as_integer()) {
            None => {}
            Some(Some(n)) if (1..=i64::from(MANIFEST_FORMAT)).contains(&n) => {}
            Some(Some(n)) if n > i64::from(MANIFEST_FORMAT) => {
                return Err(bad(format!(
                    "manifest format {n} is newer than this host reads ({MANIFEST_FORMAT}): upgrade the host"
                )));
            }
            Some(_) => return Err(bad(format!("format must be a whole number from 1 to {MANIFEST_FORMAT}"))),
        }
        let manifest: Manifest = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        manifest.validate().map_err(bad)?;
        Ok(manifest)
    }

    /// Reads and parses `dir/plugin.toml`.
    pub fn read(dir: &Path) -> Result<Manifest> {
        Ok(Manifest::read_with_bytes(dir)?.0)
    }

    /// Reads and parses `dir/plugin.toml`, and returns its bytes too (what signatures cover).
    pub(crate) fn read_with_bytes(dir: &Path) -> Result<(Manifest, Vec<u8>)> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let manifest = Manifest::parse(&text, &path)?;
        Ok((manifest, text.into_bytes()))
    }

    /// The manifest as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Every file of the package as `(path, sha256)`: the wasm, then models, then assets.
    pub fn files(&self) -> impl Iterator<Item = (&String, &Option<String>)> {
        std::iter::once((&self.wasm.file, &self.wasm.sha256))
            .chain(self.models.iter().chain(&self.assets).map(|m| (&m.file, &m.sha256)))
    }

    /// Mutable access to every file, in the order of [`files`](Manifest::files).
    pub fn files_mut(&mut self) -> impl Iterator<Item = (&mut String, &mut Option<String>)> {
        std::iter::once((&mut self.wasm.file, &mut self.wasm.sha256))
            .chain(self.models.iter_mut().chain(self.assets.iter_mut()).map(|m| (&mut m.file, &mut m.sha256)))
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let p = &self.plugin;
        let name_ok = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!("plugin.name {:?}: use 1-64 of [a-z0-9_-]", p.name));
        }
        if p.version.trim().is_empty() {
            return Err("plugin.version is empty".into());
        }
        for (file, sha256) in self.files() {
            check_relative(file)?;
            if let Some(h) = sha256
                && (h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
            {
                return Err(format!("sha256 of {file:?} is not 64 lowercase hex digits"));
            }
        }
        let mut names = std::collections::HashSet::new();
        for named in self.models.iter().chain(&self.assets) {
            if named.name.is_empty() || !names.insert(named.name.as_str()) {
                return Err(format!("model/asset name {:?} is empty or repeated", named.name));
            }
        }
        let l = &self.limits;
        if !(1 << 20..=4 << 30).contains(&l.memory) {
            return Err(format!("limits.memory {} bytes: use 1 MiB to 4 GiB", l.memory));
        }
        if l.deadline.is_zero() || l.load_deadline.is_zero() {
            return Err("limits.deadline and limits.load_deadline must be above zero".into());
        }
        if l.instances == 0 || l.instances > 256 {
            return Err(format!("limits.instances {}: use 1 to 256", l.instances));
        }
        if l.output < 64 {
            return Err(format!("limits.output {} bytes: use at least 64", l.output));
        }
        if !(0.0..=1.0).contains(&self.policy.threshold) {
            return Err(format!("policy.threshold {} is outside [0, 1]", self.policy.threshold));
        }
        if !(0.0..=1.0).contains(&self.policy.audit_rate) {
            return Err(format!("policy.audit_rate {} is outside [0, 1]", self.policy.audit_rate));
        }
        Ok(())
    }
}

/// Package paths must stay inside the package.
fn check_relative(file: &str) -> std::result::Result<(), String> {
    let path = Path::new(file);
    let inside = !file.is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if inside { Ok(()) } else { Err(format!("file {file:?} must be a relative path inside the package")) }
}

/// Sizes as `"256 MiB"` or a plain number of bytes.
mod size {
    use serde::{Deserialize, Deserializer, Serializer};

    /// As `"64.0 MiB"` where that is exact, else exactly: the display rounds to one decimal, and
    /// `pack` and `sign` write manifests through here ("1064 MiB" came out as "1.0 GiB"). The
    /// exact cases keep their old text, so signatures over it stay valid.
    pub fn serialize<S: Serializer>(bytes: &u64, s: S) -> Result<S::Ok, S::Error> {
        let shown = bytesize::ByteSize(*bytes).display().iec().to_string();
        if shown.parse::<bytesize::ByteSize>().is_ok_and(|b| b.as_u64() == *bytes) {
            return s.serialize_str(&shown);
        }
        let unit = [(1 << 40, "TiB"), (1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
            .into_iter()
            .find(|(unit, _)| bytes.is_multiple_of(*unit));
        match unit {
            Some((unit, name)) => s.serialize_str(&format!("{} {name}", bytes / unit)),
            None => s.serialize_u64(*bytes),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bytes(b) => Ok(b),
            Raw::Text(t) => t
                .parse::<bytesize::ByteSize>()
                .map(|b| b.as_u64())
                .map_err(|e| serde::de::Error::custom(format!("size {t:?}: {e}"))),
        }
    }
}

/// Durations as `"250ms"`, `"2s"`.
mod humantime_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("duration {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [plugin]
        name = "p"
        version = "1"
        abi_version = 1
        [wasm]
        file = "p.wasm"
    "#;

    fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse(text, Path::new("plugin.toml"))
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.limits, Limits::default());
        assert_eq!(m.policy.threshold, 0.5);
    }

    #[test]
    fn units_parse_and_round_trip() {
        let text = format!("{MINIMAL}\n[limits]\nmemory = \"64 MiB\"\ndeadline = \"1s 500ms\"\n");
        let m = parse(&text).unwrap();
        assert_eq!(m.limits.memory, 64 << 20);
        assert_eq!(m.limits.deadline, Duration::from_millis(1500));
        assert_eq!(parse(&m.to_toml()).unwrap(), m);
    }

    #[test]
    fn sizes_round_trip_exactly() {
        // Found by robustness::mutated_manifests_parse_or_fail_cleanly: "1064 MiB" came back as 1 GiB.
        let cases = [
            ("memory = \"1064 MiB\"", "memory = \"1064 MiB\""),
            ("stderr = \"1500 KiB\"", "stderr = \"1500 KiB\""),
            ("stderr = \"1000\"", "stderr = \"1000 B\""),
            ("stderr = 1025", "stderr = 1025"),
            // What was exact keeps its text, so signatures over existing manifests still verify.
            ("memory = \"128.0 MiB\"", "memory = \"128.0 MiB\""),
            ("memory = \"3 GiB\"", "memory = \"3.0 GiB\""),
        ];
        for (line, written) in cases {
            let m = parse(&format!("{MINIMAL}\n[limits]\n{line}\n")).unwrap();
            let text = m.to_toml();
            assert_eq!(parse(&text).unwrap(), m, "{line}");
            assert!(text.contains(written), "{line}: {text}");
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (MINIMAL.replace("name = \"p\"", "name = \"P!\""), "plugin.name"),
            (MINIMAL.replace("p.wasm", "../p.wasm"), "inside the package"),
            (format!("{MINIMAL}\n[policy]\nthreshold = 2.0\n"), "policy.threshold"),
            (format!("{MINIMAL}\n[policy]\naudit_rate = 1.5\n"), "policy.audit_rate"),
            (format!("{MINIMAL}\n[limits]\nmemory = \"12 parsecs\"\n"), "12 parsecs"),
            (format!("{MINIMAL}\n[limits]\ndedline = \"1s\"\n"), "dedline"),
            (MINIMAL.replace("abi_version = 1", ""), "abi_version"),
        ];
        for (text, needle) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        }
    }

    #[test]
    fn a_newer_format_is_refused_by_its_number_before_its_new_fields() {
        assert_eq!(parse(MINIMAL).unwrap().format, 1);
        assert_eq!(
            parse(&format!(
                "format = 1
{MINIMAL}"
            ))
            .unwrap(),
            parse(MINIMAL).unwrap()
        );
        // Format 1 is not written, so re-packing keeps the bytes (and signatures) of existing manifests.
        assert!(!parse(MINIMAL).unwrap().to_toml().contains("format"));
        let newer = format!(
            "format = 2
{MINIMAL}
[plugin.runtime]
wasi_nn = true
"
        );
        let e = parse(&newer).unwrap_err().to_string();
        assert!(e.contains("manifest format 2 is newer than this host reads (1)"), "{e}");
        for bad in ["format = 0", "format = \"1\"", "format = -3"] {
            let e = parse(&format!("{bad}\n{MINIMAL}")).unwrap_err().to_string();
            assert!(e.contains("format must be a whole number from 1 to 1"), "{bad}: {e}");
        }
    }
}
