//! Stage 1: the walk — depth first, in a deterministic order, one filesystem, excludes applied, never more than a window ahead of the serializer.

#[allow(unused_imports)]
use super::*;

/// The walk may not run more than `WINDOW` entries ahead of the serializer.
#[derive(Default)]
pub(super) struct Window {
    done: Mutex<u64>,
    cond: Condvar,
}

impl Window {
    pub(super) fn wait_for(&self, seq: u64, stop: &AtomicBool) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while seq >= *done + WINDOW && !stop.load(Ordering::Relaxed) {
            done = self.cond.wait_timeout(done, std::time::Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    pub(super) fn advance(&self, done: u64) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = done;
        self.cond.notify_all();
    }
}

pub(super) struct Excludes(Option<globset::GlobSet>);

/// Checks one exclude pattern as `create` will read it: the error says
/// what is wrong with it. For configuration files checked before any work.
pub fn check_exclude(pattern: &str) -> Result<()> {
    Excludes::new(&[pattern.to_string()]).map(|_| ())
}

impl Excludes {
    pub(super) fn new(patterns: &[String]) -> Result<Excludes> {
        if patterns.is_empty() {
            return Ok(Excludes(None));
        }
        let mut b = globset::GlobSetBuilder::new();
        for p in patterns {
            let p = p.trim_end_matches('/');
            let pat = match p.strip_prefix('/') {
                Some(anchored) => anchored.to_string(),
                None if p.contains('/') => p.to_string(),
                None => format!("**/{p}"),
            };
            let g = globset::GlobBuilder::new(&pat)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| Error::Refused(format!("bad --exclude pattern {p:?}: {e}")))?;
            b.add(g);
        }
        Ok(Excludes(Some(b.build().map_err(|e| Error::Refused(format!("bad --exclude patterns: {e}")))?)))
    }

    pub(super) fn matches(&self, path: &[u8]) -> bool {
        match &self.0 {
            Some(set) => set.is_match(Path::new(std::ffi::OsStr::from_bytes(path))),
            None => false,
        }
    }
}

pub(super) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    p.extend_from_slice(parent);
    if !parent.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

pub(super) fn open_dir_at(parent: impl AsFd, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(parent, name, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
}

/// Depth first, directories before their contents, one file system only.
pub(super) fn walk(root: Arc<OwnedFd>, root_dev: u64, excludes: &Excludes, jobs: &Sender<Job>, problems: &Sender<Problem>, window: &Window, stop: &AtomicBool) {
    let mut seq = 0u64;
    let mut emit = |path: Vec<u8>, target: Target| -> bool {
        window.wait_for(seq, stop);
        let ok = jobs.send(Job { seq, path, target }).is_ok();
        seq += 1;
        ok
    };
    if !emit(Vec::new(), Target::Dir(Arc::clone(&root))) {
        return;
    }
    struct Frame {
        dir: rustix::fs::Dir,
        fd: Arc<OwnedFd>,
        path: Vec<u8>,
    }
    let first = match rustix::fs::Dir::read_from(&*root) {
        Ok(d) => d,
        Err(e) => {
            let _ = problems.send(Problem { path: Vec::new(), what: format!("cannot list the directory: {e}") });
            return;
        }
    };
    let mut stack = vec![Frame { dir: first, fd: root, path: Vec::new() }];
    while let Some(top) = stack.last_mut() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let ent = match top.dir.read() {
            None => {
                stack.pop();
                continue;
            }
            Some(Err(e)) => {
                let _ = problems.send(Problem { path: top.path.clone(), what: format!("cannot list the directory: {e}") });
                stack.pop();
                continue;
            }
            Some(Ok(ent)) => ent,
        };
        let name = ent.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let path = join(&top.path, name.to_bytes());
        if excludes.matches(&path) {
            continue;
        }
        let name = name.to_owned();
        let mut ftype = ent.file_type();
        if ftype == FileType::Unknown {
            ftype = match rustix::fs::statat(&*top.fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => FileType::from_raw_mode(st.st_mode),
                Err(_) => FileType::Unknown,
            };
        }
        if ftype == FileType::Directory {
            match open_dir_at(&*top.fd, &name) {
                Ok(fd) => {
                    let dev = rustix::fs::fstat(&fd).map(|s| s.st_dev).unwrap_or(root_dev);
                    let fd = Arc::new(fd);
                    if !emit(path.clone(), Target::Dir(Arc::clone(&fd))) {
                        return;
                    }
                    // A mount point is kept as an empty directory, like tar --one-file-system.
                    if dev == root_dev {
                        match rustix::fs::Dir::read_from(&*fd) {
                            Ok(dir) => stack.push(Frame { dir, fd, path }),
                            Err(e) => {
                                let _ = problems.send(Problem { path, what: format!("cannot list the directory: {e}") });
                            }
                        }
                    }
                }
                Err(_) => {
                    let parent = Arc::clone(&top.fd);
                    if !emit(path, Target::Child { parent, name }) {
                        return;
                    }
                }
            }
        } else {
            let parent = Arc::clone(&top.fd);
            if !emit(path, Target::Child { parent, name }) {
                return;
            }
        }
    }
}

pub(super) fn meta_from_stat(path: Vec<u8>, kind: Kind, st: &rustix::fs::Stat) -> Meta {
    let mut m = Meta::new(path, kind);
    m.mode = st.st_mode & 0o7777;
    m.uid = u64::from(st.st_uid);
    m.gid = u64::from(st.st_gid);
    m.mtime = Time { sec: st.st_mtime, nsec: st.st_mtime_nsec as u32 };
    if kind == Kind::File {
        m.size = st.st_size as u64;
    }
    if matches!(kind, Kind::CharDev | Kind::BlockDev) {
        m.rdev_major = rustix::fs::major(st.st_rdev);
        m.rdev_minor = rustix::fs::minor(st.st_rdev);
    }
    m
}

pub(super) fn kind_of(mode: u32) -> Option<Kind> {
    Some(match FileType::from_raw_mode(mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::CharacterDevice => Kind::CharDev,
        FileType::BlockDevice => Kind::BlockDev,
        _ => return None,
    })
}
