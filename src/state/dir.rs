//! The snapshot directory, format version 1:
//!
//! | file | what |
//! | --- | --- |
//! | `manifest.json` | [`Manifest`] as JSON, then a last line `sha256:<hex>` over the bytes before it |
//! | `machine.toml` | the machine file's text (its sha256 is in the manifest) |
//! | `state.json` | [`super::VmState`] bytes (its sha256 is in the manifest) |
//! | `mem-<slot>.bin` | full: the memslot's bytes, zero pages as holes (sparse); incremental: see [`MemFile`] |
//!
//! A directory is written under a temporary name beside the target and
//! renamed into place as the last step, so an existing snapshot is never
//! touched and a failed write leaves nothing behind.

use super::StateError;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The format name in every manifest.
pub const FORMAT: &str = "berth-snapshot";
/// The directory format version.
pub const FORMAT_VERSION: u32 = 1;
/// Page size of memory files and dirty bitmaps.
pub const PAGE: usize = 4096;

/// The manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// The plan digest of the machine (a restore refuses another).
    pub plan_sha256: String,
    /// Where the machine file was (relative paths in it resolve from there).
    pub machine_path: String,
    /// For an incremental snapshot: the snapshot directory it applies on.
    pub base: Option<String>,
    /// sha256 and length of `machine.toml` and `state.json`.
    pub files: BTreeMap<String, FileSum>,
    /// One memory file per memslot.
    pub memory: Vec<MemFile>,
}

/// A checksummed file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileSum {
    /// sha256, hex.
    pub sha256: String,
    /// Length in bytes.
    pub bytes: u64,
}

/// A memslot's file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemFile {
    /// Slot number.
    pub slot: u32,
    /// Guest physical address.
    pub guest_addr: u64,
    /// Slot size in bytes.
    pub size: u64,
    /// File name in the directory.
    pub file: String,
    /// `full`: the file is the slot (length `size`, holes are zero pages).
    /// `pages`: the file holds only the listed pages, packed in order.
    pub kind: String,
    /// For `pages`: page numbers (within the slot) in file order.
    pub pages: Vec<u64>,
    /// For `full`: how many non-zero pages were written.
    pub written: u64,
    /// The memory digest ([`MemDigest`]), hex: `full`, sha256 over each
    /// non-zero page as its number (u64, little-endian) then its bytes;
    /// `pages`, sha256 of the file. Absent in snapshots of older berths.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The digest of a memory file as [`MemFile::sha256`] defines it.
#[derive(Default)]
pub struct MemDigest(Sha256);

impl MemDigest {
    /// Adds page `page` (`full`) or the next packed page (`pages`, `None`).
    pub fn page(&mut self, page: Option<u64>, bytes: &[u8]) {
        if let Some(p) = page {
            self.0.update(p.to_le_bytes());
        }
        self.0.update(bytes);
    }

    /// The hex digest.
    pub fn hex(self) -> String {
        hex(&self.0.finalize())
    }
}

/// Errors reading or writing a snapshot directory.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    /// The target exists already.
    #[error("{0}: the snapshot directory exists already; nothing was written")]
    Exists(String),
    /// An I/O error while writing.
    #[error("{path}: cannot write the snapshot: {source}")]
    Write {
        /// What.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The snapshot is unreadable, damaged or of another version.
    #[error("{path}: {message}")]
    Bad {
        /// Which file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The snapshot is of another machine.
    #[error("{path}: the snapshot is of another machine (plan-sha256:{snap}, this machine's is {this})")]
    OtherMachine {
        /// Snapshot.
        path: String,
        /// Snapshot's digest.
        snap: String,
        /// This machine's digest.
        this: String,
    },
    /// The state inside does not decode.
    #[error("{path}: {source}")]
    State {
        /// Which file.
        path: String,
        /// Why.
        source: StateError,
    },
}

fn hex(b: &[u8]) -> String {
    crate::plan::dump::hex(b)
}

/// sha256 and length of `bytes`.
pub fn sum(bytes: &[u8]) -> FileSum {
    FileSum {
        sha256: hex(&Sha256::digest(bytes)),
        bytes: bytes.len() as u64,
    }
}

/// A snapshot directory being written: files go into a temporary directory
/// that [`Writer::finish`] renames to the target.
pub struct Writer {
    target: PathBuf,
    tmp: PathBuf,
    done: bool,
}

impl Writer {
    /// Starts writing the snapshot `target` (which must not exist).
    pub fn create(target: &Path) -> Result<Writer, DirError> {
        let shown = target.display().to_string();
        if target.symlink_metadata().is_ok() {
            return Err(DirError::Exists(shown));
        }
        let name = target
            .file_name()
            .ok_or_else(|| DirError::Write {
                path: shown.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no directory name"),
            })?
            .to_string_lossy()
            .into_owned();
        let tmp = target.with_file_name(format!(".{name}.partial-{}", std::process::id()));
        std::fs::create_dir(&tmp).map_err(|source| DirError::Write {
            path: tmp.display().to_string(),
            source,
        })?;
        Ok(Writer {
            target: target.to_path_buf(),
            tmp,
            done: false,
        })
    }

    fn err(&self, name: &str) -> impl Fn(std::io::Error) -> DirError + '_ {
        let path = self.target.join(name).display().to_string();
        move |source| DirError::Write {
            path: path.clone(),
            source,
        }
    }

    /// Writes a whole small file; returns its checksum.
    pub fn file(&self, name: &str, bytes: &[u8]) -> Result<FileSum, DirError> {
        let mut f = std::fs::File::create(self.tmp.join(name)).map_err(self.err(name))?;
        f.write_all(bytes).map_err(self.err(name))?;
        Ok(sum(bytes))
    }

    /// Writes a memslot as a sparse file of `mem.len()` bytes: runs of
    /// non-zero pages are written straight from guest memory, zero pages
    /// stay holes. `maybe_data(p)` false says page `p` is known to be zero
    /// without reading it (anonymous memory the guest never touched); it is
    /// then neither read nor written. Returns the number of pages written
    /// and the file's [`MemDigest`].
    pub fn full_memory(
        &self,
        name: &str,
        mem: &[u8],
        maybe_data: &dyn Fn(usize) -> bool,
    ) -> Result<(u64, String), DirError> {
        let mut digest = MemDigest::default();
        let f = std::fs::File::create(self.tmp.join(name)).map_err(self.err(name))?;
        let zero = [0u8; PAGE];
        let mut written = 0u64;
        let mut run_start: Option<usize> = None;
        let pages = mem.len() / PAGE;
        for p in 0..=pages {
            let nonzero = p < pages && maybe_data(p) && mem[p * PAGE..(p + 1) * PAGE] != zero[..];
            if nonzero {
                digest.page(Some(p as u64), &mem[p * PAGE..(p + 1) * PAGE]);
            }
            match (nonzero, run_start) {
                (true, None) => run_start = Some(p),
                (false, Some(s)) => {
                    f.write_all_at(&mem[s * PAGE..p * PAGE], (s * PAGE) as u64)
                        .map_err(self.err(name))?;
                    written += (p - s) as u64;
                    run_start = None;
                }
                _ => {}
            }
        }
        f.set_len(mem.len() as u64).map_err(self.err(name))?;
        Ok((written, digest.hex()))
    }

    /// Writes the listed pages of a memslot, packed in order; returns the
    /// file's [`MemDigest`].
    pub fn pages(&self, name: &str, mem: &[u8], pages: &[u64]) -> Result<String, DirError> {
        let f = std::fs::File::create(self.tmp.join(name)).map_err(self.err(name))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let mut digest = MemDigest::default();
        for &p in pages {
            let at = p as usize * PAGE;
            w.write_all(&mem[at..at + PAGE]).map_err(self.err(name))?;
            digest.page(None, &mem[at..at + PAGE]);
        }
        w.flush().map_err(self.err(name))?;
        Ok(digest.hex())
    }

    /// Writes the manifest, syncs, and renames the directory into place.
    pub fn finish(mut self, manifest: &Manifest) -> Result<(), DirError> {
        let mut text = serde_json::to_string_pretty(manifest).unwrap_or_default();
        text.push('\n');
        let digest = hex(&Sha256::digest(text.as_bytes()));
        text.push_str(&format!("sha256:{digest}\n"));
        let mut f =
            std::fs::File::create(self.tmp.join("manifest.json")).map_err(self.err("manifest.json"))?;
        f.write_all(text.as_bytes()).map_err(self.err("manifest.json"))?;
        f.sync_all().map_err(self.err("manifest.json"))?;
        std::fs::rename(&self.tmp, &self.target).map_err(|source| DirError::Write {
            path: self.target.display().to_string(),
            source,
        })?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}

/// A snapshot directory opened for reading, its manifest checked.
pub struct Reader {
    /// The directory.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl Reader {
    /// Opens `dir` and checks its manifest's checksum, format and version.
    pub fn open(dir: &Path) -> Result<Reader, DirError> {
        let path = dir.join("manifest.json");
        let bad = |message: String| DirError::Bad {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            bad(if dir.is_dir() {
                format!("cannot read the snapshot manifest: {e}")
            } else {
                format!("not a snapshot directory: {e}")
            })
        })?;
        let body_end = text
            .trim_end_matches('\n')
            .rfind('\n')
            .map(|i| i + 1)
            .ok_or_else(|| bad("truncated: no checksum line".into()))?;
        let (body, last) = text.split_at(body_end);
        let want = last
            .trim()
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("truncated: no checksum line".into()))?;
        if hex(&Sha256::digest(body.as_bytes())) != want {
            return Err(bad("corrupted: the manifest does not match its checksum".into()));
        }
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let head: Head = serde_json::from_str(body).map_err(|e| bad(format!("corrupted manifest: {e}")))?;
        if head.format != FORMAT {
            return Err(bad(format!("not a berth snapshot (format {:?})", head.format)));
        }
        if head.version != FORMAT_VERSION {
            return Err(bad(format!(
                "snapshot format version {} (this berth reads version {FORMAT_VERSION})",
                head.version
            )));
        }
        let manifest: Manifest =
            serde_json::from_str(body).map_err(|e| bad(format!("corrupted manifest: {e}")))?;
        Ok(Reader {
            dir: dir.to_path_buf(),
            manifest,
        })
    }

    /// Reads a small file and checks it against the manifest.
    pub fn file(&self, name: &str) -> Result<Vec<u8>, DirError> {
        let path = self.dir.join(name);
        let bad = |message: String| DirError::Bad {
            path: path.display().to_string(),
            message,
        };
        let want = self
            .manifest
            .files
            .get(name)
            .ok_or_else(|| bad("not listed in the manifest".into()))?;
        let bytes = std::fs::read(&path).map_err(|e| bad(format!("cannot read: {e}")))?;
        let got = sum(&bytes);
        if got.bytes != want.bytes {
            return Err(bad(format!(
                "truncated or damaged: {} bytes, the manifest says {}",
                got.bytes, want.bytes
            )));
        }
        if got.sha256 != want.sha256 {
            return Err(bad("corrupted: the file does not match its checksum".into()));
        }
        Ok(bytes)
    }

    /// Opens slot `slot`'s memory file and checks its length.
    pub fn memory(&self, slot: u32) -> Result<(std::fs::File, MemFile), DirError> {
        let m = self
            .manifest
            .memory
            .iter()
            .find(|m| m.slot == slot)
            .cloned()
            .ok_or_else(|| DirError::Bad {
                path: self.dir.display().to_string(),
                message: format!("the snapshot has no memory for memslot {slot}"),
            })?;
        let path = self.dir.join(&m.file);
        let bad = |message: String| DirError::Bad {
            path: path.display().to_string(),
            message,
        };
        let f = std::fs::File::open(&path).map_err(|e| bad(format!("missing memory file: {e}")))?;
        let len = f.metadata().map_err(|e| bad(format!("cannot read: {e}")))?.len();
        let want = if m.kind == "full" {
            m.size
        } else {
            m.pages.len() as u64 * PAGE as u64
        };
        if len != want {
            return Err(bad(format!(
                "truncated or damaged memory file: {len} bytes, the manifest says {want}"
            )));
        }
        Ok((f, m))
    }
}

/// Checks a `full` memory file against its digest, reading only its data
/// (`SEEK_DATA`/`SEEK_HOLE`; a file system without holes reads zeros,
/// which are skipped like holes): the cost is the non-zero pages, not the
/// slot's size. A snapshot without a digest passes.
pub fn verify_full(f: &std::fs::File, m: &MemFile, path: &Path) -> Result<(), DirError> {
    use std::os::fd::AsRawFd;
    let Some(want) = &m.sha256 else {
        return Ok(());
    };
    let bad = |message: String| DirError::Bad {
        path: path.display().to_string(),
        message,
    };
    let mut digest = MemDigest::default();
    let zero = [0u8; PAGE];
    let mut page = vec![0u8; PAGE];
    let mut at: i64 = 0;
    let len = m.size as i64;
    while at < len {
        // SAFETY: lseek on an fd this function borrows; no memory is passed.
        let data = unsafe { libc::lseek(f.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data after `at`
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(f.as_raw_fd(), data, libc::SEEK_HOLE) }.min(len);
        let mut p = data / PAGE as i64;
        while p * (PAGE as i64) < hole {
            f.read_exact_at(&mut page, (p * PAGE as i64) as u64)
                .map_err(|e| bad(format!("cannot read page {p}: {e}")))?;
            if page[..] != zero[..] {
                digest.page(Some(p as u64), &page);
            }
            p += 1;
        }
        at = p * PAGE as i64;
    }
    if &digest.hex() != want {
        return Err(bad("corrupted: the memory does not match its checksum".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT.into(),
            version: FORMAT_VERSION,
            plan_sha256: "ab".into(),
            machine_path: "m.toml".into(),
            base: None,
            files: BTreeMap::new(),
            memory: Vec::new(),
        }
    }

    #[test]
    fn write_then_read_sparse() {
        let base = std::env::temp_dir().join(format!("berth-dir-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let target = base.join("snap");
        let w = Writer::create(&target).unwrap();
        let mut mem = vec![0u8; 8 * PAGE];
        mem[PAGE + 5] = 1;
        mem[6 * PAGE] = 2;
        mem[7 * PAGE + 4095] = 3;
        let (written, digest) = w.full_memory("mem-0.bin", &mem, &|_| true).unwrap();
        assert_eq!(written, 3);
        let mut m = manifest();
        m.files
            .insert("state.json".into(), w.file("state.json", b"{}").unwrap());
        m.memory.push(MemFile {
            slot: 0,
            guest_addr: 0,
            size: mem.len() as u64,
            file: "mem-0.bin".into(),
            kind: "full".into(),
            pages: Vec::new(),
            written: 3,
            sha256: Some(digest),
        });
        w.finish(&m).unwrap();
        assert!(matches!(Writer::create(&target), Err(DirError::Exists(_))));
        let r = Reader::open(&target).unwrap();
        assert_eq!(r.file("state.json").unwrap(), b"{}");
        let (f, m) = r.memory(0).unwrap();
        let mut back = vec![0u8; mem.len()];
        f.read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, mem);
        let path = target.join("mem-0.bin");
        verify_full(&f, &m, &path).unwrap();
        // One changed byte in a written page, then a byte in a hole.
        let rw = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        rw.write_all_at(&[0x41], (6 * PAGE + 1) as u64).unwrap();
        let e = verify_full(&f, &m, &path).unwrap_err().to_string();
        assert!(e.contains("does not match its checksum"), "{e}");
        rw.write_all_at(&[0], (6 * PAGE + 1) as u64).unwrap();
        verify_full(&f, &m, &path).unwrap();
        rw.write_all_at(&[9], (3 * PAGE) as u64).unwrap();
        assert!(verify_full(&f, &m, &path).is_err());
        // Damage: the state file, then the manifest.
        std::fs::write(target.join("state.json"), b"[]").unwrap();
        assert!(r.file("state.json").unwrap_err().to_string().contains("checksum"));
        std::fs::write(target.join("state.json"), b"{").unwrap();
        assert!(r
            .file("state.json")
            .unwrap_err()
            .to_string()
            .contains("truncated"));
        let text = std::fs::read_to_string(target.join("manifest.json")).unwrap();
        std::fs::write(target.join("manifest.json"), text.replace("\"ab\"", "\"cd\"")).unwrap();
        assert!(Reader::open(&target)
            .err()
            .unwrap()
            .to_string()
            .contains("checksum"));
        std::fs::write(target.join("manifest.json"), &text[..text.len() / 2]).unwrap();
        assert!(Reader::open(&target).is_err());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
