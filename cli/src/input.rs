//! Reading input files with a bound: the size is checked against what can be used
//! before anything is read, so no input makes the program allocate more than the bound.
//!
//! A regular file larger than the bound is refused from its metadata. A character or
//! block device (`/dev/zero`, `/dev/urandom`, a disk) is refused: it is no file to load.
//! A pipe, a FIFO or a socket (`<(...)`, `/dev/stdin` on a pipe) is read up to the bound,
//! and refused if it holds more.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// `bytes` as a short size ("256 MiB", "4 KiB", "100 bytes").
pub fn size_text(bytes: u64) -> String {
    for (shift, unit) in [(30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if bytes >= 1 << shift && bytes % (1 << shift) == 0 {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// Read all of `reader`, refusing more than `limit` bytes; `too_big` makes the error.
pub fn read_bounded(
    reader: impl Read,
    limit: u64,
    too_big: impl FnOnce() -> String,
) -> std::io::Result<Result<Vec<u8>, String>> {
    let mut data = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Ok(Err(too_big()));
    }
    Ok(Ok(data))
}

/// Read the file at `path`, at most `limit` bytes. `what` names it in errors ("kernel",
/// "module", "state"); `bound` says what the limit is, with its size ("the guest's
/// 256 MiB of RAM (--memory)").
pub fn read_file(path: &Path, what: &str, limit: u64, bound: &str) -> Result<Vec<u8>, String> {
    let name = path.display();
    let cannot = |e: std::io::Error| format!("cannot read {what} '{name}': {e}");
    let meta = std::fs::metadata(path).map_err(cannot)?;
    let kind = meta.file_type();
    let too_big = |size: String| format!("{what} '{name}' {size}, more than {bound}");
    if kind.is_dir() {
        return Err(format!("cannot read {what} '{name}': it is a directory"));
    }
    if kind.is_char_device() || kind.is_block_device() {
        let device = if kind.is_char_device() {
            "a character device"
        } else {
            "a block device"
        };
        return Err(format!(
            "cannot read {what} '{name}': it is {device}, not a file"
        ));
    }
    if kind.is_file() && meta.len() > limit {
        return Err(too_big(format!("is {} bytes", meta.len())));
    }
    let file = File::open(path).map_err(cannot)?;
    // A regular file may grow between the check and the read: the read is bounded too.
    read_bounded(file, limit, || too_big(String::from("holds more"))).map_err(cannot)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_units() {
        assert_eq!(size_text(256 << 20), "256 MiB");
        assert_eq!(size_text(3 << 30), "3 GiB");
        assert_eq!(size_text(4096), "4 KiB");
        assert_eq!(size_text(100), "100 bytes");
        assert_eq!(size_text((1 << 20) + 1), "1048577 bytes");
    }

    #[test]
    fn bounded_reads_refuse_what_is_larger() {
        let r = read_bounded(&[7u8; 10][..], 10, || "big".into()).unwrap();
        assert_eq!(r, Ok(vec![7; 10]));
        let r = read_bounded(&[7u8; 11][..], 10, || "big".into()).unwrap();
        assert_eq!(r, Err("big".into()));
        // An endless source stops at the bound.
        let r = read_bounded(std::io::repeat(1), 1 << 20, || "endless".into()).unwrap();
        assert_eq!(r, Err("endless".into()));
    }

    #[test]
    fn devices_directories_and_large_files_are_refused_before_reading() {
        let e = read_file(Path::new("/dev/zero"), "module", 1 << 20, "RAM").unwrap_err();
        assert_eq!(
            e,
            "cannot read module '/dev/zero': it is a character device, not a file"
        );
        let e = read_file(Path::new("/"), "kernel", 1 << 20, "RAM").unwrap_err();
        assert!(e.contains("it is a directory"), "{e}");
        let dir = std::env::temp_dir().join(format!("opsvisor-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let big = dir.join("big.bin");
        let f = File::create(&big).unwrap();
        // Sparse: 8 GiB of size, no blocks; refused from the metadata alone.
        f.set_len(8 << 30).unwrap();
        let e = read_file(&big, "module", 256 << 20, "the guest's 256 MiB of RAM").unwrap_err();
        assert!(
            e.ends_with("is 8589934592 bytes, more than the guest's 256 MiB of RAM"),
            "{e}"
        );
        std::fs::write(&big, b"small").unwrap();
        assert_eq!(read_file(&big, "module", 5, "x").unwrap(), b"small");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
