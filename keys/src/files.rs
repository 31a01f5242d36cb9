//! Secret files: written atomically (temp file, fsync, rename, fsync the directory) with
//! mode 0600 inside a 0700 directory, and refused on load if other users could read them.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::KeyError;

/// Creates `dir` (and parents) if needed and makes it 0700.
pub fn ensure_private_dir(dir: &Path) -> Result<(), KeyError> {
    fs::create_dir_all(dir).map_err(|e| KeyError::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| KeyError::io(dir, e))
}

/// Writes `bytes` to `path` atomically with `mode`: readers see the old file or the new one,
/// never half of either, and after return the new one survives a crash.
///
/// The temporary file has a name no other writer uses (`<name>.tmp.<pid>.<random>`, created
/// exclusively): a leftover from a process killed mid-write, even one that had the same PID
/// (PID 1 in every container), never blocks a later write. It is removed if the write fails.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let (tmp, mut f) = create_temp(path, mode).map_err(|e| KeyError::io(path, e))?;
    let result = (|| -> io::Result<()> {
        // create_new with mode is subject to the umask; set it exactly.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| KeyError::io(path, e))
}

/// Creates a new temporary file beside `path`, retrying on the (unlikely) name collision.
fn create_temp(path: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    let mut attempts = 0;
    loop {
        let tmp = temp_name(path);
        match OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => attempts += 1,
            Err(e) => return Err(e),
        }
    }
}

fn temp_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(
        ".tmp.{}.{:016x}",
        std::process::id(),
        rand_core::RngCore::next_u64(&mut rand_core::OsRng)
    ));
    path.with_file_name(name)
}

/// Reads a secret file, refusing it if group or others may read or write it. The buffer is
/// zeroized when dropped (and sized up front, so that reading does not leave copies behind in
/// memory it reallocated away from).
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut f = File::open(path).map_err(|e| KeyError::io(path, e))?;
    let meta = f.metadata().map_err(|e| KeyError::io(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions { path: path.to_owned(), mode });
    }
    // Key files are a few hundred bytes; the length is only a hint, capped.
    let hint = usize::try_from(meta.len()).unwrap_or(usize::MAX).min(SECRET_READ_HINT);
    let mut bytes = Zeroizing::new(Vec::with_capacity(hint + 1));
    f.read_to_end(&mut bytes).map_err(|e| KeyError::io(path, e))?;
    Ok(bytes)
}

/// The most a secret file's length may reserve up front.
const SECRET_READ_HINT: usize = 1 << 20;

/// Reads a public file.
pub fn read_public(path: &Path) -> Result<Vec<u8>, KeyError> {
    fs::read(path).map_err(|e| KeyError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_secret_files_are_0600_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        ensure_private_dir(&keys).unwrap();
        assert_eq!(fs::metadata(&keys).unwrap().permissions().mode() & 0o777, 0o700);
        let f = keys.join("secret.pem");
        write_atomic(&f, b"one", 0o600).unwrap();
        write_atomic(&f, b"two", 0o600).unwrap();
        assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_secret(&f).unwrap().as_slice(), b"two");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read_secret(&f), Err(KeyError::Permissions { mode: 0o644, .. })));
        // No temp files left behind.
        assert_eq!(fs::read_dir(&keys).unwrap().count(), 1);
    }

    /// A temporary file left by a process killed mid-write, under the name an earlier
    /// version would use now (the PID: PID 1 in every container), blocks nothing, and a
    /// failed write leaves no temporary file.
    #[test]
    fn a_leftover_temporary_file_does_not_block_a_write() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("signing.key.pem");
        let leftover = dir.path().join(format!("signing.key.pem.tmp.{}", std::process::id()));
        fs::write(&leftover, b"half a key").unwrap();
        write_atomic(&f, b"key", 0o600).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"key");
        assert_eq!(fs::read(&leftover).unwrap(), b"half a key", "someone else's file is left alone");

        // Renaming onto a directory fails: the temporary file is removed.
        let target = dir.path().join("a-directory");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("keep"), b"").unwrap();
        assert!(write_atomic(&target, b"x", 0o600).is_err());
        let mut names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["a-directory", "signing.key.pem", &format!("signing.key.pem.tmp.{}", std::process::id())]
        );
    }
}
