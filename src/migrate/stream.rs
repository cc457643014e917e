//! The migration stream, format version 4 (README "Migration stream").
//!
//! Both directions start with [`MAGIC`] and the version (u32, little
//! endian), then carry sections:
//!
//! | bytes | field |
//! | --- | --- |
//! | 1 | kind ([`Kind`]) |
//! | 4 | payload length, u32 LE (at most [`MAX_SECTION`]) |
//! | n | payload |
//! | 4 | CRC-32C (`migrate::crc32c`) over kind, length and payload, u32 LE |
//!
//! Source → target: `hello` (JSON [`Hello`]), `pages` (records, below) any
//! number of times, `state` (the [`crate::state::VmState`] bytes) once,
//! more `pages` (the last dirty pages, sent after the state so the target
//! parses it meanwhile; it loads it only after `end`), `end` (JSON
//! [`End`]), and after the target's `ack`, `commit` (empty). After each
//! pass while the guest runs, `sync` (empty): the target answers `synced`
//! (empty) once it has applied everything before it. Version 1 had no pages
//! after the state, version 2 no `sync`.
//! Target → source: `reply` (JSON [`Reply`]: accepted or why not), a
//! `synced` per `sync`, then `ack` (JSON [`Reply`]: the state is loaded,
//! the guest runs once the source commits).
//!
//! A `pages` payload is a run of records: slot (u32 LE), flags (u32 LE,
//! bit 0 = zero page, no data follows), page number within the slot (u64
//! LE), then 4096 bytes unless the page is zero. The first pass over
//! memory leaves zero pages out altogether (the target's memory starts
//! zeroed); a page dirtied later that is zero by then is sent as a zero
//! record.

use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The first bytes in each direction.
pub const MAGIC: &[u8; 8] = b"BERTHMIG";
/// The stream format version.
pub const VERSION: u32 = 4;
/// The largest section payload accepted (a `pages` section is at most
/// [`PAGES_PER_SECTION`] records).
pub const MAX_SECTION: usize = 16 << 20;
/// Page size.
pub const PAGE: usize = 4096;
/// Pages per `pages` section.
pub const PAGES_PER_SECTION: usize = 256;
/// Bytes of a record's header.
pub const RECORD_HEAD: usize = 16;
/// Record flag: the page is all zeros (no data follows).
pub const ZERO_PAGE: u32 = 1;

/// Whether a page is all zeros (a slice comparison: memcmp).
pub fn is_zero(page: &[u8]) -> bool {
    const ZEROS: [u8; PAGE] = [0; PAGE];
    page.chunks(PAGE).all(|c| c == &ZEROS[..c.len()])
}

/// Section kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Source: who it is ([`Hello`]).
    Hello = 1,
    /// Target: accepted or refused ([`Reply`]).
    Reply = 2,
    /// Source: page records.
    Pages = 3,
    /// Source: the VM state.
    State = 4,
    /// Source: no more pages or state ([`End`]).
    End = 5,
    /// Target: the state is loaded ([`Reply`]).
    Ack = 6,
    /// Source: the source has stopped for good; the target may run.
    Commit = 7,
    /// Source: answer once everything before this is applied (empty).
    Sync = 8,
    /// Target: everything before the `sync` is applied (empty).
    Synced = 9,
    /// Source: each vCPU's CPUID ([`Cpuid`]), before the first pages.
    Cpuid = 10,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Hello,
            2 => Kind::Reply,
            3 => Kind::Pages,
            4 => Kind::State,
            5 => Kind::End,
            6 => Kind::Ack,
            7 => Kind::Commit,
            8 => Kind::Sync,
            9 => Kind::Synced,
            10 => Kind::Cpuid,
            _ => return None,
        })
    }
}

/// What the source says first.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Hello {
    /// The source's plan digest (the target refuses another).
    pub plan_sha256: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memslots: (slot, guest address, size).
    pub slots: Vec<(u32, u64, u64)>,
}

/// The target's answer to `hello`, and its `ack`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Reply {
    /// Accepted / loaded.
    pub ok: bool,
    /// Why not.
    #[serde(default)]
    pub error: Option<String>,
}

/// One vCPU's CPUID table, as KVM_SET_CPUID2 takes it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VcpuCpuid {
    /// The entries (hex of `struct kvm_cpuid_entry2` each, as in the state).
    #[serde(with = "crate::state::hexpod::vec")]
    pub entries: Vec<kvm_bindings::kvm_cpuid_entry2>,
}

/// The source's vCPUs' CPUID in `cpuid`, as berth set it (berth never
/// changes it while the guest runs): the target sets it before the pause,
/// and sets the state's copy inside the downtime only when KVM's view after
/// the load differs from it (`state::vcpu::load`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Cpuid {
    /// By vCPU index.
    pub vcpus: Vec<VcpuCpuid>,
}

/// The source's summary in `end`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct End {
    /// Rounds of dirty pages sent while the guest ran.
    pub rounds: u32,
    /// Page records sent, all rounds.
    pub pages: u64,
}

/// Stream errors: the peer broke the format, or the connection failed.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading or writing the connection.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The bytes are not a berth migration stream of this version.
    #[error("not a berth migration stream: {0}")]
    Garbage(String),
    /// A section does not match its checksum.
    #[error("section {0:?} does not match its checksum")]
    Checksum(Kind),
    /// A section that does not belong here.
    #[error("unexpected section {got:?} (expected {want})")]
    Unexpected {
        /// Got.
        got: Kind,
        /// Wanted.
        want: &'static str,
    },
    /// A page record outside the machine's memory, or a truncated one.
    #[error("bad page record: {0}")]
    BadPage(String),
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> StreamError {
    move |source| {
        let source = if source.kind() == std::io::ErrorKind::UnexpectedEof {
            std::io::Error::new(source.kind(), "the other side closed the connection")
        } else {
            source
        };
        StreamError::Io { what, source }
    }
}

/// Writes the stream's opening bytes.
pub fn write_magic(w: &mut impl Write) -> Result<(), StreamError> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&VERSION.to_le_bytes());
    w.write_all(&b).map_err(io("sending the stream header"))
}

/// Reads and checks the stream's opening bytes.
pub fn read_magic(r: &mut impl Read) -> Result<(), StreamError> {
    let mut b = [0u8; 12];
    r.read_exact(&mut b).map_err(io("reading the stream header"))?;
    if &b[..8] != MAGIC {
        return Err(StreamError::Garbage(format!("header {:02x?}", &b[..8])));
    }
    let v = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if v != VERSION {
        return Err(StreamError::Garbage(format!(
            "stream version {v} (this berth speaks version {VERSION})"
        )));
    }
    Ok(())
}

fn checksum(kind: Kind, payload: &[u8]) -> [u8; 4] {
    let len = (payload.len() as u32).to_le_bytes();
    super::crc32c::crc32c(&[&[kind as u8], &len, payload]).to_le_bytes()
}

/// Writes one section; returns the bytes written.
pub fn write_section(w: &mut impl Write, kind: Kind, payload: &[u8]) -> Result<u64, StreamError> {
    let mut head = [0u8; 5];
    head[0] = kind as u8;
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let sum = checksum(kind, payload);
    // In one write where the writer takes it (writev on a connection): a
    // section leaves whole, so a peer waiting for it wakes once, not once
    // per part (a wake-up costs 50-100 µs on some hosts, and the ack and the
    // commit are inside the guest's downtime).
    let mut parts = [
        std::io::IoSlice::new(&head),
        std::io::IoSlice::new(payload),
        std::io::IoSlice::new(&sum),
    ];
    let mut left = &mut parts[..];
    while !left.is_empty() {
        match w.write_vectored(left) {
            Ok(0) => return Err(io("sending")(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => std::io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("sending")(e)),
        }
    }
    Ok((head.len() + payload.len() + 4) as u64)
}

/// Writes a section whose payload is `value` as JSON.
pub fn write_json<T: Serialize>(w: &mut impl Write, kind: Kind, value: &T) -> Result<u64, StreamError> {
    write_section(w, kind, &serde_json::to_vec(value).unwrap_or_default())
}

/// Reads one section, checking its length bound and checksum.
pub fn read_section(r: &mut impl Read) -> Result<(Kind, Vec<u8>), StreamError> {
    let mut head = [0u8; 5];
    r.read_exact(&mut head).map_err(io("receiving"))?;
    let kind = Kind::from_u8(head[0])
        .ok_or_else(|| StreamError::Garbage(format!("unknown section kind {}", head[0])))?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_SECTION {
        return Err(StreamError::Garbage(format!(
            "section of {len} bytes (at most {MAX_SECTION})"
        )));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).map_err(io("receiving"))?;
    let mut sum = [0u8; 4];
    r.read_exact(&mut sum).map_err(io("receiving"))?;
    if sum != checksum(kind, &payload) {
        return Err(StreamError::Checksum(kind));
    }
    Ok((kind, payload))
}

/// Reads a section that must be `want`, with a JSON payload.
pub fn read_json<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    want: Kind,
    name: &'static str,
) -> Result<T, StreamError> {
    let payload = read_kind(r, want, name)?;
    parse_json(&payload, name)
}

/// A section's JSON payload (the section called `name` in the error).
pub fn parse_json<T: for<'de> Deserialize<'de>>(
    payload: &[u8],
    name: &'static str,
) -> Result<T, StreamError> {
    serde_json::from_slice(payload).map_err(|e| StreamError::Garbage(format!("{name}: {e}")))
}

/// Reads a section that must be of kind `want` (called `name` in the
/// error); returns its payload.
pub fn read_kind(r: &mut impl Read, want: Kind, name: &'static str) -> Result<Vec<u8>, StreamError> {
    let (kind, payload) = read_section(r)?;
    if kind != want {
        return Err(StreamError::Unexpected {
            got: kind,
            want: name,
        });
    }
    Ok(payload)
}

/// Builds `pages` sections: records are added one by one; a full section
/// goes out through [`PageBatch::flush`].
#[derive(Default)]
pub struct PageBatch {
    buf: Vec<u8>,
    count: usize,
}

impl PageBatch {
    /// Adds a record; `data` is the page (a zero page is sent without it).
    /// Returns whether the section is full.
    pub fn push(&mut self, slot: u32, page: u64, data: &[u8]) -> bool {
        let zero = is_zero(data);
        self.buf.extend_from_slice(&slot.to_le_bytes());
        self.buf
            .extend_from_slice(&(if zero { ZERO_PAGE } else { 0 }).to_le_bytes());
        self.buf.extend_from_slice(&page.to_le_bytes());
        if !zero {
            self.buf.extend_from_slice(data);
        }
        self.count += 1;
        self.count >= PAGES_PER_SECTION
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sends the batch as one section (nothing when empty); returns bytes.
    pub fn flush(&mut self, w: &mut impl Write) -> Result<u64, StreamError> {
        if self.count == 0 {
            return Ok(0);
        }
        let n = write_section(w, Kind::Pages, &self.buf)?;
        self.buf.clear();
        self.count = 0;
        Ok(n)
    }
}

/// One decoded page record: slot, page number, data (`None`: zero page).
pub type Record<'a> = (u32, u64, Option<&'a [u8]>);

/// Decodes a `pages` payload.
pub fn records(payload: &[u8]) -> Result<Vec<Record<'_>>, StreamError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < payload.len() {
        let head = payload
            .get(at..at + RECORD_HEAD)
            .ok_or_else(|| StreamError::BadPage("truncated record header".into()))?;
        let slot = u32::from_le_bytes(head[0..4].try_into().unwrap_or_default());
        let flags = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
        let page = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
        at += RECORD_HEAD;
        if flags & !ZERO_PAGE != 0 {
            return Err(StreamError::BadPage(format!("unknown flags {flags:#x}")));
        }
        if flags & ZERO_PAGE != 0 {
            out.push((slot, page, None));
        } else {
            let data = payload
                .get(at..at + PAGE)
                .ok_or_else(|| StreamError::BadPage("truncated page".into()))?;
            at += PAGE;
            out.push((slot, page, Some(data)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that counts its calls and takes at most `max` bytes each.
    #[derive(Default)]
    struct Counting {
        bytes: Vec<u8>,
        calls: usize,
        max: usize,
    }

    impl Write for Counting {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.write_vectored(&[std::io::IoSlice::new(buf)])
        }
        fn write_vectored(&mut self, bufs: &[std::io::IoSlice<'_>]) -> std::io::Result<usize> {
            self.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.max - n);
                self.bytes.extend_from_slice(&b[..take]);
                n += take;
            }
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A section goes out in one write where the writer takes it all (the
    /// peer wakes once), and whole through writers that take a few bytes.
    #[test]
    fn a_section_is_one_write_and_survives_short_writes() {
        for (max, calls) in [(usize::MAX, Some(1)), (3, None), (1, None)] {
            let mut w = Counting {
                max,
                ..Default::default()
            };
            let n = write_section(&mut w, Kind::State, b"state bytes").unwrap();
            assert_eq!(n as usize, w.bytes.len());
            if let Some(c) = calls {
                assert_eq!(w.calls, c, "max {max}");
            }
            let (k, p) = read_section(&mut &w.bytes[..]).unwrap();
            assert_eq!((k, &p[..]), (Kind::State, &b"state bytes"[..]), "max {max}");
            let mut w = Counting {
                max,
                ..Default::default()
            };
            write_section(&mut w, Kind::Commit, &[]).unwrap();
            assert_eq!(read_section(&mut &w.bytes[..]).unwrap(), (Kind::Commit, vec![]));
        }
    }

    #[test]
    fn sections_round_trip_and_damage() {
        let mut b = Vec::new();
        write_magic(&mut b).unwrap();
        write_json(
            &mut b,
            Kind::Reply,
            &Reply {
                ok: true,
                error: None,
            },
        )
        .unwrap();
        let mut batch = PageBatch::default();
        let page = vec![7u8; PAGE];
        batch.push(0, 3, &page);
        batch.push(1, 9, &[0u8; PAGE]);
        batch.flush(&mut b).unwrap();
        assert!(batch.is_empty());
        let mut r = &b[..];
        read_magic(&mut r).unwrap();
        let reply: Reply = read_json(&mut r, Kind::Reply, "reply").unwrap();
        assert!(reply.ok);
        let (k, p) = read_section(&mut r).unwrap();
        assert_eq!(k, Kind::Pages);
        assert_eq!(p.len(), 2 * RECORD_HEAD + PAGE);
        let recs = records(&p).unwrap();
        assert_eq!(recs, vec![(0, 3, Some(&page[..])), (1, 9, None)]);
        assert!(records(&p[..p.len() - 1]).is_err());
        // A flipped byte fails the checksum; garbage fails the header.
        let mut bad = b.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        let mut r = &bad[12..];
        let _ = read_section(&mut r).unwrap();
        assert!(matches!(
            read_section(&mut r),
            Err(StreamError::Checksum(Kind::Pages))
        ));
        assert!(matches!(
            read_magic(&mut &b"GET / HTTP/1.1\r\n"[..]),
            Err(StreamError::Garbage(_))
        ));
        let mut other = b.clone();
        other[8] = 2;
        assert!(read_magic(&mut &other[..])
            .unwrap_err()
            .to_string()
            .contains("version 2"));
        // An absurd length is refused before anything is allocated.
        let huge = [3u8, 0xff, 0xff, 0xff, 0xff];
        assert!(matches!(
            read_section(&mut &huge[..]),
            Err(StreamError::Garbage(_))
        ));
    }
}
