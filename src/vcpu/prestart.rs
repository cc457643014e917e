//! vCPU threads started before their VM runs ([`Prestarted`]).

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// A vCPU thread's body, handed the result of installing its seccomp
/// filter (`None`: not installed yet, the body installs it).
pub(super) type Body = Box<dyn FnOnce(Option<Result<(), crate::seccomp::SeccompError>>) + Send>;

/// vCPU threads started before their VM runs: each has installed its
/// seccomp filter and waits for its vCPU. The migration target starts them
/// while it waits for a source, so that starting them (0.2-0.6 ms on the
/// dev host, most of it the kernel taking the filter) is not part of the
/// guest's downtime. Threads not taken end when this is dropped.
#[derive(Default)]
pub struct Prestarted {
    waiting: BTreeMap<u32, (mpsc::SyncSender<Body>, JoinHandle<()>)>,
}

impl Prestarted {
    /// Starts threads `vcpu0` .. `vcpu<n-1>`.
    pub fn start(n: u32) -> std::io::Result<Prestarted> {
        let mut p = Prestarted::default();
        for index in 0..n {
            let (tx, rx) = mpsc::sync_channel::<Body>(1);
            let thread = std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    let installed = crate::seccomp::install(crate::seccomp::ThreadKind::Vcpu);
                    if let Ok(body) = rx.recv() {
                        body(Some(installed));
                    }
                })?;
            p.waiting.insert(index, (tx, thread));
        }
        Ok(p)
    }

    /// Runs `body` on the waiting thread of vCPU `index`, if there is one.
    pub(super) fn take(&mut self, index: u32, body: Body) -> Result<JoinHandle<()>, Body> {
        match self.waiting.remove(&index) {
            Some((tx, thread)) => match tx.send(body) {
                Ok(()) => Ok(thread),
                Err(mpsc::SendError(body)) => {
                    let _ = thread.join();
                    Err(body)
                }
            },
            None => Err(body),
        }
    }
}

impl Drop for Prestarted {
    fn drop(&mut self) {
        for (_, (tx, thread)) in std::mem::take(&mut self.waiting) {
            drop(tx);
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_run_on_their_named_threads_and_the_rest_end_on_drop() {
        let mut p = Prestarted::start(3).unwrap();
        let (tx, rx) = mpsc::channel();
        for index in [0, 2] {
            let tx = tx.clone();
            let body: Body = Box::new(move |installed| {
                let name = std::thread::current().name().map(str::to_string);
                let _ = tx.send((index, name, installed.is_some()));
            });
            assert!(p.take(index, body).is_ok(), "vcpu{index} was waiting");
        }
        let mut got: Vec<_> = (0..2).map(|_| rx.recv().unwrap()).collect();
        got.sort();
        assert_eq!(
            got,
            vec![(0, Some("vcpu0".into()), true), (2, Some("vcpu2".into()), true)],
            "each body ran on its vCPU's thread, its filter already installed"
        );
        // Taken twice, or never started: the body comes back.
        assert!(p.take(0, Box::new(|_| {})).is_err());
        assert!(p.take(7, Box::new(|_| {})).is_err());
        // vcpu1 was never taken: dropping ends and joins it.
        drop(p);
    }
}
