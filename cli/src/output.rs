//! Output files the program writes while a guest runs (`--trace-exits FILE`, `--serial
//! file:PATH`), opened so that none can hold the program before the run starts.
//!
//! A regular file is created (or truncated) at once, so that a path that cannot be
//! written is refused before the guest runs, with the path named. A FIFO is opened on
//! first write instead, on the thread that writes it: opening a FIFO waits for a reader,
//! and that wait belongs where the run's deadline holds (the writer thread, whose output
//! the run waits for only until `--timeout`), not before the run.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// A file written as the guest runs.
pub enum OutputFile {
    /// Created and open.
    File(File),
    /// A FIFO, opened by the first write.
    Fifo {
        /// Its path.
        path: PathBuf,
        /// Open once written to.
        file: Option<File>,
    },
}

impl OutputFile {
    /// `path` for writing: a FIFO as it is, anything else created or truncated now.
    pub fn create(path: &Path) -> io::Result<OutputFile> {
        match std::fs::metadata(path) {
            Ok(meta) if meta.file_type().is_fifo() => Ok(OutputFile::Fifo {
                path: path.to_path_buf(),
                file: None,
            }),
            _ => File::create(path).map(OutputFile::File),
        }
    }

    fn file(&mut self) -> io::Result<&mut File> {
        match self {
            OutputFile::File(file) => Ok(file),
            OutputFile::Fifo { path, file } => match file {
                Some(file) => Ok(file),
                None => Ok(file.insert(File::options().write(true).open(path)?)),
            },
        }
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file()?.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            OutputFile::Fifo { file: None, .. } => Ok(()),
            _ => self.file()?.flush(),
        }
    }
}
