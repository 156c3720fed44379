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
pub struct FrameEncoder(zstd::bulk::Compressor<'static>);

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
        Ok(FrameEncoder(c))
    }

    pub fn frame(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        self.0.compress(data).map_err(ctx(|| "compressing".into()))
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
}
