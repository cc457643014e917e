//! The source side of a live migration: pre-copy on KVM's dirty log.
//!
//! 1. Connect, `hello` (plan digest, vCPUs, memslots); the target answers
//!    before anything else happens, so a refusal costs the guest nothing.
//! 2. Dirty logging on for every writable memslot (KVM_SET_USER_MEMORY_REGION
//!    on the live slot with KVM_MEM_LOG_DIRTY_PAGES), whatever the plan's
//!    `dirty_log`; then every non-zero page, while the guest runs.
//! 3. Rounds: read the dirty log, estimate the downtime of sending those
//!    pages at the observed bandwidth; send them and repeat until the
//!    estimate fits [`Options::max_downtime_ms`] or
//!    [`Options::max_rounds`] is reached.
//! 4. Pause, send the VM state (the target parses it meanwhile), the last
//!    dirty pages and `end`; wait for the target's `ack`, send `commit`. From `commit` on the guest lives on the
//!    target; before it, any failure resumes the guest here.
//!
//! Logging is turned off again for the slots whose plan has it off,
//! whatever the result.

use super::stream::{self, End, Hello, Kind, PageBatch, Reply, PAGE, RECORD_HEAD};
use super::{Address, Conn, MigrateError, Options};
use crate::state::dirty;
use crate::state::take::Slot;
use crate::state::VmState;
use kvm_ioctls::VmFd;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// What the migration asks of the running VM (the run loop's controller).
pub trait Vm {
    /// Parks every vCPU.
    fn pause(&mut self) -> Result<(), String>;
    /// Lets them run again (after a failure).
    fn resume(&mut self);
    /// The whole state of the paused VM (serial output flushed first).
    fn state(&mut self) -> Result<VmState, String>;
    /// A reason to give up (a signal), checked between sections.
    fn aborted(&self) -> Option<String>;
    /// Pages the migration read from KVM's dirty log of `slot` (so an
    /// incremental snapshot after a failed migration misses nothing).
    fn note_dirty(&mut self, slot: u32, pages: &[u64]);
}

/// The machine as the migration sees it.
pub struct Machine<'a> {
    /// The plan digest.
    pub plan_sha256: &'a str,
    /// vCPUs.
    pub vcpus: u32,
    /// The VM fd.
    pub fd: &'a VmFd,
    /// Guest memory.
    pub mem: &'a GuestMemoryMmap,
    /// Memslots.
    pub slots: &'a [Slot],
    /// Each vCPU's CPUID as set (empty: unknown, not sent ahead).
    pub cpuid: &'a [Vec<kvm_bindings::kvm_cpuid_entry2>],
}

/// A finished migration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Migrated {
    /// Rounds of dirty pages sent while the guest ran (after the first pass).
    pub rounds: u32,
    /// Page records sent.
    pub pages: u64,
    /// Bytes sent.
    pub bytes: u64,
    /// Pages sent while paused.
    pub last_pages: u64,
    /// The downtime estimated before pausing, ms.
    pub estimated_downtime_ms: f64,
    /// From pause to the target's ack, ms.
    pub downtime_ms: f64,
    /// From connect to commit, ms.
    pub total_ms: f64,
}

/// Under the budget, another round is worth it while it leaves fewer than
/// this share of the fewest dirty pages a round has left so far.
const SHRINK: f64 = 0.75;

/// Under the budget, rounds in a row that may leave no fewer dirty pages
/// (a round slowed down by a busy host) before the guest is paused.
const STALLS: u32 = 2;

/// Bandwidth assumed before anything was sent (bytes/s).
const FIRST_GUESS: f64 = 100e6;

/// When the rounds end (step 3 of the module comment).
#[derive(Default)]
struct Rounds {
    /// The fewest dirty pages a round has left so far (`None`: no round yet).
    best: Option<u64>,
    /// Rounds in a row that did not leave clearly fewer.
    stalls: u32,
}

impl Rounds {
    /// Whether to pause now, with `n` pages dirty and an estimate that
    /// `fits` the budget or not.
    fn last(&mut self, n: u64, fits: bool) -> bool {
        if self.best.is_none_or(|b| (n as f64) < b as f64 * SHRINK) {
            self.stalls = 0;
        } else {
            self.stalls += 1;
        }
        self.best = Some(self.best.map_or(n, |b| b.min(n)));
        n == 0 || (fits && self.stalls >= STALLS)
    }
}

/// Bytes on the wire and the time spent writing them.
struct Sender {
    conn: Conn,
    bytes: u64,
    /// Time spent sleeping for `--max-bandwidth`.
    slept: Duration,
    /// Bytes per second of the last pass that sent enough to tell, reading
    /// and hashing included, sleeps excluded.
    rate: Option<f64>,
    started: Instant,
    limit: Option<u64>,
}

impl Sender {
    fn send(&mut self, batch: &mut PageBatch, throttle: bool) -> Result<(), MigrateError> {
        self.bytes += batch.flush(&mut self.conn)?;
        if let (Some(bps), true) = (self.limit, throttle) {
            // Keep the average at the limit: sleep until the bytes sent so
            // far are due.
            let due = Duration::from_secs_f64(self.bytes as f64 / bps.max(1) as f64);
            if let Some(ahead) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(ahead);
                self.slept += ahead;
            }
        }
        Ok(())
    }

    /// Waits until the target has applied everything sent so far: `sync`,
    /// then its `synced`. Without it the socket buffers (several MiB on
    /// localhost TCP) hide a backlog the target works through after the
    /// pause: measured on the dev host with the busy guest, the target read
    /// the state 0.2-9.7 ms (median 2.2) after the source had sent it, while
    /// the estimate said 0 ms. With it, each pass's rate is what the target
    /// took, and the last pages go out into an empty connection.
    fn sync(&mut self) -> Result<(), MigrateError> {
        self.bytes += stream::write_section(&mut self.conn, Kind::Sync, &[])?;
        stream::read_kind(&mut self.conn, Kind::Synced, "synced")?;
        Ok(())
    }

    /// The bandwidth the estimate counts on, bytes/s: what the last pass
    /// achieved (everything a page costs: reading, hashing, writing),
    /// capped by the limit.
    fn bandwidth(&self) -> f64 {
        let link = self.rate.unwrap_or(FIRST_GUESS);
        self.limit.map_or(link, |l| link.min(l as f64))
    }

    /// Notes a pass that sent `bytes` from `started` on, sleeping `slept`
    /// of it.
    fn measured(&mut self, bytes: u64, started: Instant, slept: Duration) {
        let secs = started.elapsed().saturating_sub(slept).as_secs_f64();
        if bytes >= 256 << 10 && secs > 0.0 {
            self.rate = Some(bytes as f64 / secs);
        }
    }
}

/// Turns dirty logging on for the writable slots, and back off (for those
/// whose plan has it off) when dropped.
struct Logging<'a> {
    m: &'a Machine<'a>,
    on: Vec<&'a Slot>,
}

impl<'a> Logging<'a> {
    fn start(m: &'a Machine<'a>) -> Result<Logging<'a>, MigrateError> {
        let mut l = Logging { m, on: Vec::new() };
        for s in m.slots.iter().filter(|s| !s.readonly && !s.dirty_log) {
            crate::memory::set_slot(m.fd, m.mem, s.slot, s.guest_addr, false, true)
                .map_err(|e| MigrateError::Refused(format!("cannot turn on dirty logging: {e}")))?;
            l.on.push(s);
        }
        Ok(l)
    }
}

impl Drop for Logging<'_> {
    fn drop(&mut self) {
        for s in &self.on {
            if let Err(e) = crate::memory::set_slot(self.m.fd, self.m.mem, s.slot, s.guest_addr, false, false)
            {
                log::warn!("migration: cannot turn dirty logging off again: {e}");
            }
        }
    }
}

/// Reads the dirty log of every writable slot.
fn dirty_pages(m: &Machine, vm: &mut dyn Vm) -> Result<BTreeMap<u32, BTreeSet<u64>>, MigrateError> {
    let mut out = BTreeMap::new();
    for s in m.slots.iter().filter(|s| !s.readonly) {
        let pages = dirty::read_slot(m.fd, s)?;
        vm.note_dirty(s.slot, &pages);
        out.insert(s.slot, pages.into_iter().collect());
    }
    Ok(out)
}

fn count(d: &BTreeMap<u32, BTreeSet<u64>>) -> u64 {
    d.values().map(|p| p.len() as u64).sum()
}

/// Copies page `page` of slot `s` out of guest memory.
fn read_page(m: &Machine, s: &Slot, page: u64, buf: &mut [u8]) -> Result<(), MigrateError> {
    m.mem
        .read_slice(buf, GuestAddress(s.guest_addr + page * PAGE as u64))
        .map_err(|e| MigrateError::Refused(format!("cannot read guest page {page} of slot {}: {e}", s.slot)))
}

/// Whether page `page` of slot `s` reads as zeros now, without copying it
/// (most of a large guest's first pass). The guest may write it meanwhile:
/// the dirty log has that write, and a later pass sends the page.
fn page_is_zero(m: &Machine, s: &Slot, page: u64) -> Result<bool, MigrateError> {
    let slice = m
        .mem
        .get_slice(GuestAddress(s.guest_addr + page * PAGE as u64), PAGE)
        .map_err(|e| {
            MigrateError::Refused(format!("cannot read guest page {page} of slot {}: {e}", s.slot))
        })?;
    let guard = slice.ptr_guard();
    let words = guard.as_ptr() as *const u64;
    Ok((0..PAGE / 8).all(|i| {
        // SAFETY: `words` points at a mapped, page-aligned page of guest
        // memory of PAGE bytes (vm-memory checked the range), valid while
        // `guard` lives; volatile reads, because vCPUs may write it.
        unsafe { std::ptr::read_volatile(words.add(i)) == 0 }
    }))
}

/// For a private anonymous slot: which pages this process has never
/// touched (neither present nor swapped out, from /proc/self/pagemap), so
/// the first pass need not read them (each read would fault in the zero
/// page). `None` when that cannot be told: every page is then read.
fn untouched(m: &Machine, s: &Slot) -> Option<Vec<bool>> {
    use std::io::{Read, Seek, SeekFrom};
    if !s.anonymous {
        return None;
    }
    let host = m
        .mem
        .get_slice(GuestAddress(s.guest_addr), PAGE)
        .ok()?
        .ptr_guard()
        .as_ptr() as u64;
    let pages = (s.size / PAGE as u64) as usize;
    let mut f = std::fs::File::open("/proc/self/pagemap").ok()?;
    f.seek(SeekFrom::Start(host / PAGE as u64 * 8)).ok()?;
    let mut out = Vec::with_capacity(pages);
    let mut buf = vec![0u8; 8 << 16];
    while out.len() < pages {
        let n = ((pages - out.len()) * 8).min(buf.len());
        f.read_exact(&mut buf[..n]).ok()?;
        out.extend(buf[..n].chunks_exact(8).map(|e| {
            let e = u64::from_le_bytes(e.try_into().unwrap_or_default());
            // Bit 63: present; bit 62: swapped.
            e >> 62 == 0
        }));
    }
    Some(out)
}

/// Which pages a pass sends.
enum Pass<'a> {
    /// The first pass: every non-zero page of every slot.
    First,
    /// These pages, per slot (a zero page as a zero record).
    Dirty(&'a BTreeMap<u32, BTreeSet<u64>>),
}

/// Sends one pass; returns how many page records went out. `throttle`
/// marks a pass while the guest runs: it applies `--max-bandwidth`, and the
/// pass ends only when the target has applied it ([`Sender::sync`]).
fn send_pass(
    m: &Machine,
    tx: &mut Sender,
    pass: Pass,
    throttle: bool,
    vm: &dyn Vm,
) -> Result<u64, MigrateError> {
    let pages: Box<dyn Iterator<Item = (&Slot, u64)>> = match pass {
        Pass::First => Box::new(m.slots.iter().flat_map(|s| {
            let skip = untouched(m, s);
            (0..s.size / PAGE as u64)
                .filter(move |&p| !skip.as_ref().is_some_and(|u| u[p as usize]))
                .map(move |p| (s, p))
        })),
        Pass::Dirty(d) => Box::new(d.iter().flat_map(|(slot, set)| {
            m.slots
                .iter()
                .filter(move |s| s.slot == *slot)
                .flat_map(move |s| set.iter().map(move |&p| (s, p)))
        })),
    };
    let (started, bytes0, slept0) = (Instant::now(), tx.bytes, tx.slept);
    let skip_zero = matches!(pass, Pass::First);
    let mut batch = PageBatch::default();
    let mut buf = vec![0u8; PAGE];
    let mut n = 0;
    for (s, p) in pages {
        if skip_zero && page_is_zero(m, s, p)? {
            continue;
        }
        read_page(m, s, p, &mut buf)?;
        n += 1;
        if batch.push(s.slot, p, &buf) {
            tx.send(&mut batch, throttle)?;
            if let Some(why) = vm.aborted() {
                return Err(MigrateError::Aborted(why));
            }
        }
    }
    tx.send(&mut batch, throttle)?;
    if throttle {
        tx.sync()?;
    }
    let slept = tx.slept - slept0;
    tx.measured(tx.bytes - bytes0, started, slept);
    Ok(n)
}

/// After the commit: the rest of this thread's work (the reply, tearing
/// the VM down, unmapping its memory) runs at the lowest priority, so on a
/// busy host it does not take the CPU from the guest that has just started
/// at the target (a migration between two VMMs on one host). And the CPU
/// is yielded at once: a target waiting for the commit on the same CPU
/// (polling, [`crate::clock::poll_until`]) runs next, not after this
/// thread's report (sched tracepoints: 0.15 ms of it, lines to stderr,
/// while the target's main thread waited on this CPU and the other idled).
fn yield_cpu() {
    // SAFETY: setpriority(2) on the calling thread (who = 0 is this thread
    // on Linux); no memory is involved. Lowering the priority needs no
    // privilege; a failure only leaves the priority as it was.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    if rc != 0 {
        log::debug!(
            "migration: cannot lower the priority: {}",
            std::io::Error::last_os_error()
        );
    }
    std::thread::yield_now();
}

/// Migrates the running VM to `to`. On error the guest runs on here (it is
/// resumed if this paused it); on success it is paused for good and lives
/// on at the target.
pub fn migrate(
    to: &Address,
    opts: &Options,
    m: &Machine,
    vm: &mut dyn Vm,
    progress: &mut dyn FnMut(&str),
) -> Result<Migrated, MigrateError> {
    let started = Instant::now();
    let conn = Conn::connect(to).map_err(|source| stream::StreamError::Io {
        what: "connecting",
        source,
    })?;
    let mut tx = Sender {
        conn,
        bytes: 0,
        slept: Duration::ZERO,
        rate: None,
        started,
        limit: opts.max_bandwidth,
    };
    // 1. Who we are; the target's answer comes before anything else.
    stream::write_magic(&mut tx.conn)?;
    let hello = Hello {
        plan_sha256: m.plan_sha256.to_string(),
        vcpus: m.vcpus,
        slots: m.slots.iter().map(|s| (s.slot, s.guest_addr, s.size)).collect(),
    };
    tx.bytes += stream::write_json(&mut tx.conn, Kind::Hello, &hello)?;
    stream::read_magic(&mut tx.conn)?;
    let reply: Reply = stream::read_json(&mut tx.conn, Kind::Reply, "reply")?;
    if !reply.ok {
        return Err(MigrateError::Refused(format!(
            "the target refused: {}",
            reply.error.unwrap_or_default()
        )));
    }
    //    The vCPUs' CPUID, which the target sets while the guest still
    //    runs here (not inside the downtime).
    if m.cpuid.len() == m.vcpus as usize && m.cpuid.iter().all(|c| !c.is_empty()) {
        let cpuid = stream::Cpuid {
            vcpus: m
                .cpuid
                .iter()
                .map(|c| stream::VcpuCpuid { entries: c.clone() })
                .collect(),
        };
        tx.bytes += stream::write_json(&mut tx.conn, Kind::Cpuid, &cpuid)?;
    }
    // 2. Dirty logging, then everything that is not zero.
    let mut logging = Logging::start(m)?;
    let mut round_start = Instant::now();
    let mut result = Migrated {
        pages: send_pass(m, &mut tx, Pass::First, true, vm)?,
        ..Migrated::default()
    };
    // 3. Rounds while the guest runs. Once the estimate fits the budget,
    // rounds go on as long as they leave clearly fewer dirty pages than any
    // round before (a shorter round gives the guest less time to dirty): the
    // downtime budget is a ceiling, not a goal. One round that did not
    // shrink (the sender lost the CPU for a while) does not end the rounds;
    // [`STALLS`] in a row do: the guest dirties as fast as the link sends.
    let mut rounds = Rounds::default();
    let pending = loop {
        if let Some(why) = vm.aborted() {
            return Err(MigrateError::Aborted(why));
        }
        let dirty = dirty_pages(m, vm)?;
        let n = count(&dirty);
        let rate = n as f64 / round_start.elapsed().as_secs_f64().max(1e-6);
        let estimate = n as f64 * (PAGE + RECORD_HEAD) as f64 / tx.bandwidth() * 1000.0;
        progress(&format!(
            "berth: migrate round {}: {} pages sent ({:.1} MiB), {n} dirty ({rate:.0} pages/s), estimated downtime {estimate:.1} ms",
            result.rounds,
            result.pages,
            tx.bytes as f64 / (1 << 20) as f64,
        ));
        result.estimated_downtime_ms = estimate;
        let fits = estimate <= opts.max_downtime_ms as f64;
        if rounds.last(n, fits) || result.rounds >= opts.max_rounds {
            break dirty;
        }
        round_start = Instant::now();
        result.pages += send_pass(m, &mut tx, Pass::Dirty(&dirty), true, vm)?;
        result.rounds += 1;
    };
    // 4. Pause; from here on a failure resumes the guest.
    let mut steps = super::Steps::default();
    steps.mark("pause requested");
    vm.pause().map_err(MigrateError::Aborted)?;
    let paused = Instant::now();
    steps.mark("paused");
    let finish = |tx: &mut Sender, vm: &mut dyn Vm, result: &mut Migrated| -> Result<(), MigrateError> {
        let mut last = dirty_pages(m, vm)?;
        steps.mark("dirty log read");
        for (slot, set) in pending {
            last.entry(slot).or_default().extend(set);
        }
        // The state before the last pages: the target parses it while
        // these pages are read and sent here.
        let state = vm.state().map_err(MigrateError::Aborted)?;
        steps.mark("state collected");
        let state = state.to_bytes();
        steps.mark("state serialised");
        tx.bytes += stream::write_section(&mut tx.conn, Kind::State, &state)?;
        result.last_pages = send_pass(m, tx, Pass::Dirty(&last), false, vm)?;
        result.pages += result.last_pages;
        steps.mark("last pages sent");
        let end = End {
            rounds: result.rounds,
            pages: result.pages,
        };
        tx.bytes += stream::write_json(&mut tx.conn, Kind::End, &end)?;
        steps.mark("end sent");
        // The target answers within a fraction of a millisecond.
        tx.conn.poll_readable(crate::clock::HANDOVER_POLL);
        let ack: Reply = stream::read_json(&mut tx.conn, Kind::Ack, "ack")?;
        if !ack.ok {
            return Err(MigrateError::Refused(format!(
                "the target could not load the state: {}",
                ack.error.unwrap_or_default()
            )));
        }
        // The commit point: once these bytes are out, the guest is the
        // target's.
        steps.mark("ack received");
        result.downtime_ms = paused.elapsed().as_secs_f64() * 1000.0;
        tx.bytes += stream::write_section(&mut tx.conn, Kind::Commit, &[])?;
        result.total_ms = started.elapsed().as_secs_f64() * 1000.0;
        yield_cpu();
        steps.mark("commit sent");
        Ok(())
    };
    let finished = finish(&mut tx, vm, &mut result);
    steps.log("source");
    if let Err(e) = finished {
        vm.resume();
        return Err(e);
    }
    result.bytes = tx.bytes;
    // The VM is about to be torn down: turning logging off again would
    // only delay the exit (a memslot update can take 100+ ms on some hosts).
    logging.on.clear();
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_end_when_they_stop_shrinking_not_at_one_slow_round() {
        let mut r = Rounds::default();
        assert!(
            !r.last(5000, true),
            "the first round under the budget ends nothing"
        );
        assert!(
            !r.last(4600, true),
            "one round that did not shrink (a slow sender)"
        );
        assert!(!r.last(900, true), "it shrinks again: more rounds");
        assert!(!r.last(300, true));
        assert!(!r.last(280, true), "the guest's floor: one stall");
        assert!(r.last(290, true), "two stalls in a row: pause");
        // Over the budget, stalls do not end the rounds (the round limit does).
        let mut r = Rounds::default();
        for _ in 0..5 {
            assert!(!r.last(9000, false));
        }
        assert!(r.last(0, false), "nothing dirty: pause");
    }
}
