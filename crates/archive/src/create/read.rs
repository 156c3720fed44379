//! Stage 2: reading — stat, xattrs, flags, holes and the data of small files, on many threads (what keeps a cold disk busy).

use super::walk::{kind_of, meta_from_stat};
#[allow(unused_imports)]
use super::*;

pub(super) struct Budget(pub(super) AtomicU64);

impl Budget {
    pub(super) fn take(&self, n: u64) -> bool {
        self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| (used + n <= INLINE_BUDGET).then_some(used + n)).is_ok()
    }
    pub(super) fn give(&self, n: u64) {
        self.0.fetch_sub(n, Ordering::AcqRel);
    }
}

pub(super) fn read_inline(fd: &OwnedFd, meta: &Meta) -> std::io::Result<Option<Vec<u8>>> {
    let len = meta.data_len() as usize;
    let mut buf = vec![0u8; len];
    let mut at = 0usize;
    let segs: Vec<(u64, u64)> = match &meta.sparse {
        Some(s) => s.iter().map(|s| (s.offset, s.len)).collect(),
        None => vec![(0, meta.size)],
    };
    for (off, l) in segs {
        let n = sys::pread_full(fd, &mut buf[at..at + l as usize], off)?;
        if n != l as usize {
            return Ok(None);
        }
        at += n;
    }
    // Grown since stat: read it in the serializer, which reports it.
    let mut probe = [0u8; 1];
    if meta.sparse.is_none() && sys::pread_full(fd, &mut probe, meta.size)? != 0 {
        return Ok(None);
    }
    Ok(Some(buf))
}

pub(super) fn prepare(job: Job, budget: &Budget, skip: &[(u64, u64)]) -> Prepared {
    let Job { seq, path, target } = job;
    let outcome = match prepare_outcome(&path, target, budget, skip) {
        Ok(o) => o,
        Err(e) if e == Errno::NOENT => Found::Vanished,
        Err(e) => Found::Failed(e.to_string()),
    };
    Prepared { seq, path, outcome }
}

/// A member's directory and its name in it (to open it beneath there).
type ParentName = (Arc<OwnedFd>, CString);

pub(super) fn prepare_outcome(path: &[u8], target: Target, budget: &Budget, skip: &[(u64, u64)]) -> std::result::Result<Found, Errno> {
    let (fd, st, parent_name): (Option<OwnedFd>, rustix::fs::Stat, Option<ParentName>) = match target {
        Target::Dir(fd) => {
            let st = rustix::fs::fstat(&*fd)?;
            let own = rustix::io::fcntl_dupfd_cloexec(&*fd, 0)?;
            (Some(own), st, None)
        }
        Target::Child { parent, name } => {
            let st = rustix::fs::statat(&*parent, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
            let fd = if FileType::from_raw_mode(st.st_mode) == FileType::RegularFile {
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
                let fd = rustix::fs::openat(&*parent, name.as_c_str(), flags | OFlags::NOATIME, Mode::empty())
                    .or_else(|_| rustix::fs::openat(&*parent, name.as_c_str(), flags, Mode::empty()))?;
                Some(fd)
            } else {
                None
            };
            (fd, st, Some((parent, name)))
        }
    };
    let Some(kind) = kind_of(st.st_mode) else {
        return Ok(Found::Socket);
    };
    if skip.contains(&(st.st_dev, st.st_ino)) {
        return Ok(Found::Skipped);
    }
    let st = match &fd {
        Some(fd) => rustix::fs::fstat(fd)?,
        None => st,
    };
    let mut meta = meta_from_stat(path.to_vec(), kind, &st);
    match (&fd, &parent_name) {
        (Some(fd), _) => {
            meta.xattrs = sys::xattrs_fd(fd.as_fd()).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            meta.flags = sys::flags(fd.as_fd()) & KEPT_FLAGS;
        }
        (None, Some((parent, name))) => {
            let p = sys::proc_path(parent.as_fd(), name);
            meta.xattrs = sys::xattrs_path(&p).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
            if kind == Kind::Symlink {
                meta.link = rustix::fs::readlinkat(&**parent, name.as_c_str(), Vec::new())?.into_bytes();
            }
        }
        (None, None) => {}
    }
    let mut content = Content::None;
    if kind == Kind::File {
        let fd = fd.ok_or(Errno::BADF)?;
        meta.sparse = sys::data_segments(fd.as_fd(), meta.size, st.st_blocks as u64).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
        let len = meta.data_len();
        content = Content::Stream(fd);
        if len <= INLINE_MAX && budget.take(len) {
            if let Content::Stream(fd) = &content {
                match read_inline(fd, &meta) {
                    Ok(Some(data)) => content = Content::Inline(data),
                    Ok(None) => budget.give(len),
                    Err(e) => {
                        budget.give(len);
                        return Err(Errno::from_io_error(&e).unwrap_or(Errno::IO));
                    }
                }
            }
        }
    }
    Ok(Found::Entry { meta, dev: st.st_dev, ino: st.st_ino, nlink: st.st_nlink, content })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name the walk saw that is gone when it is read: reported as
    /// vanished (the archive goes on without it), not an error.
    #[test]
    fn a_file_that_vanished_after_the_walk_is_reported_as_such() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("here"), b"x").unwrap();
        let parent = Arc::new(rustix::fs::open(dir.path(), OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).unwrap());
        let budget = Budget(AtomicU64::new(0));
        let job = |name: &str| Job {
            seq: 0,
            path: name.as_bytes().to_vec(),
            target: Target::Child { parent: Arc::clone(&parent), name: CString::new(name).unwrap() },
        };
        assert!(matches!(prepare(job("gone"), &budget, &[]).outcome, Found::Vanished));
        match prepare(job("here"), &budget, &[]).outcome {
            Found::Entry { meta, content: Content::Inline(d), .. } => {
                assert_eq!(meta.size, 1);
                assert_eq!(d, b"x");
            }
            _ => panic!("a present file is read"),
        }
        // Skipped by inode: the archive being written.
        let st = rustix::fs::stat(dir.path().join("here")).unwrap();
        assert!(matches!(prepare(job("here"), &budget, &[(st.st_dev, st.st_ino)]).outcome, Found::Skipped));
    }
}
