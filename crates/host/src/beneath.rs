//! A directory that nothing escapes: every path is resolved beneath it by
//! file descriptor with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_XDEV)`, so a symlink, a `..` or a mount planted inside it
//! cannot make a read or a write land anywhere else.
//!
//! Used for everything on a backup slot (whose contents anyone with the disk
//! can change) and for restore targets. Reads of metadata files are bounded:
//! only regular files, never more than a cap, opened non-blocking so that a
//! FIFO planted in a file's place cannot hang the reader.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};

const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_XDEV).union(ResolveFlags::NO_MAGICLINKS);
/// For a tree crossback mounted itself (a restore target): mounts in it are
/// crossed, symlinks and `..` still are not.
const RESOLVE_MOUNTS: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_SYMLINKS).union(ResolveFlags::NO_MAGICLINKS);

/// What a directory entry is, without following it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Other,
}

/// An open directory; every operation stays beneath it.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    /// How the directory is shown in messages.
    shown: PathBuf,
    /// Mounts beneath it may be crossed.
    mounts: bool,
}

fn io_err(what: impl FnOnce() -> String) -> impl FnOnce(Errno) -> Error {
    move |e| Error::Io { what: what(), source: e.into() }
}

fn cname(name: &OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| Error::Refused(format!("{:?}: a name with a NUL byte", name)))
}

/// A single path component: no `/`, not `.` or `..`, not empty.
fn component(name: &str) -> Result<CString> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Error::Refused(format!("{name:?} is not a plain file name")));
    }
    cname(OsStr::new(name))
}

impl Dir {
    /// Opens `path` itself (which must be a directory; a symlink is refused).
    pub fn open(path: &Path) -> Result<Dir> {
        let c = cname(path.as_os_str())?;
        let fd = rustix::fs::open(c.as_c_str(), OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(io_err(|| format!("opening {}", path.display())))?;
        Ok(Dir { fd, shown: path.to_path_buf(), mounts: false })
    }

    /// As [`Dir::open`], for a tree whose mounts crossback made itself (a
    /// restore target, a user's target directory): paths may cross into
    /// filesystems mounted beneath it, never through symlinks or `..`.
    pub fn open_crossing_mounts(path: &Path) -> Result<Dir> {
        Ok(Dir { mounts: true, ..Dir::open(path)? })
    }

    fn resolve(&self) -> ResolveFlags {
        if self.mounts {
            RESOLVE_MOUNTS
        } else {
            RESOLVE
        }
    }

    /// How this directory is named in messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// A path that names this very directory for APIs that take paths
    /// (it resolves through the open descriptor, not through names).
    pub fn fd_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.shown.join(rel)
    }

    fn open_rel(&self, rel: &str, flags: OFlags, mode: Mode) -> Result<OwnedFd> {
        let c = cname(OsStr::new(rel))?;
        rustix::fs::openat2(self.fd.as_fd(), c.as_c_str(), flags | OFlags::CLOEXEC | OFlags::NOFOLLOW, mode, self.resolve())
            .map_err(|e| self.refusal_or_io(rel, e))
    }

    fn refusal_or_io(&self, rel: &str, e: Errno) -> Error {
        match e {
            Errno::XDEV | Errno::LOOP | Errno::NOTDIR if !rel.is_empty() => Error::Refused(format!(
                "{} is not a plain path beneath {} (a symlink, another filesystem or a non-directory in the way): refused, nothing followed",
                self.at(rel).display(),
                self.shown.display()
            )),
            e => Error::Io { what: format!("opening {}", self.at(rel).display()), source: e.into() },
        }
    }

    /// The directory `rel` (one or more components) beneath this one.
    pub fn dir(&self, rel: &str) -> Result<Dir> {
        let fd = self.open_rel(rel, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty())?;
        Ok(Dir { fd, shown: self.at(rel), mounts: self.mounts })
    }

    /// Whether `name` exists here, and as what (not following it).
    pub fn kind(&self, name: &str) -> Result<Option<Kind>> {
        let c = component(name)?;
        match rustix::fs::statat(self.fd.as_fd(), c.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(kind_of(FileType::from_raw_mode(st.st_mode)))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err(|| format!("looking at {}", self.at(name).display()))(e)),
        }
    }

    /// The directory's entries (without `.` and `..`), sorted by name.
    pub fn entries(&self) -> Result<Vec<(OsString, Kind)>> {
        let fd = rustix::fs::openat(self.fd.as_fd(), c".", OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(io_err(|| format!("listing {}", self.shown.display())))?;
        let d = rustix::fs::Dir::read_from(&fd).map_err(io_err(|| format!("listing {}", self.shown.display())))?;
        let mut out = Vec::new();
        for e in d {
            let e = e.map_err(io_err(|| format!("listing {}", self.shown.display())))?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            let name = OsString::from_vec(n.to_vec());
            let kind = match e.file_type() {
                FileType::Unknown => {
                    let st = rustix::fs::statat(self.fd.as_fd(), e.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(io_err(|| format!("looking at {}", self.shown.display())))?;
                    kind_of(FileType::from_raw_mode(st.st_mode))
                }
                t => kind_of(t),
            };
            out.push((name, kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// A regular file's bytes, at most `cap` of them: a FIFO, a device, a
    /// directory, a symlink or a larger file is refused, and nothing blocks.
    pub fn read_capped(&self, rel: &str, cap: u64) -> Result<Vec<u8>> {
        let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let st = rustix::fs::fstat(&fd).map_err(io_err(|| format!("looking at {}", self.at(rel).display())))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::Refused(format!("{} is not a regular file", self.at(rel).display())));
        }
        if st.st_size as u64 > cap {
            return Err(Error::Refused(format!("{} is {} bytes, more than the {cap} such a file may have", self.at(rel).display(), st.st_size)));
        }
        let mut buf = Vec::with_capacity(st.st_size as usize);
        // The size may change under us: never read more than the cap.
        File::from(fd).take(cap + 1).read_to_end(&mut buf).map_err(|e| Error::Io { what: format!("reading {}", self.at(rel).display()), source: e })?;
        if buf.len() as u64 > cap {
            return Err(Error::Refused(format!("{} grew past the {cap} bytes such a file may have", self.at(rel).display())));
        }
        Ok(buf)
    }

    /// Opens a regular file for reading.
    pub fn open_file(&self, rel: &str) -> Result<File> {
        let fd = self.open_rel(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let st = rustix::fs::fstat(&fd).map_err(io_err(|| format!("looking at {}", self.at(rel).display())))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::Refused(format!("{} is not a regular file", self.at(rel).display())));
        }
        // Back to blocking reads for the file itself.
        rustix::fs::fcntl_setfl(&fd, OFlags::RDONLY).map_err(io_err(|| format!("opening {}", self.at(rel).display())))?;
        Ok(File::from(fd))
    }

    /// Creates a new file `name` (a plain name here) for writing, readable
    /// by its owner only (mode 0600); whatever had that name (a planted
    /// symlink, say) is removed first, not followed.
    pub fn create_file(&self, name: &str) -> Result<File> {
        self.create_file_mode(name, 0o600)
    }

    /// [`Dir::create_file`] with the given mode (before the umask).
    pub fn create_file_mode(&self, name: &str, mode: u32) -> Result<File> {
        self.remove_entry(name)?;
        let c = component(name)?;
        let fd = rustix::fs::openat(
            self.fd.as_fd(),
            c.as_c_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(io_err(|| format!("creating {}", self.at(name).display())))?;
        Ok(File::from(fd))
    }

    /// Writes `name` so that a crash leaves the old or the new version:
    /// a new file, fsynced, renamed over the old one, the directory fsynced.
    /// The file is its owner's only (0600): what crossback keeps is root's.
    pub fn write_durable(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_durable_mode(name, bytes, 0o600)
    }

    /// [`Dir::write_durable`] with the given mode (set exactly, whatever
    /// the umask: a restored file keeps the mode it had).
    pub fn write_durable_mode(&self, name: &str, bytes: &[u8], mode: u32) -> Result<()> {
        let tmp = format!("{name}.new");
        let mut f = self.create_file_mode(&tmp, mode)?;
        rustix::fs::fchmod(&f, Mode::from_raw_mode(mode)).map_err(io_err(|| format!("setting the mode of {}", self.at(&tmp).display())))?;
        f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| Error::Io { what: format!("writing {}", self.at(&tmp).display()), source: e })?;
        drop(f);
        self.rename(&tmp, name)?;
        self.sync()
    }

    /// Creates the directory `name` here (an existing directory is fine).
    pub fn create_dir(&self, name: &str) -> Result<Dir> {
        self.create_dir_mode(name, 0o755)
    }

    /// Creates the directory `name` for its owner only, and makes an
    /// existing one so (0700): a slot's `crossback/` and its generations.
    pub fn create_private_dir(&self, name: &str) -> Result<Dir> {
        let d = self.create_dir_mode(name, 0o700)?;
        d.make_private()?;
        Ok(d)
    }

    /// This directory, for its owner only (0700).
    pub fn make_private(&self) -> Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(0o700)).map_err(io_err(|| format!("setting the mode of {}", self.shown.display())))
    }

    fn create_dir_mode(&self, name: &str, mode: u32) -> Result<Dir> {
        let c = component(name)?;
        match rustix::fs::mkdirat(self.fd.as_fd(), c.as_c_str(), Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(io_err(|| format!("creating {}", self.at(name).display()))(e)),
        }
        self.dir(name)
    }

    /// Creates every directory of `rel` (components separated by `/`),
    /// refusing anything that is not a plain directory on the way.
    pub fn create_dirs(&self, rel: &str) -> Result<Dir> {
        let mut cur = Dir {
            fd: self.fd.try_clone().map_err(|e| Error::Io { what: "duplicating a descriptor".into(), source: e })?,
            shown: self.shown.clone(),
            mounts: self.mounts,
        };
        for part in rel.split('/').filter(|p| !p.is_empty()) {
            cur = cur.create_dir(part)?;
        }
        Ok(cur)
    }

    /// Renames `from` to `to`, both plain names in this directory.
    pub fn rename(&self, from: &str, to: &str) -> Result<()> {
        let (f, t) = (component(from)?, component(to)?);
        rustix::fs::renameat(self.fd.as_fd(), f.as_c_str(), self.fd.as_fd(), t.as_c_str())
            .map_err(io_err(|| format!("renaming {} to {}", self.at(from).display(), to)))
    }

    /// fsync of the directory itself.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).map_err(io_err(|| format!("syncing {}", self.shown.display())))
    }

    /// Removes `name` whatever it is (a directory with everything in it, on
    /// this filesystem only); nothing is followed. Absent is fine.
    pub fn remove_entry(&self, name: &str) -> Result<()> {
        let c = component(name)?;
        match self.kind(name)? {
            None => Ok(()),
            Some(Kind::Dir) => {
                let sub = self.dir(name)?;
                sub.remove_contents()?;
                rustix::fs::unlinkat(self.fd.as_fd(), c.as_c_str(), AtFlags::REMOVEDIR).map_err(io_err(|| format!("removing {}", self.at(name).display())))
            }
            Some(_) => {
                rustix::fs::unlinkat(self.fd.as_fd(), c.as_c_str(), AtFlags::empty()).map_err(io_err(|| format!("removing {}", self.at(name).display())))
            }
        }
    }

    /// Removes everything inside this directory.
    pub(crate) fn remove_contents(&self) -> Result<()> {
        for (name, _) in self.entries()? {
            let n = name.to_str().map(str::to_string);
            match n {
                Some(n) => self.remove_entry(&n)?,
                // A name that is not UTF-8: removed by its bytes.
                None => self.remove_raw(&name)?,
            }
        }
        Ok(())
    }

    fn remove_raw(&self, name: &OsStr) -> Result<()> {
        let c = cname(name)?;
        let st =
            rustix::fs::statat(self.fd.as_fd(), c.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).map_err(io_err(|| format!("looking at {}", self.shown.display())))?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            let fd = rustix::fs::openat2(
                self.fd.as_fd(),
                c.as_c_str(),
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
                self.resolve(),
            )
            .map_err(|e| self.refusal_or_io(&name.to_string_lossy(), e))?;
            Dir { fd, shown: self.shown.join(name), mounts: self.mounts }.remove_contents()?;
            return rustix::fs::unlinkat(self.fd.as_fd(), c.as_c_str(), AtFlags::REMOVEDIR).map_err(io_err(|| format!("removing in {}", self.shown.display())));
        }
        rustix::fs::unlinkat(self.fd.as_fd(), c.as_c_str(), AtFlags::empty()).map_err(io_err(|| format!("removing in {}", self.shown.display())))
    }
}

fn kind_of(t: FileType) -> Kind {
    match t {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => Kind::File,
        FileType::Symlink => Kind::Symlink,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_and_dotdot_are_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), t.path().join("file.new")).unwrap();
        let d = Dir::open(t.path()).unwrap();
        assert!(matches!(d.dir("link"), Err(Error::Refused(_))));
        assert!(d.read_capped("link/secret", 10).is_err());
        assert!(d.read_capped("../x", 10).is_err());
        // Writing through a planted symlink replaces the link, not its target.
        d.write_durable("file", b"new").unwrap();
        assert_eq!(std::fs::read(outside.path().join("secret")).unwrap(), b"x");
        assert_eq!(std::fs::read(t.path().join("file")).unwrap(), b"new");
        // Removing a tree with a symlink to outside removes the link only.
        let sub = d.create_dirs("a/b").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("a/b/out")).unwrap();
        drop(sub);
        d.remove_entry("a").unwrap();
        assert!(outside.path().join("secret").exists());
        assert!(!t.path().join("a").exists());
    }

    #[test]
    fn capped_reads_refuse_fifos_and_big_files() {
        let t = tempfile::tempdir().unwrap();
        let d = Dir::open(t.path()).unwrap();
        std::fs::write(t.path().join("big"), vec![0u8; 2000]).unwrap();
        assert!(matches!(d.read_capped("big", 1000), Err(Error::Refused(_))));
        assert_eq!(d.read_capped("big", 2000).unwrap().len(), 2000);
        rustix::fs::mknodat(rustix::fs::CWD, t.path().join("fifo").as_path(), FileType::Fifo, Mode::from_raw_mode(0o644), 0).unwrap();
        assert!(matches!(d.read_capped("fifo", 1000), Err(Error::Refused(_))));
        assert!(matches!(d.open_file("fifo"), Err(Error::Refused(_))));
        assert!(d.create_dirs("big/x").is_err());
    }
}
