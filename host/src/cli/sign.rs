//! `edgecascade keygen`, `sign` and `verify`: signed plugin packages.

use super::Global;
use std::path::PathBuf;
use std::process::ExitCode;

/// Make an ed25519 key pair: KEY (secret, keep it safe) and KEY.pub (give it to hosts).
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgecascade keygen --out release.key   # writes release.key and release.key.pub")]
pub struct KeygenArgs {
    /// Where to write the secret key; the public key goes to the same path plus `.pub`.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// Sign a package in place, after checking its hashes.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgecascade sign --key release.key target/plugins/news-topic")]
pub struct SignArgs {
    /// The secret key from `edgecascade keygen`.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,

    /// The package directory.
    plugin: PathBuf,
}

/// Check a package's hashes and, with --trust, its signature.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  edgecascade verify --trust release.key.pub target/plugins/news-topic")]
pub struct VerifyArgs {
    /// The package directory.
    plugin: PathBuf,
}

pub fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(!args.out.exists(), "{} exists; refusing to overwrite a key", args.out.display());
    let (secret, public) = edgecascade::plugin::keygen()?;
    let public_path = PathBuf::from(format!("{}.pub", args.out.display()));
    write_secret(&args.out, &secret)?;
    std::fs::write(&public_path, format!("{public}\n"))?;
    eprintln!("wrote {} (secret) and {} (public: {public})", args.out.display(), public_path.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(unix)]
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    writeln!(f, "{secret}")
}

#[cfg(not(unix))]
fn write_secret(path: &std::path::Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{secret}\n"))
}

pub fn sign(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let key = edgecascade::plugin::signing_key(&args.key)?;
    let manifest = edgecascade::plugin::sign(&args.plugin, &key)?;
    let signer = manifest.signature.map(|s| s.key).unwrap_or_default();
    eprintln!("signed {} {} with {signer}", manifest.plugin.name, manifest.plugin.version);
    Ok(ExitCode::SUCCESS)
}

pub fn verify(global: &Global, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let trust = global.trust_policy()?;
    let package = edgecascade::Package::open(&args.plugin)?.verify_with(&trust)?;
    let m = package.manifest();
    let how = if trust.requires_signature() {
        "hashes and signature OK"
    } else {
        "hashes OK (no --trust: signature not checked)"
    };
    println!("{} {}: {how}", m.plugin.name, m.plugin.version);
    Ok(ExitCode::SUCCESS)
}
