//! File helpers every layer uses: hashing and atomic replacement.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::path::Path;

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Writes via a temporary file in the same directory, `fsync` and a rename,
/// so readers never see half a file and a crash leaves the old one or the new one.
/// The file gets the mode a plain `File::create` would give it (0666 less the
/// umask), not the temporary file's 0600: a package is read by other users,
/// such as the service account a host runs as. Private files live in private
/// directories (the module cache is 0700).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}
