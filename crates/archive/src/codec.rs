//! The frame codec: how a piece of the tar stream becomes bytes in the
//! archive file, and back. Compression and decompression live here and
//! nowhere else (the container decides where frames go, `create` what goes
//! in them); this is the seam where encrypting archives will go.
//!
//! Data frames are independent zstd frames with their content size and a
//! checksum, and a window no larger than 8 MiB; readers refuse windows over
//! [`WINDOW_LOG_MAX`], so decompressing never needs more memory than that,
//! whatever an archive says. Metadata (index, frame table) is zstd too.

use std::io::{self, BufRead, Write};

use crate::error::{ctx, Result};

/// The largest zstd window a reader accepts (2^25 = 32 MiB).
pub const WINDOW_LOG_MAX: u32 = 25;
/// The largest window a writer uses (2^23 = 8 MiB).
const WINDOW_LOG_WRITE: u32 = 23;
/// Compression level of the index and the frame table.
const META_LEVEL: i32 = 3;

/// Compresses data frames, one independent frame per call.
pub struct FrameEncoder {
    c: zstd::bulk::Compressor<'static>,
    /// For samples: does a frame compress at all?
    probe: zstd::bulk::Compressor<'static>,
    level: i32,
}

/// Bytes of a frame tried (at level 1) to tell whether it compresses.
const SAMPLE: usize = 32 << 10;

impl FrameEncoder {
    /// A window as large as the frame (up to 8 MiB): the whole frame can
    /// refer back to itself, which wins back what independent frames lose
    /// against one long stream.
    pub fn new(level: i32, frame_size: usize) -> Result<FrameEncoder> {
        let mut c = zstd::bulk::Compressor::new(level).map_err(ctx(|| "starting the compressor".into()))?;
        let window_log = (usize::BITS - frame_size.saturating_sub(1).leading_zeros()).clamp(19, WINDOW_LOG_WRITE);
        let setup = |c: &mut zstd::bulk::Compressor<'static>| -> io::Result<()> {
            c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(window_log))?;
            c.include_checksum(true)?;
            c.include_contentsize(true)
        };
        setup(&mut c).map_err(ctx(|| "configuring the compressor".into()))?;
        let probe = zstd::bulk::Compressor::new(1).map_err(ctx(|| "starting the compressor".into()))?;
        Ok(FrameEncoder { c, probe, level })
    }

    /// The level for the next frames (frames stay independent: any mix of
    /// levels is one valid stream).
    pub fn set_level(&mut self, level: i32) -> Result<()> {
        if level != self.level {
            self.c.set_compression_level(level).map_err(ctx(|| "setting the compression level".into()))?;
            self.level = level;
        }
        Ok(())
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// Whether `data` looks incompressible (compressed media, encrypted
    /// files, random bytes): three samples that zstd -1 cannot shrink by
    /// 3 %. Such a frame gains nothing from a higher level, only costs.
    pub fn incompressible(&mut self, data: &[u8]) -> bool {
        if data.len() < 4 * SAMPLE {
            return false;
        }
        let mut out = vec![0u8; zstd::zstd_safe::compress_bound(SAMPLE)];
        [0, data.len() / 2, data.len() - SAMPLE].into_iter().all(|at| match self.probe.compress_to_buffer(&data[at..at + SAMPLE], &mut out) {
            Ok(n) => n * 100 >= SAMPLE * 97,
            Err(_) => false,
        })
    }

    pub fn frame(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.c.compress(data).map_err(ctx(|| "compressing".into()))
    }
}

/// A decoder of zstd data whose memory is bounded by [`WINDOW_LOG_MAX`]:
/// one frame (data frames) or all frames (a plain `.tar.zst`).
pub fn decoder<'a, R: BufRead + 'a>(r: R) -> io::Result<zstd::stream::read::Decoder<'a, R>> {
    let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
    d.window_log_max(WINDOW_LOG_MAX)?;
    Ok(d)
}

/// A stream encoder for metadata (the index), written as it comes.
pub fn metadata_encoder<W: Write>(out: W) -> Result<zstd::stream::write::Encoder<'static, W>> {
    zstd::stream::write::Encoder::new(out, META_LEVEL).map_err(ctx(|| "starting the index compressor".into()))
}

/// Metadata compressed in one piece (the frame table).
pub fn compress_metadata(raw: &[u8]) -> Result<Vec<u8>> {
    zstd::bulk::compress(raw, META_LEVEL).map_err(ctx(|| "compressing the frame table".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn frames_round_trip_and_windows_are_bounded() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut e = FrameEncoder::new(3, 1 << 30).unwrap();
        let f = e.frame(&data).unwrap();
        let mut out = Vec::new();
        decoder(&f[..]).unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
        // A frame made with a 128 MiB window is refused by a reader, not decoded into 128 MiB.
        let mut big = zstd::bulk::Compressor::new(1).unwrap();
        big.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27)).unwrap();
        big.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(true)).unwrap();
        let g = big.compress(&vec![7u8; 40 << 20]).unwrap();
        assert!(decoder(&g[..]).unwrap().read_to_end(&mut Vec::new()).is_err());
    }

    /// Random bytes are told apart from text and kept at the
    /// level asked for; a frame made at a higher level is smaller and
    /// reads back the same (levels mix freely in one archive).
    #[test]
    fn incompressible_frames_are_told_apart_and_levels_mix() {
        let mut e = FrameEncoder::new(3, 8 << 20).unwrap();
        let mut x = 0x9e3779b97f4a7c15u64;
        let noise: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert!(e.incompressible(&noise));
        let text: Vec<u8> = (0..1u32 << 20).map(|i| b"the quick brown fox jumps over the lazy dog "[(i % 44) as usize] ^ ((i / 4093 % 3) as u8)).collect();
        assert!(!e.incompressible(&text));
        assert!(!e.incompressible(&noise[..64 << 10]), "too small to judge: not skipped");
        let at3 = e.frame(&text).unwrap();
        e.set_level(9).unwrap();
        assert_eq!(e.level(), 9);
        let at9 = e.frame(&text).unwrap();
        assert!(at9.len() <= at3.len(), "{} > {}", at9.len(), at3.len());
        for f in [&at3, &at9] {
            let mut out = Vec::new();
            decoder(&f[..]).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, text);
        }
    }
}
