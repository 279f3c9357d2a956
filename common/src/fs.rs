//! Bounded file reads: every config, keys, certificate, password and artifact file a
//! binary reads goes through here, so none of them can make a process read without end.
//! A leaf module (std only), imported by config, etcd and TLS alike.

use std::{
    io::{self, Read},
    path::Path,
};

/// The largest config, keys, certificate or password file any binary reads (16 MiB). A
/// path that names something endless (`/dev/zero`, a FIFO fed by a runaway writer) is an
/// error instead of a process that reads until it runs out of memory.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// `std::fs::read`, but refusing files over [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the limit of {MAX_FILE_BYTES} bytes"),
        ));
    }
    Ok(bytes)
}

/// `std::fs::read_to_string`, with [`read_file`]'s bound.
pub fn read_text(path: &Path) -> io::Result<String> {
    String::from_utf8(read_file(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_files_are_refused_not_read_forever() {
        let err = read_file(Path::new("/dev/zero")).expect_err("endless");
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn text_must_be_utf8() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("latin1");
        std::fs::write(&file, [0xff, 0xfe]).expect("write");
        let err = read_text(&file).expect_err("not UTF-8");
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}
