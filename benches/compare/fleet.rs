//! Many VMM processes at once, for the density benchmark: start N, wait until every guest has
//! printed its line, stop them all with SIGTERM, and never leave one behind.
//!
//! Every VMM runs in a process group of its own (`process_group(0)`), so the helpers it starts
//! (berth's teardown helper, src/teardown.rs) can be found and killed too. Each child is held by
//! a pidfd: signals go through `pidfd_send_signal` (never to a recycled pid) and `poll` on the
//! pidfds sees the exits. A [`Fleet`] that is dropped before every VMM has been reaped (an error,
//! a timeout, a panic) sends SIGKILL to each remaining child and its group, then reaps it: the
//! group's id cannot be reused while its leader is an unreaped zombie. After the last exit,
//! [`Fleet::wait_groups_empty`] waits (bounded) until no process of any group is left.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// One VMM process.
struct Vm {
    pid: libc::pid_t,
    pidfd: OwnedFd,
    /// Wait status once reaped.
    status: Option<libc::c_int>,
}

/// N VMM processes started together.
pub struct Fleet {
    vms: Vec<Vm>,
    /// Spawn of the first VMM.
    pub started: Instant,
    ready: mpsc::Receiver<(usize, Result<Instant, String>)>,
    /// Every child's stderr, appended to one file (for error messages).
    stderr: File,
    /// [`Fleet::wait_groups_empty`] saw every process group empty.
    groups_empty: bool,
}

/// `pidfd_open(pid, 0)`.
fn pidfd_open(pid: libc::pid_t) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes no pointers; the fd it returns is owned by no one else.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new pidfd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(pidfd, sig, NULL, 0)`; a child that already exited is not an error.
fn pidfd_signal(pidfd: &OwnedFd, sig: libc::c_int) {
    // SAFETY: no pointers are passed (info is NULL); the fd is a live pidfd.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Reaps `pid` (blocking) and returns its wait status.
fn reap(pid: libc::pid_t) -> std::io::Result<libc::c_int> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes only into `status`.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

impl Fleet {
    /// Starts `n` copies of `program args…`, each in its own process group, stdout piped (a
    /// thread per VM reads its first line, which must be `line`, then drains the pipe), stderr
    /// appended to a temporary file.
    pub fn start(n: usize, program: &Path, args: &[String], line: &str, tmp: &Path) -> Result<Fleet, String> {
        let stderr = File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let (tx, ready) = mpsc::channel();
        let started = Instant::now();
        let mut fleet = Fleet {
            vms: Vec::with_capacity(n),
            started,
            ready,
            stderr,
            groups_empty: false,
        };
        for i in 0..n {
            let err = fleet.stderr.try_clone().map_err(|e| e.to_string())?;
            let mut child = Command::new(program)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(err)
                .process_group(0)
                .spawn()
                .map_err(|e| format!("VM {i} of {n}: cannot start {}: {e}", program.display()))?;
            let pid = child.id() as libc::pid_t;
            let mut stdout = child.stdout.take().expect("stdout is piped");
            drop(child); // Neither waits nor kills; this fleet reaps it.
            let pidfd = match pidfd_open(pid) {
                Ok(fd) => fd,
                Err(e) => {
                    // Not yet in `vms`: kill and reap it here (it cannot have been reaped).
                    // SAFETY: kill(2) has no memory effects; `pid` is our unreaped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    let _ = reap(pid);
                    return Err(format!("VM {i}: pidfd_open: {e}"));
                }
            };
            fleet.vms.push(Vm {
                pid,
                pidfd,
                status: None,
            });
            let tx = tx.clone();
            let want = line.to_string();
            thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 512];
                    let mut sent = false;
                    loop {
                        match stdout.read(&mut chunk) {
                            Ok(0) => break,
                            Ok(k) => {
                                if !sent {
                                    buf.extend_from_slice(&chunk[..k]);
                                    if let Some(end) = buf.iter().position(|&c| c == b'\n') {
                                        let now = Instant::now();
                                        let got = String::from_utf8_lossy(&buf[..end]);
                                        let got = got.trim_end_matches('\r');
                                        let r = if got == want {
                                            Ok(now)
                                        } else {
                                            Err(format!("first line {got:?}, expected {want:?}"))
                                        };
                                        let _ = tx.send((i, r));
                                        sent = true;
                                    }
                                }
                            }
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Err(_) => break,
                        }
                    }
                    if !sent {
                        let _ = tx.send((i, Err("stdout closed before a complete line".into())));
                    }
                })
                .map_err(|e| format!("VM {i}: reader thread: {e}"))?;
        }
        Ok(fleet)
    }

    /// Number of VMs.
    pub fn len(&self) -> usize {
        self.vms.len()
    }

    /// Pids of the VMM processes.
    pub fn pids(&self) -> Vec<libc::pid_t> {
        self.vms.iter().map(|v| v.pid).collect()
    }

    /// Waits until every VM printed its line; returns spawn of the first → line of the last.
    pub fn wait_running(&mut self, timeout: Duration) -> Result<Duration, String> {
        let deadline = self.started + timeout;
        let mut last = self.started;
        for _ in 0..self.vms.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.ready.recv_timeout(left) {
                Ok((_, Ok(t))) => last = last.max(t),
                Ok((i, Err(e))) => {
                    return Err(format!(
                        "VM {i} (pid {}): {e}{}",
                        self.vms[i].pid,
                        self.stderr_tail()
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "not every VM printed its line within {timeout:?}{}",
                        self.stderr_tail()
                    ))
                }
            }
        }
        Ok(last - self.started)
    }

    /// Sends SIGTERM to every VMM and waits until all have exited (each reaped, its status
    /// kept). Returns SIGTERM of the first → exit of the last.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Duration, String> {
        let t0 = Instant::now();
        for vm in &self.vms {
            pidfd_signal(&vm.pidfd, libc::SIGTERM);
        }
        let deadline = t0 + timeout;
        let mut last = t0;
        loop {
            let mut fds: Vec<libc::pollfd> = self
                .vms
                .iter()
                .filter(|v| v.status.is_none())
                .map(|v| libc::pollfd {
                    fd: v.pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            if fds.is_empty() {
                return Ok(last - t0);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "{} of {} VMs still running {timeout:?} after SIGTERM{}",
                    fds.len(),
                    self.vms.len(),
                    self.stderr_tail()
                ));
            }
            // SAFETY: `fds` is a valid array of fds.len() pollfd structs for the whole call.
            let r = unsafe {
                libc::poll(
                    fds.as_mut_ptr(),
                    fds.len() as libc::nfds_t,
                    left.as_millis().max(1) as i32,
                )
            };
            let now = Instant::now();
            if r < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(format!("poll: {e}"));
            }
            for p in fds.iter().filter(|p| p.revents != 0) {
                let vm = self
                    .vms
                    .iter_mut()
                    .find(|v| v.pidfd.as_raw_fd() == p.fd)
                    .expect("polled fds belong to VMs");
                vm.status = Some(reap(vm.pid).map_err(|e| format!("waitpid {}: {e}", vm.pid))?);
                last = now;
            }
        }
    }

    /// The wait statuses of every VMM (after [`Fleet::terminate`]); Err when one differs from
    /// what `ok` accepts.
    pub fn check_statuses(&self, what: &str, ok: impl Fn(libc::c_int) -> bool) -> Result<(), String> {
        for (i, vm) in self.vms.iter().enumerate() {
            match vm.status {
                Some(s) if ok(s) => {}
                Some(s) => {
                    let how = if libc::WIFSIGNALED(s) {
                        format!("killed by signal {}", libc::WTERMSIG(s))
                    } else {
                        format!("exit status {}", libc::WEXITSTATUS(s))
                    };
                    return Err(format!(
                        "VM {i} (pid {}): {how}, expected {what}{}",
                        vm.pid,
                        self.stderr_tail()
                    ));
                }
                None => return Err(format!("VM {i} (pid {}) was not reaped", vm.pid)),
            }
        }
        Ok(())
    }

    /// Waits until no process is left in any VM's process group (berth's teardown helpers end
    /// after KVM's teardown). Returns the time from the call until every process of the groups
    /// had ended (only zombies left: the helpers' teardown is done) and until the groups were
    /// empty (those zombies reaped too: a helper outlives berth, so the host's init reaps it,
    /// and that takes init's time), or an error naming how many groups still had members at the
    /// bound (they are killed by the drop).
    pub fn wait_groups_empty(&mut self, timeout: Duration) -> Result<(Duration, Duration), String> {
        let t0 = Instant::now();
        let groups: std::collections::BTreeSet<i32> = self.vms.iter().map(|v| v.pid).collect();
        let mut ended = None;
        loop {
            if ended.is_none() && live_members(&groups) == 0 {
                ended = Some(t0.elapsed());
            }
            let alive = self
                .vms
                .iter()
                // SAFETY: kill(2) with signal 0 only checks for existence.
                .filter(|v| unsafe { libc::kill(-v.pid, 0) } == 0)
                .count();
            if alive == 0 {
                self.groups_empty = true;
                let empty = t0.elapsed();
                return Ok((ended.unwrap_or(empty), empty));
            }
            if t0.elapsed() >= timeout {
                return Err(format!(
                    "{alive} process groups still have processes {timeout:?} after the VMMs exited"
                ));
            }
            // Polling, 1 ms resolution: a group has no fd to wait on.
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// The last lines every child wrote to stderr, for error messages.
    fn stderr_tail(&self) -> String {
        let mut s = String::new();
        let mut f = &self.stderr;
        let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(0));
        let _ = f.read_to_string(&mut s);
        let lines: Vec<&str> = s.lines().collect();
        let tail: String = lines[lines.len().saturating_sub(8)..]
            .iter()
            .map(|l| format!("\n    | {l}"))
            .collect();
        if tail.is_empty() {
            String::new()
        } else {
            format!("\n  stderr of the VMs (last lines):{tail}")
        }
    }
}

impl Drop for Fleet {
    /// Kills and reaps every VMM not yet reaped, with its process group; then kills whatever is
    /// left in the other groups.
    fn drop(&mut self) {
        for vm in self.vms.iter_mut().filter(|v| v.status.is_none()) {
            pidfd_signal(&vm.pidfd, libc::SIGKILL);
            // SAFETY: kill(2) has no memory effects. The leader is not reaped yet, so the group
            // id still belongs to this group.
            unsafe { libc::kill(-vm.pid, libc::SIGKILL) };
            vm.status = reap(vm.pid).ok().or(Some(0));
        }
        // Helpers of VMMs reaped earlier (a group whose leader is gone cannot be reused while it
        // has members; one that emptied meanwhile gets ESRCH).
        if self.groups_empty {
            return;
        }
        for vm in &self.vms {
            // SAFETY: as above.
            unsafe { libc::kill(-vm.pid, libc::SIGKILL) };
        }
    }
}

/// How many processes of the process groups `groups` are not zombies (from /proc/PID/stat).
fn live_members(groups: &std::collections::BTreeSet<i32>) -> usize {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            // After the command's closing parenthesis: state, ppid, pgrp, …
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let mut f = rest.split(' ');
            let state = f.next().unwrap_or("Z");
            let pgrp = f.nth(1).and_then(|g| g.parse::<i32>().ok());
            state != "Z" && pgrp.is_some_and(|g| groups.contains(&g))
        })
        .count()
}
