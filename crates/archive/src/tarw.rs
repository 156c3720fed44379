//! Writing tar members: a POSIX.1-2001 (PAX) extended header when the
//! ustar fields cannot hold a value, then the ustar header.
//!
//! The spelling follows GNU tar's `--format=pax --xattrs --acls --sparse`,
//! so that GNU tar restores everything it can: `SCHILY.xattr.*` for every
//! xattr (binary values as they are), `SCHILY.acl.*` text for ACLs, and
//! GNU.sparse 1.0 for files with holes.

use crate::acl;
use crate::entry::{Kind, Meta, Segment, Time};

pub const BLOCK: usize = 512;

/// Bytes needed to pad `len` to a whole block.
pub(crate) fn padding(len: u64) -> usize {
    ((BLOCK as u64 - len % BLOCK as u64) % BLOCK as u64) as usize
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // The length prefix counts itself: find the fixed point.
    let rest = 1 + key.len() + 1 + value.len() + 1;
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// PAX spelling of a time: `-1.5` is half a second before -1.
pub fn format_time(t: Time) -> String {
    if t.sec < 0 && t.nsec > 0 {
        let whole = -(t.sec + 1);
        format!("-{}.{:09}", whole, 1_000_000_000 - t.nsec)
    } else if t.nsec == 0 {
        t.sec.to_string()
    } else {
        format!("{}.{:09}", t.sec, t.nsec)
    }
}

/// Octal in a fixed field with a NUL at the end, or base-256 when too big
/// (GNU's spelling; PAX records carry the exact value anyway).
fn put_num(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    if digits >= 22 || value < 1u64 << (3 * digits) {
        let s = format!("{:0width$o}", value, width = digits);
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        field.fill(0);
        field[0] = 0x80;
        let bytes = value.to_be_bytes();
        let n = field.len().min(8);
        let start = field.len() - n;
        field[start..].copy_from_slice(&bytes[8 - n..]);
    }
}

fn fits_octal(value: u64, digits: usize) -> bool {
    value < 1u64 << (3 * digits)
}

fn ustar_header(name: &[u8], meta: &Meta, typeflag: u8, size: u64, link: &[u8]) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    put_num(&mut h[100..108], u64::from(meta.mode & 0o7777));
    put_num(&mut h[108..116], if fits_octal(meta.uid, 7) { meta.uid } else { 0 });
    put_num(&mut h[116..124], if fits_octal(meta.gid, 7) { meta.gid } else { 0 });
    put_num(&mut h[124..136], size);
    let mtime = if meta.mtime.sec >= 0 && fits_octal(meta.mtime.sec as u64, 11) { meta.mtime.sec as u64 } else { 0 };
    put_num(&mut h[136..148], mtime);
    h[156] = typeflag;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    if matches!(meta.kind, Kind::CharDev | Kind::BlockDev) {
        put_num(&mut h[329..337], u64::from(meta.rdev_major));
        put_num(&mut h[337..345], u64::from(meta.rdev_minor));
    }
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{:06o}\0 ", sum);
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pax_header(out: &mut Vec<u8>, name: &[u8], records: &[u8], typeflag: u8) {
    let mut meta = Meta::new(Vec::new(), Kind::File);
    meta.mode = 0o644;
    out.extend_from_slice(&ustar_header(name, &meta, typeflag, records.len() as u64, b""));
    out.extend_from_slice(records);
    out.resize(out.len() + padding(records.len() as u64), 0);
}

/// The text map that starts a GNU.sparse 1.0 member's data, padded to a block.
pub(crate) fn sparse_map(segments: &[Segment]) -> Vec<u8> {
    let mut map = format!("{}\n", segments.len());
    for s in segments {
        map.push_str(&format!("{}\n{}\n", s.offset, s.len));
    }
    let mut map = map.into_bytes();
    map.resize(map.len() + padding(map.len() as u64), 0);
    map
}

/// Name as stored: `./` prefix like `tar -C SRC .`, a trailing `/` on directories.
fn tar_name(meta: &Meta) -> Vec<u8> {
    let mut name = b"./".to_vec();
    name.extend_from_slice(&meta.path);
    if meta.kind == Kind::Dir && !meta.path.is_empty() {
        name.push(b'/');
    }
    name
}

/// Appends the headers of one member to `out`; returns the size of the data
/// that must follow (for a sparse file: its map, then its segments),
/// before padding to a block.
pub(crate) fn write_headers(out: &mut Vec<u8>, meta: &Meta) -> u64 {
    let name = tar_name(meta);
    let mut link = Vec::new();
    if matches!(meta.kind, Kind::Symlink | Kind::HardLink) {
        link = meta.link.clone();
        if meta.kind == Kind::HardLink {
            link = b"./".iter().chain(meta.link.iter()).copied().collect();
        }
    }
    let typeflag = match meta.kind {
        Kind::File => b'0',
        Kind::HardLink => b'1',
        Kind::Symlink => b'2',
        Kind::CharDev => b'3',
        Kind::BlockDev => b'4',
        Kind::Dir => b'5',
        Kind::Fifo => b'6',
    };
    let map = meta.sparse.as_ref().map(|s| sparse_map(s));
    let size = match (&meta.kind, &map) {
        (Kind::File, Some(map)) => map.len() as u64 + meta.data_len(),
        (Kind::File, None) => meta.size,
        _ => 0,
    };

    let mut rec = Vec::new();
    let mut header_name = name.clone();
    if map.is_some() {
        pax_record(&mut rec, b"GNU.sparse.major", b"1");
        pax_record(&mut rec, b"GNU.sparse.minor", b"0");
        pax_record(&mut rec, b"GNU.sparse.name", &name);
        pax_record(&mut rec, b"GNU.sparse.realsize", meta.size.to_string().as_bytes());
        let base = name.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        header_name = b"./GNUSparseFile.0/".to_vec();
        header_name.extend_from_slice(base);
    } else if name.len() > 100 {
        pax_record(&mut rec, b"path", &name);
    }
    if link.len() > 100 {
        pax_record(&mut rec, b"linkpath", &link);
    }
    if !fits_octal(size, 11) {
        pax_record(&mut rec, b"size", size.to_string().as_bytes());
    }
    if !fits_octal(meta.uid, 7) {
        pax_record(&mut rec, b"uid", meta.uid.to_string().as_bytes());
    }
    if !fits_octal(meta.gid, 7) {
        pax_record(&mut rec, b"gid", meta.gid.to_string().as_bytes());
    }
    if meta.mtime.nsec != 0 || meta.mtime.sec < 0 || !fits_octal(meta.mtime.sec as u64, 11) {
        pax_record(&mut rec, b"mtime", format_time(meta.mtime).as_bytes());
    }
    for (key, value) in &meta.xattrs {
        if key == acl::ACCESS_XATTR || key == acl::DEFAULT_XATTR {
            if let Some(text) = acl::blob_to_text(value) {
                let k: &[u8] = if key == acl::ACCESS_XATTR { b"SCHILY.acl.access" } else { b"SCHILY.acl.default" };
                pax_record(&mut rec, k, text.as_bytes());
            }
        }
        let mut k = b"SCHILY.xattr.".to_vec();
        k.extend_from_slice(key);
        pax_record(&mut rec, &k, value);
    }
    if !rec.is_empty() {
        let mut pax_name = b"./PaxHeaders/".to_vec();
        let base = meta.path.rsplit(|&b| b == b'/').next().unwrap_or(b"");
        pax_name.extend_from_slice(&base[..base.len().min(80)]);
        pax_header(out, &pax_name, &rec, b'x');
    }
    out.extend_from_slice(&ustar_header(&header_name, meta, typeflag, size, &link));
    if let Some(map) = map {
        out.extend_from_slice(&map);
    }
    match meta.kind {
        Kind::File => meta.data_len(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", b"abc");
        assert_eq!(out, b"12 path=abc\n");
        let mut out = Vec::new();
        // 1+4+1+93+1 = 100 plus the 3-digit prefix: 103.
        pax_record(&mut out, b"path", &[b'a'; 93]);
        assert!(out.starts_with(b"103 path="));
        assert_eq!(out.len(), 103);
    }

    #[test]
    fn negative_times() {
        assert_eq!(format_time(Time { sec: -2, nsec: 500_000_000 }), "-1.500000000");
        assert_eq!(format_time(Time { sec: -1, nsec: 1 }), "-0.999999999");
        assert_eq!(format_time(Time { sec: -5, nsec: 0 }), "-5");
        assert_eq!(format_time(Time { sec: 7, nsec: 5 }), "7.000000005");
    }

    #[test]
    fn big_numbers_go_base256() {
        let mut f = [0u8; 12];
        put_num(&mut f, 1 << 40);
        assert_eq!(f[0], 0x80);
        put_num(&mut f, 0o777);
        assert_eq!(&f, b"00000000777\0");
    }
}
