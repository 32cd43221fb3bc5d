//! Finding and reading the policy files of an apply — and, for the daemon, not reading them again:
//! a file whose `stat` stamp is unchanged keeps the bytes (and the parsed set) of the last apply,
//! and a file in a watched directory that the daemon's watches saw no event for is not even
//! `stat`ed (100 `stat` calls were a fifth of a 20-source change; see docs/BENCHMARKS.md).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::registries::RegistriesError;
use crate::core::mirrors::policy::{PolicySet, MAX_POLICY_BYTES};

/// A policy file's path and bytes; the bytes are shared with the daemon's cache.
pub(crate) type PolicyFile = (PathBuf, Arc<[u8]>);

/// More paths than this between two reconciles: the watches are not worth following one by one.
const MAX_SEEN_PATHS: usize = 4096;

/// What the daemon's file watches saw change since the policy files were last scanned. The
/// watches report every change in a watched directory (a write, a chmod, a file created, removed
/// or renamed); whatever they cannot describe path by path (an overflowed event queue, a watch
/// error, a watch set up anew) sets `everything`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenChanges {
    /// Scan everything: the paths below do not tell the whole story.
    pub everything: bool,
    /// Files (or directories) whose contents, metadata or name changed.
    pub files: HashSet<PathBuf>,
    /// Directories in which an entry was created, removed or renamed.
    pub dirs: HashSet<PathBuf>,
}

impl SeenChanges {
    /// "Anything may have changed": the next scan stats every file.
    pub fn everything() -> SeenChanges {
        SeenChanges {
            everything: true,
            ..SeenChanges::default()
        }
    }

    /// A write to (or chmod of) `path`.
    pub fn contents(&mut self, path: &Path) {
        self.files.insert(path.to_path_buf());
        self.bound();
    }

    /// `path` was created, removed or renamed: its directory's entries changed too.
    pub fn entry(&mut self, path: &Path) {
        self.files.insert(path.to_path_buf());
        if let Some(dir) = path.parent() {
            self.dirs.insert(dir.to_path_buf());
        }
        self.bound();
    }

    /// Everything `other` saw, added to what this saw.
    pub fn merge(&mut self, other: SeenChanges) {
        if other.everything {
            *self = SeenChanges::everything();
            return;
        }
        if !self.everything {
            self.files.extend(other.files);
            self.dirs.extend(other.dirs);
            self.bound();
        }
    }

    fn bound(&mut self) {
        if self.files.len() + self.dirs.len() > MAX_SEEN_PATHS {
            *self = SeenChanges::everything();
        }
    }
}

/// What `stat` says about a file's contents: any write changes its ctime, so an equal stamp means
/// the bytes read earlier are still the file's bytes — unless the file was changed within the
/// timestamp granularity of the read (the kernel's clock ticks in milliseconds): a file changed in
/// the last two seconds gets an untrusted stamp and is read again next time ("racy git").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    trusted: bool,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Stamp {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(i128::MAX);
        let nanos = |(s, ns): (i64, i64)| s as i128 * 1_000_000_000 + ns as i128;
        let (mtime, ctime) = (
            (meta.mtime(), meta.mtime_nsec()),
            (meta.ctime(), meta.ctime_nsec()),
        );
        let settled = now - 2_000_000_000;
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime,
            ctime,
            trusted: nanos(ctime) < settled && nanos(mtime) < settled,
        }
    }

    /// The bytes read with `self` may stand for a file that now has stamp `now`.
    pub(crate) fn still(&self, now: &Stamp) -> bool {
        self.trusted && self == now
    }
}

/// A policy file as the daemon's cache keeps it.
#[derive(Debug, Clone)]
pub(crate) struct CachedFile {
    pub path: PathBuf,
    pub bytes: Arc<[u8]>,
    /// The set parsed from this file alone.
    pub set: Arc<PolicySet>,
    pub stamp: Stamp,
    /// Reached through a symbolic link: a change of the link's target is not seen by the watch
    /// of the file's directory, so it is always `stat`ed.
    pub linked: bool,
}

/// One of the apply's `--policies` paths as it was scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScannedInput {
    path: PathBuf,
    /// (dev, ino) when the path is a directory itself (not a symbolic link to one): only then can
    /// the watches vouch for its listing.
    dir: Option<(u64, u64)>,
    /// How many policy files came from it.
    count: usize,
}

/// The policy files of one apply, in order, with what the cache keeps about them.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scan {
    pub files: Vec<PolicyFile>,
    pub stamps: Vec<Stamp>,
    pub linked: Vec<bool>,
    pub inputs: Vec<ScannedInput>,
}

impl Scan {
    /// The scanned files with the set parsed from each, as the cache keeps them.
    pub(crate) fn keep(self, sets: Vec<Arc<PolicySet>>) -> (Vec<CachedFile>, Vec<ScannedInput>) {
        let files = self
            .files
            .into_iter()
            .zip(self.stamps)
            .zip(self.linked)
            .zip(sets)
            .map(|((((path, bytes), stamp), linked), set)| CachedFile {
                path,
                bytes,
                set,
                stamp,
                linked,
            })
            .collect();
        (files, self.inputs)
    }
}

/// Finds a kept file by path. Usually the same file sits at the same position as last time (no
/// lookup); otherwise an index by the path's bytes is built once (comparing `Path`s goes component
/// by component).
pub(crate) struct KeptIndex<'a> {
    kept: &'a [CachedFile],
    index: Option<HashMap<&'a [u8], &'a CachedFile>>,
}

impl<'a> KeptIndex<'a> {
    pub(crate) fn new(kept: &'a [CachedFile]) -> KeptIndex<'a> {
        KeptIndex { kept, index: None }
    }

    /// The kept file for `path`, expected at position `i`.
    pub(crate) fn find(&mut self, i: usize, path: &Path) -> Option<&'a CachedFile> {
        match self.kept.get(i) {
            Some(f) if f.path.as_os_str() == path.as_os_str() => Some(f),
            _ => {
                let kept = self.kept;
                self.index
                    .get_or_insert_with(|| {
                        kept.iter()
                            .map(|f| (f.path.as_os_str().as_encoded_bytes(), f))
                            .collect()
                    })
                    .get(path.as_os_str().as_encoded_bytes())
                    .copied()
            }
        }
    }
}

fn invalid(p: &Path, e: std::io::Error) -> RegistriesError {
    RegistriesError::invalid(format!("{}: {e}", p.display()))
}

/// The policy files named by `paths` (directories expanded in lexical order of the file names,
/// `*.yaml|*.yml|*.json`, hidden files skipped), with their bytes.
///
/// `kept` and `kept_inputs` are the daemon's cache of the last scan: a file whose stamp is
/// unchanged takes its bytes from there. With `seen` (what the watches reported since that scan;
/// `None` = unknown), a directory whose entries did not change keeps its listing and only the
/// files the watches named (and those reached through symbolic links) are `stat`ed.
pub(crate) fn scan(
    paths: &[PathBuf],
    kept: &[CachedFile],
    kept_inputs: &[ScannedInput],
    seen: Option<&SeenChanges>,
) -> Result<Scan, RegistriesError> {
    let mut lookup = KeptIndex::new(kept);
    let mut out = Scan::default();
    // Where each kept input's files start in `kept`.
    let mut kept_start = Vec::with_capacity(kept_inputs.len());
    let mut at = 0;
    for ki in kept_inputs {
        kept_start.push(at);
        at += ki.count;
    }
    let listings_known = at == kept.len();
    for (k, p) in paths.iter().enumerate() {
        let before = out.files.len();
        let link = fs::symlink_metadata(p)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        let meta = fs::metadata(p).map_err(|e| invalid(p, e))?;
        let dir_id = (meta.is_dir() && !link).then(|| (meta.dev(), meta.ino()));
        // The watches vouch for this directory's listing: same directory, no entry created,
        // removed or renamed in it since the kept scan.
        let unchanged_listing = match (seen, kept_inputs.get(k)) {
            (Some(seen), Some(ki)) => {
                listings_known
                    && !seen.everything
                    && ki.path == *p
                    && dir_id.is_some()
                    && ki.dir == dir_id
                    && !seen.dirs.contains(p)
                    && !seen.files.contains(p)
            }
            _ => false,
        };
        if unchanged_listing {
            let seen = seen.expect("checked above");
            let start = kept_start[k];
            for f in &kept[start..start + kept_inputs[k].count] {
                if f.linked || seen.files.contains(&f.path) {
                    let meta = fs::metadata(&f.path).map_err(|e| invalid(&f.path, e))?;
                    read_one(&mut out, &mut lookup, f.path.clone(), &meta, f.linked)?;
                } else {
                    out.files.push((f.path.clone(), Arc::clone(&f.bytes)));
                    out.stamps.push(f.stamp);
                    out.linked.push(false);
                }
            }
        } else if meta.is_dir() {
            // (path, metadata, through a link): a directory entry's metadata comes from its
            // directory (no path walk per file); a symlink is followed, as a path given directly is.
            let mut v: Vec<(std::ffi::OsString, PathBuf, fs::Metadata, bool)> = Vec::new();
            for e in fs::read_dir(p).map_err(|e| invalid(p, e))?.flatten() {
                let name = e.file_name();
                let n = name.as_encoded_bytes();
                if n.starts_with(b".")
                    || !(n.ends_with(b".yaml") || n.ends_with(b".yml") || n.ends_with(b".json"))
                {
                    continue;
                }
                let path = e.path();
                let linked = !matches!(e.file_type(), Ok(t) if !t.is_symlink());
                let meta = if linked {
                    fs::metadata(&path)
                } else {
                    e.metadata()
                }
                .map_err(|err| invalid(&path, err))?;
                v.push((name, path, meta, linked));
            }
            // By name (kept from the directory entry: `Path::file_name` re-parses the path).
            v.sort_by(|a, b| a.0.cmp(&b.0));
            for (_, path, meta, linked) in v {
                read_one(&mut out, &mut lookup, path, &meta, linked)?;
            }
        } else {
            read_one(&mut out, &mut lookup, p.clone(), &meta, link)?;
        }
        out.inputs.push(ScannedInput {
            path: p.clone(),
            dir: dir_id,
            count: out.files.len() - before,
        });
    }
    Ok(out)
}

/// Check one policy file and add it to `out`: its kept bytes when its stamp is unchanged,
/// otherwise read from disk.
fn read_one(
    out: &mut Scan,
    lookup: &mut KeptIndex<'_>,
    path: PathBuf,
    meta: &fs::Metadata,
    linked: bool,
) -> Result<(), RegistriesError> {
    if !meta.is_file() {
        return Err(RegistriesError::invalid(format!(
            "{}: not a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX_POLICY_BYTES as u64 {
        return Err(RegistriesError::invalid(format!(
            "{}: {} bytes is larger than the {MAX_POLICY_BYTES} bytes a policy file may have",
            path.display(),
            meta.len()
        )));
    }
    let stamp = Stamp::of(meta);
    let bytes = match lookup
        .find(out.files.len(), &path)
        .filter(|f| f.stamp.still(&stamp))
    {
        Some(f) => Arc::clone(&f.bytes),
        None => Arc::from(fs::read(&path).map_err(|e| invalid(&path, e))?),
    };
    out.files.push((path, bytes));
    out.stamps.push(stamp);
    out.linked.push(linked);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(scan: Scan) -> (Vec<CachedFile>, Vec<ScannedInput>) {
        let sets = scan
            .files
            .iter()
            .map(|_| Arc::new(PolicySet::default()))
            .collect();
        scan.keep(sets)
    }

    fn bytes_of(scan: &Scan, name: &str) -> String {
        let (_, b) = scan
            .files
            .iter()
            .find(|(p, _)| p.file_name().unwrap() == name)
            .unwrap_or_else(|| panic!("{name} not scanned"));
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn names(scan: &Scan) -> Vec<String> {
        scan.files
            .iter()
            .map(|(p, _)| p.file_name().unwrap().to_string_lossy().to_string())
            .collect()
    }

    #[test]
    fn seen_changes_merge_and_give_up_on_too_many_paths() {
        let mut a = SeenChanges::default();
        a.contents(Path::new("/p/a.yaml"));
        let mut b = SeenChanges::default();
        b.entry(Path::new("/p/b.yaml"));
        a.merge(b);
        assert!(!a.everything);
        assert!(
            a.files.contains(Path::new("/p/a.yaml")) && a.files.contains(Path::new("/p/b.yaml"))
        );
        assert!(a.dirs.contains(Path::new("/p")) && a.dirs.len() == 1);
        a.merge(SeenChanges::everything());
        assert_eq!(a, SeenChanges::everything());
        // Nothing narrows "everything" again.
        let mut c = SeenChanges::default();
        c.contents(Path::new("/p/c.yaml"));
        a.merge(c);
        assert!(a.everything && a.files.is_empty());
        let mut many = SeenChanges::default();
        for i in 0..=MAX_SEEN_PATHS {
            many.contents(Path::new(&format!("/p/{i}.yaml")));
        }
        assert!(many.everything && many.files.is_empty());
    }

    #[test]
    fn only_the_files_the_watches_name_are_looked_at_in_an_unchanged_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("policies");
        fs::create_dir(&dir).unwrap();
        for n in ["a", "b", "c"] {
            fs::write(dir.join(format!("{n}.yaml")), format!("{n}0")).unwrap();
        }
        fs::write(dir.join("notes.txt"), "ignored").unwrap();
        let inputs = [dir.clone()];
        let first = scan(&inputs, &[], &[], None).unwrap();
        assert_eq!(names(&first), ["a.yaml", "b.yaml", "c.yaml"]);
        let (files, ins) = kept(first);

        // b is named, c changed behind the watches' back (same size): only b is read again.
        fs::write(dir.join("b.yaml"), "b1").unwrap();
        fs::write(dir.join("c.yaml"), "c1").unwrap();
        let mut seen = SeenChanges::default();
        seen.contents(&dir.join("b.yaml"));
        let hinted = scan(&inputs, &files, &ins, Some(&seen)).unwrap();
        assert_eq!(bytes_of(&hinted, "b.yaml"), "b1");
        assert_eq!(bytes_of(&hinted, "c.yaml"), "c0");
        assert!(Arc::ptr_eq(&hinted.files[0].1, &files[0].bytes));
        // Without the watches' word every file is looked at (c is recent: read again).
        let full = scan(&inputs, &files, &ins, None).unwrap();
        assert_eq!(bytes_of(&full, "c.yaml"), "c1");
        let all = scan(&inputs, &files, &ins, Some(&SeenChanges::everything())).unwrap();
        assert_eq!(bytes_of(&all, "c.yaml"), "c1");
    }

    #[test]
    fn a_directory_whose_entries_changed_or_that_was_replaced_is_listed_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("policies");
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("a.yaml"), "a0").unwrap();
        let inputs = [dir.clone()];
        let (files, ins) = kept(scan(&inputs, &[], &[], None).unwrap());

        fs::write(dir.join("d.yaml"), "d0").unwrap();
        let mut seen = SeenChanges::default();
        seen.entry(&dir.join("d.yaml"));
        let listed = scan(&inputs, &files, &ins, Some(&seen)).unwrap();
        assert_eq!(names(&listed), ["a.yaml", "d.yaml"]);
        // Not named by the watches: the kept listing stands.
        let unlisted = scan(&inputs, &files, &ins, Some(&SeenChanges::default())).unwrap();
        assert_eq!(names(&unlisted), ["a.yaml"]);

        // The directory itself replaced (another inode): listed again even with no event.
        let (files, ins) = kept(listed);
        fs::rename(&dir, tmp.path().join("old")).unwrap();
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("e.yaml"), "e0").unwrap();
        let replaced = scan(&inputs, &files, &ins, Some(&SeenChanges::default())).unwrap();
        assert_eq!(names(&replaced), ["e.yaml"]);
        // Another list of inputs: the kept listings do not apply.
        let other = [tmp.path().join("old")];
        let moved = scan(&other, &files, &ins, Some(&SeenChanges::default())).unwrap();
        assert_eq!(names(&moved), ["a.yaml", "d.yaml"]);
    }

    #[test]
    fn files_and_directories_behind_symbolic_links_are_always_looked_at() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("policies");
        let elsewhere = tmp.path().join("elsewhere");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("t.yaml"), "t0").unwrap();
        std::os::unix::fs::symlink(elsewhere.join("t.yaml"), dir.join("l.yaml")).unwrap();
        let linked_dir = tmp.path().join("linked-dir");
        std::os::unix::fs::symlink(&elsewhere, &linked_dir).unwrap();
        let inputs = [dir.clone(), linked_dir.clone()];
        let (files, ins) = kept(scan(&inputs, &[], &[], None).unwrap());
        assert_eq!(names_of(&files), ["l.yaml", "t.yaml"]);

        // The link's target changes (its directory is not the watched one); a file appears in
        // the linked directory: neither is named by the watches.
        fs::write(elsewhere.join("t.yaml"), "t1").unwrap();
        fs::write(elsewhere.join("u.yaml"), "u0").unwrap();
        let again = scan(&inputs, &files, &ins, Some(&SeenChanges::default())).unwrap();
        assert_eq!(names(&again), ["l.yaml", "t.yaml", "u.yaml"]);
        assert_eq!(bytes_of(&again, "l.yaml"), "t1");
    }

    fn names_of(files: &[CachedFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().to_string())
            .collect()
    }
}
