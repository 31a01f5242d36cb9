//! The token's user PIN: from a file of mode 0600 (checked, refused otherwise, naming the
//! mode) or from the environment variable `KPNODE_PKCS11_PIN`; never from the command line
//! (where `ps` shows it) or `node.toml` (which is readable by all).

use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The PIN in memory: zeroized when dropped (each copy), never printed.
#[derive(Clone)]
pub struct Pin(Zeroizing<String>);

impl Pin {
    fn new(s: String) -> Pin {
        Pin(Zeroizing::new(s))
    }

    /// For `C_Login` only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(…)")
    }
}

/// The environment variable read when no PIN file is configured.
pub const PIN_ENV: &str = "KPNODE_PKCS11_PIN";

/// Why the PIN could not be read.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PinError {
    #[error("{}: {detail}", path.display())]
    File { path: PathBuf, detail: String },
    #[error(
        "{} is readable or writable by other users (mode {mode:04o}); a PIN file must be mode 0600: run `chmod 600 {}`",
        path.display(),
        path.display()
    )]
    Mode { path: PathBuf, mode: u32 },
    #[error("{} belongs to user id {owner}, not to the account the node runs as (user id {uid}); a PIN file must be the node's own: run `chown` on it", path.display())]
    Owner { path: PathBuf, owner: u32, uid: u32 },
    #[error("{} is empty; write the token's user PIN in it", path.display())]
    EmptyFile { path: PathBuf },
    #[error("no PIN for the PKCS#11 token: give --pkcs11-pin-file FILE (mode 0600; pkcs11.pin_file in node.toml) or set {PIN_ENV}")]
    Missing,
}

/// Reads the PIN from `file`, or else from `KPNODE_PKCS11_PIN`.
pub fn read(file: Option<&Path>) -> Result<Pin, PinError> {
    match file {
        Some(path) => read_file(path),
        None => {
            // Taken out of the environment at the first read, so that no child process
            // inherits it and it does not stay in the environment block; kept here (zeroized
            // when replaced) for the later reads of this process. The kernel's
            // copy of the initial environment, /proc/PID/environ, stays readable by the
            // node's own account and root.
            static FROM_ENV: std::sync::Mutex<Option<Zeroizing<String>>> = std::sync::Mutex::new(None);
            let mut kept = FROM_ENV.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(v) = std::env::var(PIN_ENV) {
                *kept = Some(Zeroizing::new(v));
                std::env::remove_var(PIN_ENV);
            }
            match kept.as_deref() {
                Some(v) if !v.is_empty() => Ok(Pin::new(v.to_owned())),
                _ => Err(PinError::Missing),
            }
        }
    }
}

fn read_file(path: &Path) -> Result<Pin, PinError> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let fail = |detail: String| PinError::File { path: path.to_owned(), detail };
    // Opened once, not following a symlink (O_NOFOLLOW) nor waiting on a FIFO (O_NONBLOCK),
    // and every check made on that descriptor (fstat): no one can swap the file between the
    // check and the read.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => fail("is a symbolic link; name the PIN file itself".into()),
            _ => fail(e.to_string()),
        })?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(PinError::Mode { path: path.to_owned(), mode });
    }
    let uid = crate::os::effective_uid();
    if meta.uid() != uid {
        return Err(PinError::Owner { path: path.to_owned(), owner: meta.uid(), uid });
    }
    // A PIN is a few dozen bytes; a larger file is not a PIN file.
    if meta.len() > 4096 {
        return Err(fail(format!("is {} bytes long; a PIN file holds only the PIN", meta.len())));
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(4097));
    (&mut file).take(4097).read_to_end(&mut bytes).map_err(|e| fail(e.to_string()))?;
    if bytes.len() > 4096 {
        return Err(fail("grew past 4096 bytes while read; a PIN file holds only the PIN".into()));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("is not UTF-8 text".into()))?;
    let pin = text.trim_end_matches(['\n', '\r']);
    if pin.is_empty() {
        return Err(PinError::EmptyFile { path: path.to_owned() });
    }
    Ok(Pin::new(pin.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_pin_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "1234\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(Some(&path)).unwrap_err();
        assert_eq!(e, PinError::Mode { path: path.clone(), mode: 0o644 });
        assert!(e.to_string().contains("mode 0644"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let pin = read(Some(&path)).unwrap();
        assert_eq!(pin.expose(), "1234");
        assert_eq!(format!("{pin:?}"), "Pin(…)");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(read(Some(&path)), Err(PinError::EmptyFile { .. })));
        let link = dir.path().join("link");
        std::fs::write(&path, "1234\n").unwrap();
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let e = read(Some(&link)).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let missing = dir.path().join("nope");
        assert!(read(Some(&missing)).unwrap_err().to_string().contains("nope"));
    }
}
