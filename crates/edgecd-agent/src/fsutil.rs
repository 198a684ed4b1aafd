//! Crash-safe file operations: atomic writes (temp file, fsync, rename, fsync dir), the
//! `current` symlink switched with rename(2), and syncing an unpacked slot.

use std::io::Write;
use std::path::{Path, PathBuf};

/// fsyncs a directory so a rename or create inside it is durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn tmp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` atomically (mode `mode`): temp file, fsync, rename, fsync dir.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tmp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Points the symlink `link` at `target` (a relative path) atomically, or removes it.
pub fn switch_symlink(link: &Path, target: Option<&Path>) -> std::io::Result<()> {
    let dir = link.parent().unwrap_or(Path::new("."));
    match target {
        Some(t) => {
            if std::fs::read_link(link).ok().as_deref() == Some(t) {
                return Ok(());
            }
            let tmp = tmp_path(link);
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(t, &tmp)?;
            std::fs::rename(&tmp, link)?;
        }
        None => match std::fs::remove_file(link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        },
    }
    sync_dir(dir)
}

/// fsyncs every file and directory under `dir` (after unpacking a slot).
pub fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            sync_tree(&e.path())?;
        } else if ft.is_file() {
            std::fs::File::open(e.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

/// Removes a directory tree if it exists.
pub fn remove_dir_if_exists(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_and_symlink_switch() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("state.json");
        write_atomic(&f, b"one", 0o600).expect("write");
        write_atomic(&f, b"two", 0o600).expect("write");
        assert_eq!(std::fs::read(&f).expect("read"), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&f).expect("meta").permissions().mode() & 0o777,
            0o600
        );
        let link = d.path().join("current");
        switch_symlink(&link, Some(Path::new("slots/a"))).expect("switch");
        switch_symlink(&link, Some(Path::new("slots/b"))).expect("switch");
        assert_eq!(
            std::fs::read_link(&link).expect("link"),
            Path::new("slots/b")
        );
        switch_symlink(&link, None).expect("remove");
        assert!(std::fs::symlink_metadata(&link).is_err());
        assert_eq!(
            std::fs::read_dir(d.path()).expect("ls").count(),
            1,
            "no temp files left"
        );
    }
}
