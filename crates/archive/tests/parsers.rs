//! Property tests for every parser of untrusted bytes in the format: tar
//! headers and PAX records, the index, the frame table and footer, and the
//! whole archive (random bytes, and a real archive with bytes changed).
//! Whatever the input, a parser returns an error or a value: it never
//! panics, loops, or allocates what the input asks for. Fixed seed and
//! number of cases (see `crossback_testkit::fuzz_runner`); no root needed.

use std::io::Read;
use std::path::Path;

use crossback_archive::index::IndexReader;
use crossback_archive::tarr::TarReader;
use crossback_archive::{Archive, CreateOptions};
use proptest::collection::vec;
use proptest::prelude::*;

/// Reads every member of a tar stream, data included, as extract would.
fn read_all(bytes: &[u8]) {
    let mut tr = TarReader::new(bytes);
    for _ in 0..10_000 {
        match tr.next_member() {
            Ok(Some(_)) => {
                let mut buf = [0u8; 4096];
                while let Ok(n) = tr.read_data(&mut buf) {
                    if n == 0 {
                        break;
                    }
                }
            }
            _ => return,
        }
    }
}

/// A header block with a PAX extended header made of these records.
fn pax(records: &[(Vec<u8>, Vec<u8>)], claimed: Option<u64>) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in records {
        let inner = k.len() + v.len() + 3;
        let mut len = inner + inner.to_string().len();
        if len.to_string().len() != inner.to_string().len() {
            len += 1;
        }
        body.extend_from_slice(format!("{len} ").as_bytes());
        body.extend_from_slice(k);
        body.push(b'=');
        body.extend_from_slice(v);
        body.push(b'\n');
    }
    let mut out = Vec::new();
    crossback_testkit::member(&mut out, b"PaxHeaders/x", b'x', b"", &body);
    if let Some(n) = claimed {
        // Claim another size than the body has.
        let s = format!("{n:011o}\0");
        out[124..136].copy_from_slice(&s.as_bytes()[..12.min(s.len())]);
    }
    crossback_testkit::member(&mut out, b"file", b'0', b"", b"data");
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn tar_headers_and_pax_records_never_panic() {
    let mut r = crossback_testkit::fuzz_runner(512);
    r.run(&vec(any::<u8>(), 0..4096), |bytes| {
        read_all(&bytes);
        Ok(())
    })
    .unwrap();
    let key = prop_oneof![
        Just(b"path".to_vec()),
        Just(b"size".to_vec()),
        Just(b"linkpath".to_vec()),
        Just(b"GNU.sparse.map".to_vec()),
        Just(b"GNU.sparse.size".to_vec()),
        Just(b"GNU.sparse.major".to_vec()),
        Just(b"SCHILY.xattr.user.x".to_vec()),
        Just(b"SCHILY.acl.access".to_vec()),
        Just(b"uid".to_vec()),
        Just(b"mtime".to_vec()),
        vec(any::<u8>(), 0..12)
    ];
    let value = prop_oneof![vec(any::<u8>(), 0..64), "[0-9,.-]{0,40}".prop_map(|s| s.into_bytes()), Just(b"../../etc/passwd".to_vec())];
    r.run(&(vec((key, value), 0..6), proptest::option::of(any::<u64>())), |(records, claimed)| {
        read_all(&pax(&records, claimed));
        Ok(())
    })
    .unwrap();
}

#[test]
fn the_index_never_panics_or_allocates_what_it_claims() {
    let mut r = crossback_testkit::fuzz_runner(512);
    r.run(&vec(any::<u8>(), 0..2048), |bytes| {
        for e in IndexReader::new(&bytes[..]).take(10_000) {
            if e.is_err() {
                break;
            }
        }
        Ok(())
    })
    .unwrap();
    // A length prefix that claims 4 GiB is an error, not an allocation.
    let mut claim = u32::MAX.to_le_bytes().to_vec();
    claim.extend_from_slice(&[1, 2, 3]);
    assert!(IndexReader::new(&claim[..]).next().is_some_and(|e| e.is_err()));
}

/// A small real archive, made once.
fn sample(dir: &Path) -> Vec<u8> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("etc/deep")).unwrap();
    for i in 0..20 {
        std::fs::write(src.join(format!("etc/f{i}")), format!("file {i}\n").repeat(i * 50)).unwrap();
    }
    std::os::unix::fs::symlink("../f1", src.join("etc/deep/link")).unwrap();
    let out = dir.join("a.tar.zst");
    let opts = CreateOptions { frame_size: 64 << 10, ..Default::default() };
    crossback_archive::create(&src, std::fs::File::create(&out).unwrap(), &opts).unwrap();
    std::fs::read(&out).unwrap()
}

/// Everything a reader does with an archive: open (footer, table), list
/// (index), and extract (frames, tar) into a scratch directory.
fn exercise(dir: &Path, bytes: &[u8], n: usize) {
    let path = dir.join(format!("case-{n}.tar.zst"));
    std::fs::write(&path, bytes).unwrap();
    if let Ok(a) = Archive::open(&path) {
        if let Ok(Some(idx)) = a.index() {
            for e in idx.take(10_000) {
                if e.is_err() {
                    break;
                }
            }
        }
        if let Ok(Some(mut frames)) = a.frames() {
            let mut buf = vec![0u8; 1 << 16];
            for _ in 0..1000 {
                match frames.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let dest = dir.join(format!("out-{n}"));
        std::fs::create_dir_all(&dest).unwrap();
        let _ = crossback_archive::extract(&a, &dest, &Default::default());
        let _ = std::fs::remove_dir_all(&dest);
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn archives_with_bytes_changed_never_panic() {
    let t = tempfile::tempdir().unwrap();
    let good = sample(t.path());
    let len = good.len();
    let n = std::cell::Cell::new(0usize);
    let mut r = crossback_testkit::fuzz_runner(256);
    // Changes anywhere, and changes in the trailer (index, table, footer) where lengths and offsets live.
    let change = (0..len, any::<u8>());
    let tail = ((len.saturating_sub(600))..len, any::<u8>());
    r.run(&(vec(change, 1..8), vec(tail, 0..8)), |(anywhere, at_end)| {
        let mut b = good.clone();
        for (i, v) in anywhere.into_iter().chain(at_end) {
            b[i] = v;
        }
        n.set(n.get() + 1);
        exercise(t.path(), &b, n.get());
        Ok(())
    })
    .unwrap();
    r.run(&vec(any::<u8>(), 0..4096), |bytes| {
        n.set(n.get() + 1);
        exercise(t.path(), &bytes, n.get());
        Ok(())
    })
    .unwrap();
    // Truncated at every length near the end.
    for cut in (len.saturating_sub(300)..len).step_by(7) {
        n.set(n.get() + 1);
        exercise(t.path(), &good[..cut], n.get());
    }
}
