//! Reading tar members from any stream: ustar, PAX (records parsed by their
//! length prefix, so binary xattr values with newlines survive), GNU long
//! names, and the three GNU sparse spellings (old `S` headers, PAX 0.0/0.1,
//! PAX 1.0).

use std::io::{self, Read};

use crate::acl;
use crate::entry::{normalize_path, Kind, Meta, Segment, Time};
use crate::error::{Error, Result};
use crate::tarw::{padding, BLOCK};

/// A member's headers, read; its data is next in the stream.
#[derive(Debug)]
pub struct Member {
    pub meta: Meta,
    /// The raw name, for messages about members that are refused.
    pub raw_path: Vec<u8>,
    /// False when the name had a `..` component: never extract it.
    pub path_ok: bool,
    /// Stream offset of this member's first header block.
    pub header_offset: u64,
}

pub struct TarReader<R> {
    inner: R,
    pos: u64,
    /// Data bytes of the current member not read yet, then its padding.
    remaining: u64,
    pad: usize,
    global: Vec<(Vec<u8>, Vec<u8>)>,
    ended: bool,
}

fn parse_num(field: &[u8]) -> Result<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x3f);
        for &b in &field[1..] {
            v = v.checked_mul(256).and_then(|v| v.checked_add(u64::from(b))).ok_or_else(|| Error::Format("number too large in tar header".into()))?;
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                v = v.checked_mul(8).and_then(|v| v.checked_add(u64::from(b - b'0'))).ok_or_else(|| Error::Format("number too large in tar header".into()))?
            }
            b' ' if v == 0 => continue,
            0 | b' ' => break,
            _ => return Err(Error::Format(format!("bad octal number {:?} in tar header", String::from_utf8_lossy(field)))),
        }
    }
    Ok(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

fn checksum_ok(h: &[u8; BLOCK]) -> bool {
    let stored = match parse_num(&h[148..156]) {
        Ok(v) => v,
        Err(_) => return false,
    };
    let mut unsigned: u64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in h.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += u64::from(b);
        signed += i64::from(b as i8);
    }
    stored == unsigned || stored as i64 == signed
}

pub fn parse_time(s: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(s).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: i64 = whole.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: u32 = digits.parse().ok()?;
    Some(if !neg {
        Time { sec: whole, nsec }
    } else if nsec == 0 {
        Time { sec: -whole, nsec: 0 }
    } else {
        Time { sec: -whole - 1, nsec: 1_000_000_000 - nsec }
    })
}

/// Splits PAX records by their length prefix (never by newlines: values are binary).
pub(crate) fn parse_pax(mut data: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.iter().all(|&b| b == 0) {
            break;
        }
        let sp = data.iter().position(|&b| b == b' ').ok_or_else(|| Error::Format("PAX record without length".into()))?;
        let len: usize =
            std::str::from_utf8(&data[..sp]).ok().and_then(|s| s.parse().ok()).ok_or_else(|| Error::Format("PAX record with a bad length".into()))?;
        if len <= sp + 1 || len > data.len() || data[len - 1] != b'\n' {
            return Err(Error::Format("PAX record length does not match its contents".into()));
        }
        let rec = &data[sp + 1..len - 1];
        let eq = rec.iter().position(|&b| b == b'=').ok_or_else(|| Error::Format("PAX record without '='".into()))?;
        out.push((rec[..eq].to_vec(), rec[eq + 1..].to_vec()));
        data = &data[len..];
    }
    Ok(out)
}

fn parse_segments(nums: &[u64]) -> Result<Vec<Segment>> {
    if !nums.len().is_multiple_of(2) {
        return Err(Error::Format("odd number of values in a sparse map".into()));
    }
    Ok(nums.chunks(2).map(|c| Segment { offset: c[0], len: c[1] }).collect())
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R) -> Self {
        TarReader { inner, pos: 0, remaining: 0, pad: 0, global: Vec::new(), ended: false }
    }

    /// Starts at stream offset `pos` (the reader is already positioned there).
    pub(crate) fn at_offset(inner: R, pos: u64) -> Self {
        TarReader { inner, pos, remaining: 0, pad: 0, global: Vec::new(), ended: false }
    }

    pub fn position(&self) -> u64 {
        self.pos
    }

    fn read_exact_counted(&mut self, buf: &mut [u8]) -> Result<()> {
        self.inner.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::Format(format!("archive ends in the middle of a member (at byte {})", self.pos))
            } else {
                Error::Io { what: format!("reading the archive at byte {}", self.pos), source: e }
            }
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn read_block(&mut self) -> Result<Option<[u8; BLOCK]>> {
        let mut b = [0u8; BLOCK];
        let mut got = 0;
        while got < BLOCK {
            match self.inner.read(&mut b[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(Error::Format(format!("archive ends inside a header block (at byte {})", self.pos))),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Io { what: format!("reading the archive at byte {}", self.pos), source: e }),
            }
        }
        self.pos += BLOCK as u64;
        Ok(Some(b))
    }

    fn read_vec(&mut self, len: u64) -> Result<Vec<u8>> {
        if len > 1 << 30 {
            return Err(Error::Format(format!("header member of {len} bytes is too large")));
        }
        let mut v = vec![0u8; len as usize];
        self.read_exact_counted(&mut v)?;
        let mut pad = vec![0u8; padding(len)];
        self.read_exact_counted(&mut pad)?;
        Ok(v)
    }

    /// Skips what is left of the current member.
    pub(crate) fn skip_data(&mut self) -> Result<()> {
        let mut buf = [0u8; 64 * 1024];
        while self.remaining > 0 {
            let n = self.remaining.min(buf.len() as u64) as usize;
            self.read_exact_counted(&mut buf[..n])?;
            self.remaining -= n as u64;
        }
        let pad = self.pad;
        self.read_exact_counted(&mut buf[..pad])?;
        self.pad = 0;
        Ok(())
    }

    /// Reads the current member's data; returns 0 at its end.
    pub fn read_data(&mut self, buf: &mut [u8]) -> Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.remaining.min(buf.len() as u64) as usize;
        self.read_exact_counted(&mut buf[..n])?;
        self.remaining -= n as u64;
        Ok(n)
    }

    /// The next member, or `None` at the end of the archive.
    pub fn next_member(&mut self) -> Result<Option<Member>> {
        if self.ended {
            return Ok(None);
        }
        self.skip_data()?;
        let header_offset = self.pos;
        let mut pax: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        loop {
            let h = match self.read_block()? {
                Some(h) => h,
                None => {
                    self.ended = true;
                    return Ok(None);
                }
            };
            if h.iter().all(|&b| b == 0) {
                // End of archive (two zero blocks; one is enough to stop).
                self.ended = true;
                return Ok(None);
            }
            if !checksum_ok(&h) {
                return Err(Error::Format(format!("tar header checksum mismatch at byte {}", self.pos - BLOCK as u64)));
            }
            let size = parse_num(&h[124..136])?;
            match h[156] {
                b'x' | b'X' => {
                    let data = self.read_vec(size)?;
                    pax.extend(parse_pax(&data)?);
                }
                b'g' => {
                    let data = self.read_vec(size)?;
                    self.global.extend(parse_pax(&data)?);
                }
                b'L' => long_name = Some(cstr(&self.read_vec(size)?).to_vec()),
                b'K' => long_link = Some(cstr(&self.read_vec(size)?).to_vec()),
                b'V' => {
                    let _ = self.read_vec(size)?;
                }
                b'M' => return Err(Error::Format("multi-volume tar archives are not supported".into())),
                _ => return self.member(h, size, header_offset, pax, long_name, long_link).map(Some),
            }
        }
    }

    fn member(
        &mut self,
        h: [u8; BLOCK],
        mut size: u64,
        header_offset: u64,
        pax: Vec<(Vec<u8>, Vec<u8>)>,
        long_name: Option<Vec<u8>>,
        long_link: Option<Vec<u8>>,
    ) -> Result<Member> {
        let ustar = &h[257..263] == b"ustar\0";
        let mut name = cstr(&h[0..100]).to_vec();
        if ustar && h[345] != 0 {
            let mut full = cstr(&h[345..500]).to_vec();
            full.push(b'/');
            full.extend_from_slice(&name);
            name = full;
        }
        if let Some(n) = long_name {
            name = n;
        }
        let mut link = cstr(&h[157..257]).to_vec();
        if let Some(l) = long_link {
            link = l;
        }
        let typeflag = h[156];
        let (mut meta, kind) = header_meta(&h, header_offset)?;
        let sparse = self.apply_pax(&mut meta, pax, &mut name, &mut link, &mut size)?;
        let (mut real_size, mut sparse_nums) = (sparse.real_size, sparse.nums);
        if let Some(n) = sparse.name {
            name = n;
        }

        // Hard links may carry data in some tars (POSIX allows it); skip it.
        let data_size = match kind {
            Kind::File | Kind::HardLink => size,
            _ => 0,
        };
        self.remaining = data_size;
        self.pad = padding(data_size);

        if typeflag == b'S' {
            (sparse_nums, real_size) = self.old_gnu_sparse(&h)?;
        } else if sparse.major == Some(1) {
            sparse_nums = self.pax1_sparse_map()?;
        }
        if !sparse_nums.is_empty() || real_size.is_some() {
            let segs = parse_segments(&sparse_nums)?;
            let stored: u64 = segs.iter().map(|s| s.len).sum();
            if stored != self.remaining {
                return Err(Error::Format(format!("sparse map says {} data bytes, member holds {}", stored, self.remaining)));
            }
            meta.size = real_size.unwrap_or_else(|| segs.last().map(|s| s.offset + s.len).unwrap_or(0));
            meta.sparse = Some(segs);
        } else if kind == Kind::File {
            meta.size = size;
        }

        let norm = normalize_path(&name);
        let link_norm = if kind == Kind::HardLink { normalize_path(&link) } else { Some(link.clone()) };
        let path_ok = norm.is_some() && link_norm.is_some();
        meta.path = norm.unwrap_or_default();
        meta.link = link_norm.unwrap_or_default();
        Ok(Member { meta, raw_path: name, path_ok, header_offset })
    }

    /// Applies the archive's global PAX records, then the member's own, to
    /// what the header said; ACLs become their xattrs. The sparse records
    /// are returned.
    fn apply_pax(&self, meta: &mut Meta, pax: Vec<(Vec<u8>, Vec<u8>)>, name: &mut Vec<u8>, link: &mut Vec<u8>, size: &mut u64) -> Result<Sparse> {
        let mut sparse = Sparse::default();
        let mut acl_text: Vec<(Vec<u8>, String)> = Vec::new();
        let all = self.global.clone().into_iter().chain(pax);
        for (key, value) in all {
            let num = || std::str::from_utf8(&value).ok().and_then(|s| s.trim().parse::<u64>().ok());
            match key.as_slice() {
                b"path" => *name = value.clone(),
                b"linkpath" => *link = value.clone(),
                b"size" => *size = num().ok_or_else(|| Error::Format("bad PAX size".into()))?,
                b"uid" => meta.uid = num().ok_or_else(|| Error::Format("bad PAX uid".into()))?,
                b"gid" => meta.gid = num().ok_or_else(|| Error::Format("bad PAX gid".into()))?,
                b"mtime" => meta.mtime = parse_time(&value).ok_or_else(|| Error::Format("bad PAX mtime".into()))?,
                b"GNU.sparse.major" => sparse.major = num(),
                b"GNU.sparse.name" => sparse.name = Some(value.clone()),
                b"GNU.sparse.realsize" | b"GNU.sparse.size" => sparse.real_size = num(),
                b"GNU.sparse.offset" | b"GNU.sparse.numbytes" => sparse.nums.push(num().ok_or_else(|| Error::Format("bad GNU.sparse value".into()))?),
                b"GNU.sparse.map" => {
                    for v in value.split(|&b| b == b',') {
                        let v = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok()).ok_or_else(|| Error::Format("bad GNU.sparse.map".into()))?;
                        sparse.nums.push(v);
                    }
                }
                b"SCHILY.acl.access" => acl_text.push((acl::ACCESS_XATTR.to_vec(), String::from_utf8_lossy(&value).into_owned())),
                b"SCHILY.acl.default" => acl_text.push((acl::DEFAULT_XATTR.to_vec(), String::from_utf8_lossy(&value).into_owned())),
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let xname = k[b"SCHILY.xattr.".len()..].to_vec();
                    meta.xattrs.retain(|(n, _)| *n != xname);
                    meta.xattrs.push((xname, value.clone()));
                }
                _ => {}
            }
        }
        for (xname, text) in acl_text {
            if meta.xattrs.iter().any(|(n, _)| *n == xname) {
                continue;
            }
            // A minimal ACL (owner, group, other) is just the mode: no xattr.
            let entries = text.split(['\n', ',']).filter(|s| !s.trim().is_empty()).count();
            if entries <= 3 {
                continue;
            }
            if let Some(blob) = acl::text_to_blob(&text, &crate::sys::lookup_id) {
                meta.xattrs.push((xname, blob));
            }
        }
        Ok(sparse)
    }

    /// Old GNU sparse: 4 entries in the header, more in extension blocks;
    /// the map's numbers and the file's real size.
    fn old_gnu_sparse(&mut self, h: &[u8; BLOCK]) -> Result<(Vec<u64>, Option<u64>)> {
        let mut nums = Vec::new();
        let mut push = |block: &[u8], n: usize| -> Result<()> {
            for i in 0..n {
                let e = &block[i * 24..i * 24 + 24];
                if e[0] == 0 {
                    break;
                }
                nums.push(parse_num(&e[..12])?);
                nums.push(parse_num(&e[12..])?);
            }
            Ok(())
        };
        push(&h[386..482], 4)?;
        let mut extended = h[482] != 0;
        while extended {
            let b = self.read_block()?.ok_or_else(|| Error::Format("archive ends in a sparse header".into()))?;
            push(&b[..504], 21)?;
            extended = b[504] != 0;
        }
        Ok((nums, Some(parse_num(&h[483..495])?)))
    }

    /// PAX sparse 1.0: the map is text at the start of the data.
    fn pax1_sparse_map(&mut self) -> Result<Vec<u64>> {
        let mut map = Vec::new();
        let mut nums: Vec<u64> = Vec::new();
        let mut count: Option<u64> = None;
        loop {
            let mut blk = [0u8; BLOCK];
            if self.remaining < BLOCK as u64 {
                return Err(Error::Format("sparse map larger than the member".into()));
            }
            self.read_exact_counted(&mut blk)?;
            self.remaining -= BLOCK as u64;
            map.extend_from_slice(&blk);
            let lines: Vec<&[u8]> = map.split(|&b| b == b'\n').collect();
            let complete = &lines[..lines.len() - 1];
            if count.is_none() && !complete.is_empty() {
                count = std::str::from_utf8(complete[0]).ok().and_then(|s| s.parse().ok());
                if count.is_none() {
                    return Err(Error::Format("bad sparse map".into()));
                }
            }
            if let Some(c) = count {
                if complete.len() as u64 > 2 * c {
                    for l in &complete[1..1 + 2 * c as usize] {
                        nums.push(std::str::from_utf8(l).ok().and_then(|s| s.parse().ok()).ok_or_else(|| Error::Format("bad sparse map".into()))?);
                    }
                    break;
                }
            }
        }
        Ok(nums)
    }
}

/// A member's sparse records from PAX.
#[derive(Default)]
struct Sparse {
    real_size: Option<u64>,
    name: Option<Vec<u8>>,
    nums: Vec<u64>,
    major: Option<u64>,
}

/// What a tar header's fixed fields say: the type, mode, owner, time and
/// device numbers.
fn header_meta(h: &[u8; BLOCK], header_offset: u64) -> Result<(Meta, Kind)> {
    let kind = match h[156] {
        b'0' | 0 | b'7' | b'S' => Kind::File,
        b'1' => Kind::HardLink,
        b'2' => Kind::Symlink,
        b'3' => Kind::CharDev,
        b'4' => Kind::BlockDev,
        b'5' | b'D' => Kind::Dir,
        b'6' => Kind::Fifo,
        t => return Err(Error::Format(format!("unknown tar member type {:?} at byte {}", t as char, header_offset))),
    };
    let mut meta = Meta::new(Vec::new(), kind);
    meta.mode = parse_num(&h[100..108])? as u32 & 0o7777;
    meta.uid = parse_num(&h[108..116])?;
    meta.gid = parse_num(&h[116..124])?;
    let mtime = &h[136..148];
    meta.mtime = if mtime[0] & 0x80 != 0 && mtime[0] & 0x40 != 0 {
        // base-256 negative
        let mut v: i64 = -1;
        for &b in mtime {
            v = (v << 8) | i64::from(b);
        }
        Time { sec: v, nsec: 0 }
    } else {
        Time { sec: parse_num(mtime)? as i64, nsec: 0 }
    };
    if matches!(kind, Kind::CharDev | Kind::BlockDev) {
        meta.rdev_major = parse_num(&h[329..337])? as u32;
        meta.rdev_minor = parse_num(&h[337..345])? as u32;
    }
    Ok((meta, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_values_may_hold_newlines() {
        let recs = parse_pax(b"30 SCHILY.xattr.user.a=x\ny\nz\n\n12 path=abc\n").unwrap();
        assert_eq!(recs[0], (b"SCHILY.xattr.user.a".to_vec(), b"x\ny\nz\n".to_vec()));
        assert_eq!(recs[1], (b"path".to_vec(), b"abc".to_vec()));
    }

    #[test]
    fn times_round_trip() {
        for t in [Time { sec: -2, nsec: 500_000_000 }, Time { sec: 0, nsec: 1 }, Time { sec: -7, nsec: 0 }, Time { sec: 1_700_000_000, nsec: 999_999_999 }] {
            assert_eq!(parse_time(crate::tarw::format_time(t).as_bytes()), Some(t));
        }
    }
}
