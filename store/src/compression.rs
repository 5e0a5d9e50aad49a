//! Decompression by Nix's method names (`none`, `xz`, `bzip2`, `gzip`),
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
        other => return Err(UnknownCompression(other.to_owned())),
    })
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
        for (method, data) in [
            ("none", text.clone()),
            ("xz", xz),
            ("bzip2", bz),
            ("gzip", gz),
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
