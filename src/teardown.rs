//! KVM's VM teardown, off berth's exit path.
//!
//! The last `close()` of a VM's file descriptors runs KVM's whole teardown in
//! the closing task. On the PVM dev host that takes 13–22 ms for a machine
//! with the in-kernel PIT (measured with `strace -T`), and a process's exit
//! status reaches its parent only after its files are closed. So the exit
//! status, and everything a caller waits for, would wait on KVM.
//!
//! [`Reaper::spawn`] starts a small helper task as the last build step:
//! `clone(CLONE_VM)`, so it shares berth's memory (nothing is copied) but gets
//! its own copy of the file table, and with it its own reference to the VM
//! and vCPU fds. It blocks every signal, closes every other fd at once (so
//! stdout and stderr reach EOF when berth's copies close), and waits for EOF
//! on a pipe whose only write end berth holds in [`Reaper`]. When berth
//! drops the [`Reaper`] (after its own copies of the VM fds), or exits for any
//! reason, even SIGKILL, the helper closes the VM (paying KVM's teardown
//! there, in parallel with whatever berth does next) and exits. Nothing is
//! left behind: the helper ends as soon as the teardown does. A helper that
//! has ended is reaped by the next [`Reaper::spawn`] (a restart), or by init
//! once berth has exited.
//!
//! The helper also pays KVM's one-time wait after the in-kernel irqchip
//! (see [`Settle`]) before it waits for the pipe: it adds and removes a
//! one-page memslot. That wait (5–10 ms on the PVM dev host) then passes in
//! the helper, where nothing waits for it, instead of in a berth thread that
//! berth's exit would have to join.
//!
//! The helper runs no Rust runtime code: raw system calls only, on a stack
//! of its own, so it cannot touch berth's thread-local state or locks.

use kvm_bindings::kvm_userspace_memory_region;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// KVM_SET_USER_MEMORY_REGION's number, for the helper's raw ioctl.
mod ioctls {
    #![allow(missing_docs)]
    vmm_sys_util::ioctl_iow_nr!(
        KVM_SET_USER_MEMORY_REGION,
        kvm_bindings::KVMIO,
        0x46,
        kvm_bindings::kvm_userspace_memory_region
    );
}
use ioctls::KVM_SET_USER_MEMORY_REGION;

/// A one-page memslot the helper adds and removes again at once, on the VM
/// it holds, before it waits for berth's end.
///
/// Why: on some hosts KVM waits once per VM, asleep, at the first memslot
/// update after KVM_CREATE_IRQCHIP, or, when there is none, at the VM's
/// teardown. Measured on the PVM dev host (C reproducer, 128 MiB slot, one
/// vCPU run): 5-10 ms at that update (0.1 ms of CPU), or 13-22 ms when the VM
/// fd is closed. berth registers its memslots before the irqchip (build step
/// 9) so the guest does not wait at start; the helper pays the wait while the
/// guest runs, and berth never waits for it (not even at exit: the helper is
/// not one of berth's threads). Elsewhere it costs two cheap ioctls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settle {
    /// A slot number the plan does not use.
    pub slot: u32,
    /// Guest address of the page: above everything the plan maps, so no
    /// vCPU touches it ([`crate::memory::settle_address`]).
    pub guest_addr: u64,
    /// Host address of a page of guest RAM. KVM only records it: it would
    /// be read or written only for a vCPU access to `guest_addr`.
    pub host_addr: u64,
}

/// The helper's stack (it needs a few hundred bytes).
const STACK_SIZE: usize = 16 * 1024;
/// Most fds the helper keeps (the VM fd and one per vCPU, 254 at most).
const MAX_KEEP: usize = 256;

/// What the helper needs, at the bottom of its stack mapping.
#[repr(C)]
struct HelperArgs {
    /// Ascending fds to keep open until the pipe reports EOF.
    keep: [i32; MAX_KEEP],
    /// How many of `keep` are used.
    nkeep: usize,
    /// The pipe's read end (also in `keep`).
    read_fd: i32,
    /// The VM fd (also in `keep`), for the settle slot.
    vm_fd: i32,
    /// Non-zero: add and remove `settle` first.
    settle_on: u32,
    /// KVM_SET_USER_MEMORY_REGION's request number.
    set_region: u64,
    /// The settle slot (its `memory_size` is set to 0 to remove it).
    settle: kvm_userspace_memory_region,
}

/// Helpers that may still run: (pid, stack mapping). Reaped and unmapped by
/// the next [`Reaper::spawn`].
static HELPERS: Mutex<Vec<(libc::pid_t, usize)>> = Mutex::new(Vec::new());

/// berth's end of a teardown helper: dropping it (or exiting) lets the
/// helper close the VM. Drop it only after the VM and vCPU fds.
#[derive(Debug)]
pub struct Reaper {
    _write_end: OwnedFd,
}

impl Reaper {
    /// Starts a helper that keeps `vm_fd` and `vcpu_fds` open until this
    /// [`Reaper`] is dropped or berth exits, then closes them; with `settle`,
    /// it first adds and removes that slot on `vm_fd`.
    pub fn spawn(
        vm_fd: RawFd,
        vcpu_fds: impl IntoIterator<Item = RawFd>,
        settle: Option<Settle>,
    ) -> io::Result<Reaper> {
        reap_finished();
        let mut fds = [0i32; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
        let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut keep: Vec<i32> = std::iter::once(vm_fd)
            .chain(vcpu_fds)
            .chain(std::iter::once(read_end.as_raw_fd()))
            .collect();
        keep.sort_unstable();
        keep.dedup();
        if keep.len() > MAX_KEEP {
            return Err(io::Error::other("too many vCPU fds for the teardown helper"));
        }
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let stack = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if stack == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let args = stack as *mut HelperArgs;
        let mut list = [0i32; MAX_KEEP];
        list[..keep.len()].copy_from_slice(&keep);
        let region = settle.map(|s| kvm_userspace_memory_region {
            slot: s.slot,
            flags: 0,
            guest_phys_addr: s.guest_addr,
            memory_size: crate::memory::SETTLE_PAGE,
            userspace_addr: s.host_addr,
        });
        // SAFETY: `args` is the start of the new STACK_SIZE-byte mapping,
        // page aligned, and HelperArgs (about 1 KiB) fits well below the
        // stack's top, where the helper's frames start.
        unsafe {
            args.write(HelperArgs {
                keep: list,
                nkeep: keep.len(),
                read_fd: read_end.as_raw_fd(),
                vm_fd,
                settle_on: u32::from(region.is_some()),
                set_region: KVM_SET_USER_MEMORY_REGION(),
                settle: region.unwrap_or_default(),
            })
        };
        // The helper starts with every signal blocked: block them here
        // around clone() so that no signal can run a berth handler in it.
        // SAFETY: sigset_t values are plain data; pthread_sigmask only reads
        // `all` and writes `old`.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `all` and `old` are valid sigset_t values on this stack.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        let top = (stack as usize + STACK_SIZE) & !0xf;
        // SAFETY: `helper` only makes raw system calls on the stack given
        // here, and reads `args`, which stays mapped until the helper has been
        // reaped (reap_finished). CLONE_VM without CLONE_FILES: shared memory,
        // a copy of the fd table. SIGCHLD makes it an ordinary child for
        // waitpid and for init after berth exits.
        let pid = unsafe {
            libc::clone(
                helper,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::SIGCHLD,
                args as *mut libc::c_void,
            )
        };
        let err = io::Error::last_os_error();
        // SAFETY: restores the mask saved above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        if pid < 0 {
            // SAFETY: no helper exists, so nothing uses the mapping.
            unsafe { libc::munmap(stack, STACK_SIZE) };
            return Err(err);
        }
        HELPERS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((pid, stack as usize));
        drop(read_end);
        log::debug!("teardown helper pid {pid}");
        Ok(Reaper {
            _write_end: write_end,
        })
    }
}

/// The helper's exit status when it could not remove the settle slot.
const SETTLE_NOT_REMOVED: i32 = 1;

/// Reaps helpers that have ended and frees their stacks.
fn reap_finished() {
    let mut helpers = HELPERS.lock().unwrap_or_else(|e| e.into_inner());
    helpers.retain(|&(pid, stack)| {
        let mut status = 0;
        // SAFETY: waits (without blocking) only for our own child `pid`.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == 0 {
            return true;
        }
        if r == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == SETTLE_NOT_REMOVED {
            log::warn!("teardown helper {pid}: the memslot-settle slot could not be removed");
        }
        // r == pid: it ended and is reaped; r < 0: it is not ours any more.
        // Either way it no longer runs on the stack.
        // SAFETY: the mapping was made by spawn for this helper alone.
        unsafe { libc::munmap(stack as *mut libc::c_void, STACK_SIZE) };
        false
    });
}

/// A raw system call with up to four arguments; returns -errno on failure.
/// Never touches errno (the helper shares berth's memory, not its threads).
///
/// # Safety
/// The caller passes a valid system call and arguments.
unsafe fn syscall4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
    let ret: isize;
    // SAFETY: the x86-64 Linux system call convention; rcx and r11 are
    // clobbered by `syscall`; no stack use.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            in("r10") d,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// Closes `from..=to`, with `close_range` or, where the kernel lacks it, one
/// by one (up to 64 Ki fds).
///
/// # Safety
/// Only in the helper, whose fd table is its own.
unsafe fn close_fds(from: u32, to: u32) {
    // SAFETY: close_range takes plain integers.
    let r = unsafe { syscall4(libc::SYS_close_range, from as usize, to as usize, 0, 0) };
    if r == -(libc::ENOSYS as isize) {
        for fd in from..=to.min(65_535) {
            // SAFETY: closing an fd of the helper's own table.
            unsafe { syscall4(libc::SYS_close, fd as usize, 0, 0, 0) };
        }
    }
}

/// The helper: see the module comment.
extern "C" fn helper(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: spawn wrote a HelperArgs at `arg` and keeps it mapped while the
    // helper lives; the helper's fd table is its own copy.
    unsafe {
        let args = &*(arg as *const HelperArgs);
        let all: u64 = !0;
        syscall4(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &all as *const u64 as usize,
            0,
            8,
        );
        let mut next = 0u32;
        for &fd in &args.keep[..args.nkeep] {
            let fd = fd as u32;
            if fd > next {
                close_fds(next, fd - 1);
            }
            next = fd + 1;
        }
        close_fds(next, u32::MAX);
        let mut status = 0;
        if args.settle_on != 0 {
            // KVM only records the host address: it would be read or written
            // only for a vCPU access to the slot's guest page, which lies
            // above everything the plan maps. A failed add leaves nothing.
            let mut region = args.settle;
            let add = syscall4(
                libc::SYS_ioctl,
                args.vm_fd as usize,
                args.set_region as usize,
                &region as *const kvm_userspace_memory_region as usize,
                0,
            );
            if add == 0 {
                region.memory_size = 0;
                let remove = syscall4(
                    libc::SYS_ioctl,
                    args.vm_fd as usize,
                    args.set_region as usize,
                    &region as *const kvm_userspace_memory_region as usize,
                    0,
                );
                if remove != 0 {
                    status = SETTLE_NOT_REMOVED;
                }
            }
        }
        let mut byte = 0u8;
        loop {
            let r = syscall4(
                libc::SYS_read,
                args.read_fd as usize,
                &mut byte as *mut u8 as usize,
                1,
                0,
            );
            if r != -(libc::EINTR as isize) && r <= 0 {
                break;
            }
        }
        close_fds(0, u32::MAX);
        syscall4(libc::SYS_exit, status as usize, 0, 0, 0);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn fd_open_in(pid: libc::pid_t, fd: RawFd) -> bool {
        std::path::Path::new(&format!("/proc/{pid}/fd/{fd}")).exists()
    }

    #[test]
    fn helper_keeps_only_the_given_fds_until_dropped_then_exits() {
        let kept = std::fs::File::open("/dev/null").unwrap();
        let other = std::fs::File::open("/dev/null").unwrap();
        let r = Reaper::spawn(kept.as_raw_fd(), [], None).unwrap();
        let pid = HELPERS.lock().unwrap().last().unwrap().0;
        // The helper closes everything but `kept` and its pipe at once.
        let deadline = Instant::now() + Duration::from_secs(10);
        while fd_open_in(pid, other.as_raw_fd()) && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(
            !fd_open_in(pid, other.as_raw_fd()),
            "the helper kept an fd it was not given"
        );
        assert!(!fd_open_in(pid, 1), "the helper kept stdout");
        assert!(
            fd_open_in(pid, kept.as_raw_fd()),
            "the helper closed the fd it keeps"
        );
        // Dropping berth's end lets it close and exit.
        drop(r);
        let mut status = 0;
        // SAFETY: waits for our own child.
        let w = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(w, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        // The next spawn (here: the reap itself) frees its stack.
        reap_finished();
        assert!(HELPERS.lock().unwrap().iter().all(|&(p, _)| p != pid));
    }
}
