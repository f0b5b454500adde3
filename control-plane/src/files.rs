//! Secret files in the data directory: created with mode 0600 in directories of mode 0700,
//! written to a temporary name and renamed so a crash never leaves half a key.

use std::fs;
use std::io::Write as _;
use std::path::Path;

/// Creates `dir` (and parents) with mode 0700 where it is new.
pub fn ensure_private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        set_mode(dir, 0o700)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` with mode 0600, atomically.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            opts.mode(0o600);
        }
        let mut f = opts
            .open(&tmp)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    set_mode(&tmp, 0o600)?;
    fs::rename(&tmp, path).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(())
}

#[cfg(unix)]
fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| anyhow::anyhow!("cannot set permissions on {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn set_mode(_: &Path, _: u32) -> anyhow::Result<()> {
    Ok(())
}

/// Reads the JWT secret from `<data_dir>/jwt-secret`, creating a random one on first start.
pub fn load_or_create_jwt_secret(data_dir: &Path) -> anyhow::Result<Vec<u8>> {
    let path = data_dir.join("jwt-secret");
    if path.exists() {
        let bytes =
            fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
        if bytes.len() < 32 {
            anyhow::bail!("{} is shorter than 32 bytes", path.display());
        }
        return Ok(bytes);
    }
    let mut secret = [0u8; 48];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let text = hex::encode(secret);
    write_secret(&path, text.as_bytes())?;
    Ok(text.into_bytes())
}
