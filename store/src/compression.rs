//! Decompression by Nix's method names (`none`, `xz`, `bzip2`, `gzip`,
//! `zstd`),
//! as a stream: what a download or a binary cache's `Compression:` says
//! is undone while it is read; or the method found by a file's first
//! bytes, as libarchive finds it for Nix's tarballs.

use std::io::Read;

/// A compression method hermetic cannot undo (Nix's text).
#[derive(Debug, thiserror::Error)]
#[error("unknown compression method '{0}'")]
pub struct UnknownCompression(pub String);

/// `input` decompressed by `method`.
pub fn decompressor<'a>(
    method: &str,
    input: impl Read + Send + 'a,
) -> Result<Box<dyn Read + Send + 'a>, UnknownCompression> {
    Ok(match method {
        "none" | "" => Box::new(input),
        "xz" => Box::new(liblzma::read::XzDecoder::new_multi_decoder(input)),
        "bzip2" => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        "gzip" => Box::new(flate2::read::MultiGzDecoder::new(input)),
        "zstd" => Box::new(Zstd::Header(Some(input))),
        other => return Err(UnknownCompression(other.to_owned())),
    })
}

/// A zstd stream, its frame header read at the first read (so that a
/// stream that fails, fails when it is read, as the other methods do).
/// One frame, as Nix writes it.
enum Zstd<R: Read> {
    Header(Option<R>),
    Frame(Box<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>),
}

impl<R: Read> Read for Zstd<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Zstd::Header(input) = self {
            let input = input
                .take()
                .ok_or_else(|| std::io::Error::other("a zstd stream whose header failed"))?;
            let decoder = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| std::io::Error::other(format!("zstd: {e}")))?;
            *self = Zstd::Frame(Box::new(decoder));
        }
        match self {
            Zstd::Frame(decoder) => decoder.read(buf),
            Zstd::Header(_) => unreachable!("the header was read above"),
        }
    }
}

/// The method a compressed file's first bytes name; `none` for anything
/// else.
pub fn sniff(header: &[u8]) -> &'static str {
    if header.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        "xz"
    } else if header.starts_with(b"BZh") {
        "bzip2"
    } else if header.starts_with(&[0x1f, 0x8b]) {
        "gzip"
    } else if header.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "zstd"
    } else {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn each_method_gives_back_what_was_compressed() {
        let text = b"the same bytes, compressed and back".repeat(50);
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&text).unwrap();
        let xz = xz.finish().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&text).unwrap();
        let bz = bz.finish().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        let gz = gz.finish().unwrap();
        let zstd = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        for (method, data) in [
            ("none", text.clone()),
            ("xz", xz),
            ("bzip2", bz),
            ("gzip", gz),
            ("zstd", zstd),
        ] {
            assert_eq!(sniff(&data), method);
            let mut back = Vec::new();
            decompressor(method, &data[..])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, text, "{method}");
        }
        assert_eq!(
            decompressor("lz4", &b""[..]).err().unwrap().to_string(),
            "unknown compression method 'lz4'"
        );
    }
}
