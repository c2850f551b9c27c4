//! The package channel: signed package versions from the trainer to every device.
//!
//! [`publish`] puts a verified package's files into the object store as
//! `<plugin>/<version>/<file>`, its `plugin.toml` last, then puts an
//! [`Announcement`] under the plugin's key in the channel bucket. A device
//! [`follow`]s the key: for each announcement of a version it does not serve
//! it fetches the manifest, checks its digest against the announcement,
//! fetches the files the manifest names, and then [`adopt`]s the package:
//! verifies it under the device's own trust policy (an unsigned, untrusted or
//! altered package is refused here), runs it in shadow beside the live
//! version on the device's recent inputs (a candidate that fails on any is
//! refused), installs it into the live directory (files first, `plugin.toml`
//! last) and swaps it in. A refused package leaves the live version serving.
//!
//! A device that was offline watches again when its link is back; the
//! watch starts from the key's current value, so it catches up with the
//! latest version whatever it missed.

use super::{CHANNEL_BUCKET, Fleet, PACKAGES_BUCKET, check_token, fleet_error};
use crate::engine::Runtime;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::plugin::manifest::MANIFEST_FILE;
use crate::plugin::{Input, Local, Manifest, VerifiedPackage};
use crate::serve::{AppState, MakeRouter, Reload};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// The version of [`Announcement`] this host writes and reads (its `channel` field).
pub const CHANNEL_FORMAT: u32 = 1;

/// The largest file a device fetches from the channel: 1 GiB.
pub const MAX_FILE: u64 = 1 << 30;

/// What the channel says about a plugin's latest version (JSON, the value of its key).
///
/// Readers ignore fields they do not know; `channel` changes only when a field
/// changes meaning, and a device refuses, by name, a format newer than its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announcement {
    /// The format, [`CHANNEL_FORMAT`].
    pub channel: u32,
    /// The plugin.
    pub plugin: String,
    /// The version published.
    pub version: String,
    /// The package digest ([`VerifiedPackage::digest`]): what its signature covers.
    pub digest: String,
    /// The object holding its `plugin.toml`; the other files are beside it, under their package paths.
    pub manifest: String,
    /// Seconds since the Unix epoch.
    pub published: f64,
    /// Who published it (a host name, a trainer's name); informational.
    #[serde(default)]
    pub publisher: String,
}

/// The object name of `file` in `plugin`'s `version`.
fn object_name(plugin: &str, version: &str, file: &str) -> String {
    format!("{plugin}/{version}/{file}")
}

/// Publishes `package` on the channel: its files, then its announcement.
/// Republishing a version replaces it. Fails with [`Error::Fleet`] while the
/// server is unreachable (nothing is announced until every file is stored).
pub async fn publish(fleet: &Fleet, package: &VerifiedPackage, publisher: &str) -> Result<Announcement> {
    let plugin = &package.manifest().plugin;
    check_token("plugin name", &plugin.name)?;
    let js = fleet.jetstream();
    let store = js.get_object_store(PACKAGES_BUCKET).await.map_err(|e| fleet_error("opening", PACKAGES_BUCKET, e))?;
    let files = package.contents()?.chain(std::iter::once((MANIFEST_FILE, package.manifest_bytes())));
    for (file, bytes) in files {
        let name = object_name(&plugin.name, &plugin.version, file);
        store.put(name.as_str(), &mut &bytes[..]).await.map_err(|e| fleet_error("storing", &name, e))?;
    }
    let announcement = Announcement {
        channel: CHANNEL_FORMAT,
        plugin: plugin.name.clone(),
        version: plugin.version.clone(),
        digest: package.digest(),
        manifest: object_name(&plugin.name, &plugin.version, MANIFEST_FILE),
        published: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
        publisher: publisher.to_string(),
    };
    let kv = js.get_key_value(CHANNEL_BUCKET).await.map_err(|e| fleet_error("opening", CHANNEL_BUCKET, e))?;
    let value = serde_json::to_vec(&announcement).map_err(|e| fleet_error("encoding", "the announcement", e))?;
    kv.put(&plugin.name, value.into()).await.map_err(|e| fleet_error("announcing", &plugin.name, e))?;
    Ok(announcement)
}

/// The latest announcement of `plugin`, if it was ever published.
pub async fn latest(fleet: &Fleet, plugin: &str) -> Result<Option<Announcement>> {
    let kv =
        fleet.jetstream().get_key_value(CHANNEL_BUCKET).await.map_err(|e| fleet_error("opening", CHANNEL_BUCKET, e))?;
    match kv.get(plugin).await.map_err(|e| fleet_error("reading", plugin, e))? {
        Some(value) => parse_announcement(&value).map(Some),
        None => Ok(None),
    }
}

/// Parses an announcement, refusing a format this host does not know.
pub fn parse_announcement(bytes: &[u8]) -> Result<Announcement> {
    let bad = |message: String| Error::Fleet { operation: "reading an announcement".into(), message };
    let announcement: Announcement = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if announcement.channel > CHANNEL_FORMAT {
        return Err(bad(format!(
            "channel format {} is newer than this host's {CHANNEL_FORMAT}: upgrade the host",
            announcement.channel
        )));
    }
    check_token("plugin name", &announcement.plugin)?;
    Ok(announcement)
}

/// Fetches the package `announcement` names into `dir` (created; files
/// first, `plugin.toml` last). Checks the manifest's digest against the
/// announcement and every path the manifest names; the files' hashes and the
/// signature are checked by [`adopt`].
pub async fn fetch(fleet: &Fleet, announcement: &Announcement, dir: &Path) -> Result<()> {
    let store = fleet
        .jetstream()
        .get_object_store(PACKAGES_BUCKET)
        .await
        .map_err(|e| fleet_error("opening", PACKAGES_BUCKET, e))?;
    let read = |name: String| {
        let store = store.clone();
        async move {
            let mut object = store.get(&name).await.map_err(|e| fleet_error("fetching", &name, e))?;
            let mut bytes = Vec::new();
            (&mut object)
                .take(MAX_FILE + 1)
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| fleet_error("fetching", &name, e))?;
            if bytes.len() as u64 > MAX_FILE {
                return Err(fleet_error("fetching", &name, format!("larger than {MAX_FILE} bytes")));
            }
            Ok::<_, Error>(bytes)
        }
    };
    let manifest_bytes = read(announcement.manifest.clone()).await?;
    let manifest_path = dir.join(MANIFEST_FILE);
    let text = String::from_utf8(manifest_bytes.clone())
        .map_err(|_| Error::Manifest { path: manifest_path.clone(), message: "not UTF-8".into() })?;
    let manifest = Manifest::parse(&text, &manifest_path)?;
    let digest = crate::plugin::digest_of(&manifest_bytes);
    if digest != announcement.digest
        || manifest.plugin.name != announcement.plugin
        || manifest.plugin.version != announcement.version
    {
        return Err(Error::Fleet {
            operation: format!("fetching {} {}", announcement.plugin, announcement.version),
            message: format!(
                "the manifest on the channel is {} {} with digest {digest}, not what was announced (digest {})",
                manifest.plugin.name, manifest.plugin.version, announcement.digest
            ),
        });
    }
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let prefix = announcement.manifest.strip_suffix(MANIFEST_FILE).unwrap_or_default().to_string();
    for (file, _) in manifest.files() {
        let path = safe_join(dir, file).ok_or_else(|| Error::Manifest {
            path: manifest_path.clone(),
            message: format!("{file:?} is not a plain relative path inside the package"),
        })?;
        let bytes = read(format!("{prefix}{file}")).await?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
    }
    std::fs::write(&manifest_path, &manifest_bytes).map_err(|e| Error::io(&manifest_path, e))
}

/// `dir/file` when `file` is relative and stays inside `dir`.
fn safe_join(dir: &Path, file: &str) -> Option<PathBuf> {
    let path = Path::new(file);
    let plain =
        !file.is_empty() && !file.contains('\\') && path.components().all(|c| matches!(c, Component::Normal(_)));
    plain.then(|| dir.join(path))
}

/// What a device needs to take a package from the channel into service.
#[derive(Clone)]
pub struct Device {
    /// The server's routers.
    pub state: AppState,
    /// The device's runtime: its trust policy decides what is accepted.
    pub runtime: Runtime,
    /// Builds the router of a promoted version (the same settings as the first).
    pub make_router: MakeRouter,
    /// The device's metrics.
    pub metrics: Metrics,
}

/// Verifies the package in `staging` under the device's trust policy, runs it
/// in shadow beside the live version on the device's recent inputs, then
/// installs it into `live_dir` and swaps it in. On any refusal the live
/// version keeps serving and `live_dir` is untouched.
pub fn adopt(device: &Device, staging: &Path, live_dir: &Path) -> Result<Reload> {
    let package = device.runtime.verify_complete(staging)?;
    let name = package.manifest().plugin.name.clone();
    let version = package.manifest().plugin.version.clone();
    let refuse = |live: &str, reason: String| Error::NotACandidate {
        live: format!("{name} {live}"),
        candidate: format!("{name} {version}"),
        reason,
    };
    let live =
        device.state.router(&name).ok_or_else(|| refuse("(none)", "this device serves no such plugin".into()))?;
    let live_version = live.plugin().version().to_string();
    crate::gate::check_pair(live.plugin().manifest(), package.manifest())?;
    let candidate = device.runtime.load_verified(package.clone())?;
    let inputs: Vec<Input> = device.state.recent(&name);
    let mut failures = Vec::new();
    for input in &inputs {
        let label = |local: Local| match local {
            Local::Answered(a) => a.label,
            Local::Beyond { .. } => None,
        };
        let theirs = live.plugin().infer(input).ok().map(label);
        match candidate.infer(input) {
            Ok(ours) => device.metrics.shadow(&name, &version, theirs == Some(label(ours))),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(first) = failures.first() {
        return Err(refuse(
            &live_version,
            format!("in shadow it failed on {} of {} recent inputs; the first: {first}", failures.len(), inputs.len()),
        ));
    }
    crate::engine::aot::replace_artifacts(&package, live_dir)?;
    crate::gate::install(&package, live_dir)?;
    let plugin = device.runtime.load(live_dir)?;
    let router = (device.make_router)(plugin).map_err(|reason| refuse(&live_version, reason.to_string()))?;
    // Counted before the swap, so that whoever sees the new version served also sees it counted.
    device.metrics.channel_update(&name, "promoted");
    device.state.replace(router);
    Ok(Reload::Swapped { plugin: name, from: live_version, to: version })
}

/// Follows `plugin` on the channel for ever, adopting each new version into
/// `live_dir` (fetched into `staging` first), and telling `on_reload` about
/// each one promoted or refused. A refused digest is not fetched again.
pub async fn follow(
    fleet: Fleet,
    device: Device,
    plugin: String,
    live_dir: PathBuf,
    staging: PathBuf,
    on_reload: impl Fn(Reload) + Send + Sync + 'static,
) {
    let mut refused: HashSet<String> = HashSet::new();
    loop {
        fleet.setup_when_reachable().await;
        let watch = match fleet.jetstream().get_key_value(CHANNEL_BUCKET).await {
            Ok(kv) => kv.watch_with_history(&plugin).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut watch = match watch {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!("watching the channel for {plugin}: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(entry) = watch.next().await {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    tracing::warn!("the channel watch for {plugin} ended: {e}; watching again");
                    break;
                }
            };
            if entry.operation != async_nats::jetstream::kv::Operation::Put {
                continue;
            }
            let announcement = match parse_announcement(&entry.value) {
                Ok(a) if a.plugin == plugin => a,
                Ok(a) => {
                    tracing::error!("the channel key {plugin} announces plugin {:?}; ignored", a.plugin);
                    continue;
                }
                Err(e) => {
                    device.metrics.channel_update(&plugin, "refused");
                    on_reload(Reload::Refused { dir: live_dir.clone(), error: e });
                    continue;
                }
            };
            let serving = device.state.router(&plugin).map(|r| r.plugin().version().to_string());
            if serving.as_deref() == Some(announcement.version.as_str()) || refused.contains(&announcement.digest) {
                continue;
            }
            tracing::info!("{plugin} {} is on the channel; fetching it", announcement.version);
            let dir = staging.join(format!("{plugin}-{}", announcement.version));
            let adopted = match fetch(&fleet, &announcement, &dir).await {
                Ok(()) => {
                    let (device, dir, live_dir) = (device.clone(), dir.clone(), live_dir.clone());
                    tokio::task::spawn_blocking(move || adopt(&device, &dir, &live_dir))
                        .await
                        .unwrap_or_else(|e| Err(fleet_error("adopting", &plugin, e)))
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_dir_all(&dir);
            match adopted {
                Ok(reload) => on_reload(reload),
                Err(e) => {
                    refused.insert(announcement.digest.clone());
                    device.metrics.channel_update(&plugin, "refused");
                    let what = format!("{} {} from the channel", announcement.plugin, announcement.version);
                    on_reload(Reload::Refused { dir: live_dir.clone(), error: fleet_error("adopting", &what, e) });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_fetched() {
        let dir = Path::new("/stage");
        assert_eq!(safe_join(dir, "models/m.onnx"), Some(PathBuf::from("/stage/models/m.onnx")));
        for bad in ["", "../x", "/etc/passwd", "a/../../x", "./a", "a\\..\\b"] {
            assert_eq!(safe_join(dir, bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_newer_channel_format_is_refused_by_name() {
        let text =
            br#"{"channel":2,"plugin":"p","version":"1","digest":"d","manifest":"p/1/plugin.toml","published":0}"#;
        let err = parse_announcement(text).unwrap_err().to_string();
        assert!(err.contains("channel format 2"), "{err}");
        let text = br#"{"channel":1,"plugin":"p","version":"1","digest":"d","manifest":"m","published":0,"new":1}"#;
        assert_eq!(parse_announcement(text).unwrap().version, "1", "unknown fields are ignored");
    }
}
