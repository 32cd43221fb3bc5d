//! Durable file replacement, backups and the lock shared by the CLI and the daemon.
//!
//! A half-written registries.conf breaks every image pull on the node, so every write goes through
//! [`atomic_replace`]: temp file in the same directory, fsync, the old file's mode, owner and SELinux
//! label, rename over the target, fsync of the directory. The previous version is kept as a hard link
//! in the backup directory (no copy, no window where it does not exist).

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

/// The SELinux label attribute that must survive a replace (CRI-O only reads files it may read).
const SELINUX_XATTR: &str = "security.selinux";
/// Marker in the names of our temporary files, so a crash's leftovers can be recognised.
const TMP_MARK: &str = ".rna-tmp.";

/// File-layer errors, each naming the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O operation failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// What was being done (`write`, `rename`, …).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// Another process holds the lock and we were asked not to wait.
    #[error("{path}: locked by another rhel-node-agent process")]
    Locked {
        /// The lock file.
        path: String,
    },
    /// A requested backup does not exist.
    #[error("{0}")]
    NoBackup(String),
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        path: path.display().to_string(),
        op,
        source,
    }
}

/// Resolve symlinks so the file they point to is replaced, not the link.
pub fn resolve_target(path: &Path) -> Result<PathBuf, FsError> {
    match fs::canonicalize(path) {
        Ok(p) => Ok(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A dangling symlink: follow it by hand; a missing plain file is created where asked.
            match fs::read_link(path) {
                Ok(t) => Ok(if t.is_absolute() {
                    t
                } else {
                    path.parent().unwrap_or(Path::new("/")).join(t)
                }),
                Err(_) => Ok(path.to_path_buf()),
            }
        }
        Err(e) => Err(io_err(path, "resolve")(e)),
    }
}

/// Read a file that may not exist (`None`).
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, FsError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path, "read")(e)),
    }
}

/// Remove temporary files a crashed writer left next to `target` (we hold the lock, so none is live).
pub fn remove_stale_temps(target: &Path) {
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return;
    };
    let prefix = format!(".{}{TMP_MARK}", name.to_string_lossy());
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// Options for [`atomic_replace`].
#[derive(Debug, Clone, Default)]
pub struct ReplaceOptions {
    /// Hard-link the old version into this directory first (`None` = no backup).
    pub backup_dir: Option<PathBuf>,
    /// How many backups of this file to keep.
    pub keep_backups: u32,
}

/// Replace `path` with `contents` atomically and durably. Returns the backup made, if any.
pub fn atomic_replace(
    path: &Path,
    contents: &[u8],
    opts: &ReplaceOptions,
) -> Result<Option<PathBuf>, FsError> {
    let target = resolve_target(path)?;
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = target
        .file_name()
        .unwrap_or(OsStr::new("file"))
        .to_string_lossy()
        .to_string();
    let old_meta = match fs::metadata(&target) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&target, "stat")(e)),
    };
    let label = if old_meta.is_some() {
        xattr::get(&target, SELINUX_XATTR).ok().flatten()
    } else {
        None
    };
    remove_stale_temps(&target);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}{TMP_MARK}"))
        .tempfile_in(&dir)
        .map_err(io_err(&dir, "create temporary file"))?;
    let tmp_path = tmp.path().to_path_buf();
    tmp.as_file_mut()
        .write_all(contents)
        .map_err(io_err(&tmp_path, "write"))?;
    let mode = old_meta
        .as_ref()
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or(0o644);
    if let Some(m) = &old_meta {
        let (uid, gid) = (m.uid(), m.gid());
        let cur = tmp
            .as_file()
            .metadata()
            .map_err(io_err(&tmp_path, "stat"))?;
        if cur.uid() != uid || cur.gid() != gid {
            std::os::unix::fs::fchown(tmp.as_file(), Some(uid), Some(gid))
                .map_err(io_err(&tmp_path, "chown"))?;
        }
    }
    // After the chown: changing the owner clears setuid/setgid bits.
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err(&tmp_path, "chmod"))?;
    if let Some(label) = &label {
        xattr::set(&tmp_path, SELINUX_XATTR, label)
            .map_err(io_err(&tmp_path, "set SELinux label"))?;
    }
    tmp.as_file()
        .sync_all()
        .map_err(io_err(&tmp_path, "fsync"))?;
    let backup = match (&opts.backup_dir, &old_meta) {
        (Some(bdir), Some(_)) => Some(make_backup(
            &target,
            bdir,
            &backup_key(&target),
            opts.keep_backups,
        )?),
        _ => None,
    };
    tmp.persist(&target).map_err(|e| FsError::Io {
        path: target.display().to_string(),
        op: "rename",
        source: e.error,
    })?;
    // One directory fsync, as a bare replace has. The backup's link needs no fsync of its own:
    // on the journalling filesystems RHEL uses (XFS, ext4) this fsync commits the log up to and
    // including the earlier link, and a backup lost in a crash on another filesystem never
    // affects the file itself (a third fsync cost as much as the rest of an incremental apply).
    fsync_dir(&dir)?;
    Ok(backup)
}

/// True when `path` is a regular file whose bytes are exactly `expected`, compared as it is read
/// (no buffer the size of the file): how the daemon checks that registries.conf is still the
/// text it last wrote.
pub fn file_equals(path: &Path, expected: &[u8]) -> io::Result<bool> {
    use std::io::Read;
    let mut f = File::open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() != expected.len() as u64 {
        return Ok(false);
    }
    let mut buf = vec![0u8; 64 * 1024];
    let mut at = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(at == expected.len());
        }
        if at + n > expected.len() || buf[..n] != expected[at..at + n] {
            return Ok(false);
        }
        at += n;
    }
}

/// fsync a directory so a rename in it is durable.
pub fn fsync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "fsync directory"))
}

fn make_backup(target: &Path, bdir: &Path, name: &str, keep: u32) -> Result<PathBuf, FsError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut n = 0;
    let mut created = false;
    // Try the link first: the directory and a free name are the common case, so no separate
    // mkdir or stat is paid for them.
    let dest = loop {
        let dest = bdir.join(if n == 0 {
            format!("{name}.{}.{:09}", now.as_secs(), now.subsec_nanos())
        } else {
            format!("{name}.{}.{:09}-{n}", now.as_secs(), now.subsec_nanos())
        });
        match fs::hard_link(target, &dest) {
            Ok(()) => break dest,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => n += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound && !created => {
                fs::create_dir_all(bdir).map_err(io_err(bdir, "create backup directory"))?;
                created = true;
            }
            // Different filesystems (or a filesystem without hard links): copy instead.
            Err(_) => {
                fs::copy(target, &dest).map_err(io_err(&dest, "copy backup"))?;
                File::open(&dest)
                    .and_then(|f| f.sync_all())
                    .map_err(io_err(&dest, "fsync backup"))?;
                break dest;
            }
        }
    };
    prune_backups(bdir, name, keep)?;
    Ok(dest)
}

/// The name prefix of `target`'s backups: its file name and a digest of its full path, so two
/// files with the same name (e.g. two registries.conf under different roots) never share backups.
pub fn backup_key(target: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(target.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    format!("{name}-{hex}")
}

/// Backups with key `name` (see [`backup_key`]) in `bdir`, newest first.
pub fn list_backups(bdir: &Path, name: &str) -> Result<Vec<PathBuf>, FsError> {
    let entries = match fs::read_dir(bdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(io_err(bdir, "list backups")(e)),
    };
    let prefix = format!("{name}.");
    let mut list: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            let stamp = n.strip_prefix(&prefix)?.to_string();
            stamp
                .starts_with(|c: char| c.is_ascii_digit())
                .then(|| (stamp, e.path()))
        })
        .collect();
    // Stamps are "<secs>.<nanos>[-n]": sort numerically by (secs, nanos, n).
    list.sort_by_key(|(s, _)| {
        let mut parts = s.splitn(2, '.');
        let secs: u64 = parts.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let rest = parts.next().unwrap_or("");
        let mut r = rest.splitn(2, '-');
        let nanos: u64 = r.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        let seq: u64 = r.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        std::cmp::Reverse((secs, nanos, seq))
    });
    Ok(list.into_iter().map(|(_, p)| p).collect())
}

fn prune_backups(bdir: &Path, name: &str, keep: u32) -> Result<(), FsError> {
    for old in list_backups(bdir, name)?.into_iter().skip(keep as usize) {
        fs::remove_file(&old).map_err(io_err(&old, "remove old backup"))?;
    }
    Ok(())
}

/// An exclusive advisory lock held for as long as this value lives.
#[derive(Debug)]
pub struct FileLock {
    _lock: Flock<File>,
    /// The lock file.
    pub path: PathBuf,
}

/// Take the lock at `path` (created if needed). With `wait = false`, fail at once when it is held.
pub fn lock(path: &Path, wait: bool) -> Result<FileLock, FsError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_err(dir, "create lock directory"))?;
    }
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path, "open lock"))?;
    let arg = if wait {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockExclusiveNonblock
    };
    match Flock::lock(f, arg) {
        Ok(l) => Ok(FileLock {
            _lock: l,
            path: path.to_path_buf(),
        }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(FsError::Locked {
            path: path.display().to_string(),
        }),
        Err((_, e)) => Err(FsError::Io {
            path: path.display().to_string(),
            op: "flock",
            source: io::Error::from(e),
        }),
    }
}

/// Is the lock at `path` held by a live process right now? (A probe: takes and drops it.)
pub fn is_locked(path: &Path) -> bool {
    let Ok(f) = OpenOptions::new().read(true).open(path) else {
        return false;
    };
    matches!(
        Flock::lock(f, FlockArg::LockSharedNonblock),
        Err((_, nix::errno::Errno::EWOULDBLOCK))
    )
}

/// The lock file guarding writes to `target`: one per target, in the state directory, shared by the
/// CLI and the daemon.
pub fn lock_path_for(state_dir: &Path, target: &Path) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(target.as_os_str().as_encoded_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    state_dir.join("locks").join(format!("{name}-{hex}.lock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_mode_makes_backups_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("registries.conf");
        fs::write(&f, "old\n").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
        let b = d.path().join("backup");
        let opts = ReplaceOptions {
            backup_dir: Some(b.clone()),
            keep_backups: 2,
        };
        for i in 0..4 {
            atomic_replace(&f, format!("v{i}\n").as_bytes(), &opts).unwrap();
        }
        assert_eq!(fs::read_to_string(&f).unwrap(), "v3\n");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o640
        );
        let backups = list_backups(&b, &backup_key(&fs::canonicalize(&f).unwrap())).unwrap();
        assert_eq!(backups.len(), 2);
        assert_eq!(fs::read_to_string(&backups[0]).unwrap(), "v2\n");
        assert_eq!(fs::read_to_string(&backups[1]).unwrap(), "v1\n");
        let leftovers: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains(TMP_MARK))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn symlinked_target_is_replaced_through_the_link() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real.conf");
        let link = d.path().join("registries.conf");
        fs::write(&real, "old").unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        atomic_replace(&link, b"new", &ReplaceOptions::default()).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read_to_string(&real).unwrap(), "new");
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("l.lock");
        let held = lock(&p, false).unwrap();
        assert!(is_locked(&p));
        assert!(matches!(lock(&p, false), Err(FsError::Locked { .. })));
        drop(held);
        assert!(!is_locked(&p));
    }
}
