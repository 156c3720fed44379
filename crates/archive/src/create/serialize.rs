//! Stage 3: serializing — in walk order: tar headers and data, hashes and the index, cut into chunks for the compressors.

#[allow(unused_imports)]
use super::*;

/// Tar bytes in, frames out: cuts the stream into chunks for the compressors.
pub(super) struct Serializer {
    pub(super) chunk: Vec<u8>,
    pub(super) chunk_start: u64,
    pub(super) frame_size: usize,
    pub(super) next_chunk: u64,
    pub(super) out: Sender<Chunk>,
    pub(super) progress: Option<Arc<Progress>>,
}

impl Serializer {
    pub(super) fn pos(&self) -> u64 {
        self.chunk_start + self.chunk.len() as u64
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.chunk, Vec::with_capacity(self.frame_size + 64 * 1024));
        self.chunk_start += data.len() as u64;
        self.out.send(Chunk { seq: self.next_chunk, data }).map_err(|_| Error::Format("the archive writer stopped".into()))?;
        self.next_chunk += 1;
        Ok(())
    }

    pub(super) fn put(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = self.frame_size.saturating_sub(self.chunk.len()).max(1);
            let n = room.min(bytes.len());
            self.chunk.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.chunk.len() >= self.frame_size {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Ends a member: pads, and starts a new frame if this one is full.
    pub(super) fn end_member(&mut self, data_len: u64) -> Result<()> {
        let pad = tarw::padding(data_len);
        self.chunk.resize(self.chunk.len() + pad, 0);
        if self.chunk.len() >= self.frame_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Copies a large file's data; a file that shrank or fails is padded
    /// with zeros so the archive stays valid. Returns what went wrong, if anything.
    pub(super) fn stream_file(&mut self, fd: &OwnedFd, meta: &Meta, hasher: &mut blake3::Hasher) -> Result<Option<String>> {
        let segs: Vec<(u64, u64)> = match &meta.sparse {
            Some(s) => s.iter().map(|s| (s.offset, s.len)).collect(),
            None => vec![(0, meta.size)],
        };
        let _ = rustix::fs::fadvise(fd, 0, None, rustix::fs::Advice::Sequential);
        let mut buf = vec![0u8; 1 << 20];
        let mut problem = None;
        for (off, len) in segs {
            let mut done = 0u64;
            while done < len {
                let want = (len - done).min(buf.len() as u64) as usize;
                let n = if problem.is_none() {
                    match sys::pread_full(fd, &mut buf[..want], off + done) {
                        Ok(n) if n == want => n,
                        Ok(n) => {
                            problem = Some(format!("shrank while being read ({} of {} bytes); stored with zeros at the end", off + done + n as u64, meta.size));
                            buf[n..want].fill(0);
                            want
                        }
                        Err(e) => {
                            problem = Some(format!("read error at byte {}: {e}; stored with zeros from there", off + done));
                            buf[..want].fill(0);
                            want
                        }
                    }
                } else {
                    buf[..want].fill(0);
                    want
                };
                hasher.update(&buf[..n]);
                self.put(&buf[..n])?;
                if let Some(p) = &self.progress {
                    p.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                done += n as u64;
            }
        }
        Ok(problem)
    }

    /// One member: its headers, the sparse map and its data. Returns where
    /// its header and data start, the data's and the map's length, and the
    /// hash of what was stored (none when reading the file failed).
    fn member(&mut self, headers: &mut Vec<u8>, meta: &Meta, content: Content, problems: &Sender<Problem>) -> Result<Stored> {
        headers.clear();
        let header_offset = self.pos();
        let data_len = tarw::write_headers(headers, meta);
        self.put(headers)?;
        // The sparse map is the first part of the member's data.
        let map_len = meta.sparse.as_ref().map_or(0, |s| tarw::sparse_map(s).len() as u64);
        let data_offset = self.pos() - map_len;
        let mut hasher = blake3::Hasher::new();
        if map_len > 0 {
            hasher.update(&headers[headers.len() - map_len as usize..]);
        }
        let mut ok = true;
        match content {
            Content::Inline(d) => {
                hasher.update(&d);
                self.put(&d)?;
                if let Some(pr) = &self.progress {
                    pr.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                }
            }
            Content::Stream(fd) => {
                if let Some(problem) = self.stream_file(&fd, meta, &mut hasher)? {
                    ok = false;
                    let _ = problems.send(Problem { path: meta.path.clone(), what: problem });
                }
            }
            Content::None => {}
        }
        self.end_member(data_len + map_len)?;
        Ok(Stored { header_offset, data_offset, data_len, map_len, hash: ok.then(|| *hasher.finalize().as_bytes()) })
    }
}

/// Where a member went in the archive, and the hash of its data.
struct Stored {
    header_offset: u64,
    data_offset: u64,
    data_len: u64,
    map_len: u64,
    hash: Option<[u8; 32]>,
}

pub(super) fn serialize(
    ser: &mut Serializer,
    rx: Receiver<Prepared>,
    problems: &Sender<Problem>,
    index: &mut IndexWriter<BufWriter<Spool>>,
    window: &Window,
    budget: &Budget,
) -> Result<Summary> {
    let mut pending: BTreeMap<u64, Prepared> = BTreeMap::new();
    let mut next = 0u64;
    let mut links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut summary = Summary::default();
    let mut headers = Vec::with_capacity(8192);
    for p in rx {
        pending.insert(p.seq, p);
        while let Some(p) = pending.remove(&next) {
            next += 1;
            if next.is_multiple_of(256) {
                window.advance(next);
            }
            let (mut meta, dev, ino, nlink, content) = match p.outcome {
                Found::Entry { meta, dev, ino, nlink, content } => (meta, dev, ino, nlink, content),
                Found::Socket => {
                    summary.sockets_skipped += 1;
                    continue;
                }
                Found::Skipped => continue,
                Found::Vanished => {
                    let _ = problems.send(Problem { path: p.path, what: "vanished before it could be read; not archived".into() });
                    continue;
                }
                Found::Failed(why) => {
                    let _ = problems.send(Problem { path: p.path, what: format!("cannot be read ({why}); not archived") });
                    continue;
                }
            };
            if let Content::Inline(d) = &content {
                budget.give(d.len() as u64);
            }
            let mut content = content;
            if meta.kind != Kind::Dir && nlink > 1 {
                if let Some(first) = links.get(&(dev, ino)) {
                    meta.kind = Kind::HardLink;
                    meta.link = first.clone();
                    meta.size = 0;
                    meta.sparse = None;
                    content = Content::None;
                } else {
                    links.insert((dev, ino), meta.path.clone());
                }
            }
            let Stored { header_offset, data_offset, data_len, map_len, hash } = ser.member(&mut headers, &meta, content, problems)?;
            match meta.kind {
                Kind::File => {
                    summary.files += 1;
                    summary.bytes += meta.size;
                    summary.data_bytes += data_len;
                }
                Kind::Dir => summary.dirs += 1,
                Kind::Symlink => summary.symlinks += 1,
                Kind::HardLink => summary.hardlinks += 1,
                _ => summary.specials += 1,
            }
            if let Some(pr) = &ser.progress {
                pr.files.fetch_add(1, Ordering::Relaxed);
            }
            let has_data = meta.kind == Kind::File;
            let entry = IndexEntry {
                header_offset,
                data_offset,
                stored_len: if has_data { data_len + map_len } else { 0 },
                hash: if has_data { hash } else { None },
                ..IndexEntry::of(meta)
            };
            index.push(&entry).map_err(ctx(|| "writing the index spool".into()))?;
        }
    }
    window.advance(u64::MAX / 2);
    Ok(summary)
}
