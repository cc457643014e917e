//! COM1: an 8250/16550A UART, emulated by `vm_superio::Serial`.
//!
//! The device occupies 8 bytes of port I/O (registers at offsets 0..8).
//! Guest output to stdout or a file goes through [`AsyncOutput`]
//! (`serial_out`): a bounded buffer, complete lines written by the vCPU
//! without waiting, the rest by a `serial-out` thread, so a blocked stdout
//! pipe never blocks a vCPU and memory stays bounded. Bytes that find the
//! buffer full, or that the output refuses (a closed pipe, a full disk), are
//! counted as dropped and emulation continues. At shutdown [`SerialDevice::flush`] waits (bounded)
//! for the buffer to reach the output.
//!
//! Interrupts are raised by writing to an eventfd, which the VMM registers
//! with KVM as an irqfd (GSI 4 for COM1).

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use thiserror::Error;
use vm_superio::serial::{Error as UartError, SerialEvents};
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

use super::serial_out::{AsyncOutput, OUTPUT_BUFFER};
use super::EventFdTrigger;
use crate::bus::{BusDevice, VmEvent};
use crate::state::{DeviceState, StateError};

/// vm-superio's receive FIFO size.
const SERIAL_FIFO_LEN: usize = 64;

/// Number of UART registers (and length of the bus range).
pub const SERIAL_REGS_LEN: u64 = 8;

/// Errors from the serial device.
#[derive(Debug, Error)]
pub enum SerialError {
    /// Raising the interrupt (writing the eventfd) failed.
    #[error("failed to raise the serial interrupt: {0}")]
    Trigger(#[source] io::Error),
    /// Writing or flushing the output failed.
    #[error("serial output failed: {0}")]
    Output(#[source] io::Error),
    /// The receive FIFO is full; retry after the guest has read some input.
    #[error("serial receive FIFO is full")]
    FifoFull,
}

impl From<UartError<io::Error>> for SerialError {
    fn from(e: UartError<io::Error>) -> SerialError {
        match e {
            UartError::Trigger(e) => SerialError::Trigger(e),
            UartError::IOError(e) => SerialError::Output(e),
            UartError::FullFifo => SerialError::FifoFull,
        }
    }
}

/// Where guest serial output goes.
pub enum SerialOutput {
    /// The VMM's standard output (unbuffered; may be a pipe).
    Stdout,
    /// Discard output (still counted as written).
    Null,
    /// A file, written unbuffered.
    File(File),
    /// Any other writer (e.g. a buffer in tests).
    Custom(Box<dyn Write + Send>),
}

impl fmt::Debug for SerialOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialOutput::Stdout => f.write_str("Stdout"),
            SerialOutput::Null => f.write_str("Null"),
            SerialOutput::File(file) => f.debug_tuple("File").field(file).finish(),
            SerialOutput::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl SerialOutput {
    /// Turns the output into the UART's writer; stdout and files get an
    /// [`AsyncOutput`] (returned too, for draining at shutdown).
    fn into_writer(self) -> (Box<dyn Write + Send>, Option<AsyncOutput>) {
        // The file behind the output, for the vCPU's own line writes.
        let direct = |f: &File| f.try_clone().ok().map(OwnedFd::from);
        let (sink, direct): (Box<dyn Write + Send>, _) = match self {
            SerialOutput::Stdout => {
                // A private dup of fd 1 bypasses std's line buffer, so a
                // failed write (EPIPE) cannot leave bytes stuck in a buffer.
                match io::stdout().as_fd().try_clone_to_owned() {
                    Ok(fd) => {
                        let f = File::from(fd);
                        let d = direct(&f);
                        (Box::new(f), d)
                    }
                    Err(e) => {
                        log::debug!("cannot dup stdout ({e}); using buffered stdout");
                        (Box::new(io::stdout()), None)
                    }
                }
            }
            SerialOutput::Null => return (Box::new(io::sink()), None),
            SerialOutput::File(file) => {
                let d = direct(&file);
                (Box::new(file), d)
            }
            SerialOutput::Custom(w) => return (w, None),
        };
        match AsyncOutput::spawn(sink, OUTPUT_BUFFER, direct) {
            Ok(a) => (Box::new(a.clone()), Some(a)),
            Err(e) => {
                log::warn!("cannot start the serial output thread ({e}); serial output is dropped");
                (Box::new(Refuse), None)
            }
        }
    }
}

/// A writer that refuses every byte (they are counted as dropped).
struct Refuse;

impl Write for Refuse {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("serial output unavailable"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Output counters of a [`SerialDevice`], shared so they can be read while
/// the device sits behind the bus's mutex.
#[derive(Debug, Default)]
pub struct SerialCounters {
    bytes_out: AtomicU64,
    bytes_dropped: AtomicU64,
}

impl SerialCounters {
    /// Bytes the guest transmitted that reached the output.
    pub fn bytes_out(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed)
    }

    /// Bytes the guest transmitted that were lost because the output failed.
    pub fn bytes_dropped(&self) -> u64 {
        self.bytes_dropped.load(Ordering::Relaxed)
    }
}

impl SerialEvents for SerialCounters {
    fn buffer_read(&self) {}

    fn out_byte(&self) {
        self.bytes_out.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        self.bytes_dropped.fetch_add(1, Ordering::Relaxed);
    }

    fn in_buffer_empty(&self) {}
}

impl Drop for SerialDevice {
    fn drop(&mut self) {
        if let Some(o) = &self.output {
            o.close();
        }
    }
}

/// How long shutdown waits for buffered output.
pub const FLUSH_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The COM1 UART as a bus device.
pub struct SerialDevice {
    output: Option<AsyncOutput>,
    uart: Serial<EventFdTrigger, Arc<SerialCounters>, Box<dyn Write + Send>>,
    counters: Arc<SerialCounters>,
    /// Whether an output error has already been logged (logged once only:
    /// a closed pipe would otherwise log once per guest byte).
    output_error_logged: bool,
    /// LCR.DLAB: offsets 0 and 1 are the divisor, not THR/IER.
    dlab: bool,
    /// `--snapshot-at`: a pattern and what to do when a line has it.
    watch: Option<LineWatch>,
}

/// Watches transmitted lines for a pattern; fires once.
struct LineWatch {
    pattern: Vec<u8>,
    line: Vec<u8>,
    fire: Option<Box<dyn FnOnce() + Send>>,
}

/// Longest line kept for matching (longer lines are matched on their start).
const WATCH_LINE_MAX: usize = 4096;

impl LineWatch {
    fn byte(&mut self, b: u8) {
        if b != b'\n' {
            if self.line.len() < WATCH_LINE_MAX {
                self.line.push(b);
            }
            return;
        }
        let hit = !self.pattern.is_empty()
            && self
                .line
                .windows(self.pattern.len())
                .any(|w| w == self.pattern.as_slice());
        self.line.clear();
        if hit {
            if let Some(f) = self.fire.take() {
                f();
            }
        }
    }
}

impl fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SerialDevice")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// Creates the UART writing guest output to `out` and raising its
    /// interrupt by writing to `irq` (register a clone of it as an irqfd).
    pub fn new(out: SerialOutput, irq: EventFd) -> SerialDevice {
        let counters = Arc::new(SerialCounters::default());
        let (writer, output) = out.into_writer();
        let uart = Serial::with_events(EventFdTrigger::new(irq), Arc::clone(&counters), writer);
        SerialDevice {
            uart,
            counters,
            output,
            output_error_logged: false,
            dlab: false,
            watch: None,
        }
    }

    /// Calls `fire` (once) when a complete transmitted line contains `pattern`.
    pub fn watch_line(&mut self, pattern: Vec<u8>, fire: Box<dyn FnOnce() + Send>) {
        self.watch = Some(LineWatch {
            pattern,
            line: Vec::new(),
            fire: Some(fire),
        });
    }

    /// The interrupt eventfd.
    pub fn irq_evt(&self) -> &EventFd {
        self.uart.interrupt_evt().evt()
    }

    /// Shared output counters.
    pub fn counters(&self) -> Arc<SerialCounters> {
        Arc::clone(&self.counters)
    }

    /// Flushes the output at shutdown, waiting at most [`FLUSH_LIMIT`] for
    /// buffered bytes to reach it (a blocked pipe is abandoned).
    pub fn flush(&mut self) -> Result<(), SerialError> {
        if let Some(o) = &self.output {
            if !o.flush_now(FLUSH_LIMIT) {
                return Err(SerialError::Output(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "serial output did not drain; the rest is abandoned",
                )));
            }
        }
        self.uart.writer_mut().flush().map_err(SerialError::Output)
    }

    /// Room left in the receive FIFO, in bytes.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Queues host input for the guest to read, raising the receive
    /// interrupt if enabled. Returns how many bytes were queued (fewer than
    /// `input.len()` if the FIFO fills up; [`SerialError::FifoFull`] if none
    /// fit).
    pub fn enqueue_input(&mut self, input: &[u8]) -> Result<usize, SerialError> {
        self.uart.enqueue_raw_bytes(input).map_err(SerialError::from)
    }

    /// Logs a UART error at debug level; output errors only the first time.
    fn log_error(&mut self, e: UartError<io::Error>) {
        match e {
            UartError::IOError(e) => {
                if !self.output_error_logged {
                    self.output_error_logged = true;
                    log::debug!("serial output failed ({e}); dropping output bytes from now on");
                }
            }
            e => log::debug!("serial: {}", SerialError::from(e)),
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0xff);
        // Only byte accesses are meaningful; a wider one reads register
        // `offset` into byte 0.
        if let (Some(first), Ok(reg)) = (data.first_mut(), u8::try_from(offset)) {
            if offset < SERIAL_REGS_LEN {
                *first = self.uart.read(reg);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        if let (Some(&value), Ok(reg)) = (data.first(), u8::try_from(offset)) {
            match (offset, &mut self.watch) {
                (3, _) => self.dlab = value & 0x80 != 0,
                (0, Some(w)) if !self.dlab => w.byte(value),
                _ => {}
            }
            if offset < SERIAL_REGS_LEN {
                if let Err(e) = self.uart.write(reg, value) {
                    self.log_error(e);
                }
            }
        }
        None
    }

    fn save_state(&self) -> Option<DeviceState> {
        Some(DeviceState::Serial(self.uart.state().into()))
    }

    fn load_state(&mut self, state: &DeviceState) -> Result<(), StateError> {
        let DeviceState::Serial(regs) = state else {
            return Err(state.wrong("serial"));
        };
        // vm-superio refuses more than its FIFO holds; refuse it before the
        // UART is taken apart.
        if regs.in_buffer.len() > SERIAL_FIFO_LEN {
            return Err(StateError::Mismatch(format!(
                "serial receive FIFO of {} bytes (at most {SERIAL_FIFO_LEN})",
                regs.in_buffer.len()
            )));
        }
        let irq = self
            .irq_evt()
            .try_clone()
            .map_err(|e| StateError::Mismatch(format!("serial eventfd: {e}")))?;
        let placeholder = Serial::with_events(
            EventFdTrigger::new(
                irq.try_clone()
                    .map_err(|e| StateError::Mismatch(format!("serial eventfd: {e}")))?,
            ),
            Arc::clone(&self.counters),
            Box::new(io::sink()) as Box<dyn Write + Send>,
        );
        let old = std::mem::replace(&mut self.uart, placeholder);
        let writer = old.into_writer();
        self.uart = Serial::from_state(
            &regs.into(),
            EventFdTrigger::new(irq),
            Arc::clone(&self.counters),
            writer,
        )
        .map_err(|e| StateError::Mismatch(format!("serial: {e:?}")))?;
        self.dlab = regs.line_control & 0x80 != 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LSR: u64 = 5;
    const IER_RDA: u8 = 0x01;
    const IER_THRE: u8 = 0x02;
    const LSR_DR: u8 = 0x01;
    const LSR_THRE: u8 = 0x20;

    use crate::devices::serial_out::tests::SharedBuf;

    struct Broken;

    impl Write for Broken {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }

        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
    }

    fn evt() -> EventFd {
        EventFd::new(libc::EFD_NONBLOCK).unwrap()
    }

    fn buffered() -> (SerialDevice, SharedBuf, EventFd) {
        let buf = SharedBuf::default();
        let irq = evt();
        let dev = SerialDevice::new(
            SerialOutput::Custom(Box::new(buf.clone())),
            irq.try_clone().unwrap(),
        );
        (dev, buf, irq)
    }

    fn read_reg(dev: &mut SerialDevice, offset: u64) -> u8 {
        let mut b = [0u8];
        dev.read(offset, &mut b);
        b[0]
    }

    #[test]
    fn thr_output() {
        let (mut dev, buf, _irq) = buffered();
        for &b in b"hi\n" {
            assert_eq!(dev.write(THR, &[b]), None);
        }
        assert_eq!(buf.0.lock().unwrap().as_slice(), b"hi\n");
        let c = dev.counters();
        assert_eq!((c.bytes_out(), c.bytes_dropped()), (3, 0));
        dev.flush().unwrap();
    }

    #[test]
    fn lsr_reports_thr_empty() {
        let (mut dev, _buf, _irq) = buffered();
        assert_ne!(read_reg(&mut dev, LSR) & LSR_THRE, 0);
        dev.write(THR, b"x");
        assert_ne!(read_reg(&mut dev, LSR) & LSR_THRE, 0);
    }

    #[test]
    fn ier_thre_raises_irq() {
        let (mut dev, _buf, irq) = buffered();
        // Nothing pending before the guest enables interrupts.
        assert_eq!(irq.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        dev.write(IER, &[IER_THRE]);
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(read_reg(&mut dev, IIR) & 0x0f, 0x02);
        // Once acknowledged (IIR read), each transmitted byte raises it again.
        dev.write(THR, b"a");
        assert_eq!(irq.read().unwrap(), 1);
        assert_eq!(read_reg(&mut dev, IIR) & 0x0f, 0x02);
        // The device's own handle is the same eventfd.
        dev.write(THR, b"b");
        assert_eq!(dev.irq_evt().read().unwrap(), 1);
        // Not acknowledged: no new interrupt.
        dev.write(THR, b"c");
        assert_eq!(irq.read().unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn failing_writer_counts_drops() {
        let irq = evt();
        let mut dev = SerialDevice::new(SerialOutput::Custom(Box::new(Broken)), irq.try_clone().unwrap());
        dev.write(IER, &[IER_THRE]);
        assert_eq!(irq.read().unwrap(), 1);
        for &b in b"lost" {
            read_reg(&mut dev, IIR);
            dev.write(THR, &[b]);
        }
        let c = dev.counters();
        assert_eq!((c.bytes_out(), c.bytes_dropped()), (0, 4));
        // The guest still sees THR empty and still gets its interrupt.
        assert_ne!(read_reg(&mut dev, LSR) & LSR_THRE, 0);
        assert_eq!(irq.read().unwrap(), 4);
        assert!(matches!(dev.flush(), Err(SerialError::Output(_))));
    }

    #[test]
    fn wide_and_out_of_range_accesses() {
        let (mut dev, buf, _irq) = buffered();
        // Wide read: byte 0 is the register, the rest all-ones.
        let mut data = [0u8; 4];
        dev.read(LSR, &mut data);
        assert_ne!(data[0] & LSR_THRE, 0);
        assert_eq!(&data[1..], &[0xff; 3]);
        // Wide write: only byte 0 is transmitted.
        dev.write(THR, b"ab");
        assert_eq!(buf.0.lock().unwrap().as_slice(), b"a");
        // Offsets past the registers are ignored.
        let mut one = [0u8];
        dev.read(8, &mut one);
        assert_eq!(one, [0xff]);
        dev.read(0x100, &mut one);
        assert_eq!(one, [0xff]);
        assert_eq!(dev.write(0x100, b"z"), None);
        dev.read(0, &mut []);
        assert_eq!(dev.write(0, &[]), None);
        assert_eq!(buf.0.lock().unwrap().as_slice(), b"a");
    }

    #[test]
    fn input_fifo() {
        let (mut dev, _buf, irq) = buffered();
        dev.write(IER, &[IER_RDA]);
        assert_eq!(dev.enqueue_input(b"ok").unwrap(), 2);
        assert_eq!(irq.read().unwrap(), 1);
        assert_ne!(read_reg(&mut dev, LSR) & LSR_DR, 0);
        assert_eq!(read_reg(&mut dev, THR), b'o');
        assert_eq!(read_reg(&mut dev, THR), b'k');
        assert_eq!(read_reg(&mut dev, LSR) & LSR_DR, 0);
        let cap = dev.input_capacity();
        let big = vec![b'x'; cap + 10];
        assert_eq!(dev.enqueue_input(&big).unwrap(), cap);
        assert!(matches!(dev.enqueue_input(b"y"), Err(SerialError::FifoFull)));
    }

    #[test]
    fn receive_fifo_is_saved_and_restored() {
        // Input the guest has not read yet (8250 RX FIFO, data ready) and the
        // receive interrupt enable survive a snapshot.
        let (mut dev, _buf, _irq) = buffered();
        dev.write(IER, &[IER_RDA]);
        dev.enqueue_input(b"hi").unwrap();
        assert_eq!(read_reg(&mut dev, THR), b'h');
        let state = dev.save_state().unwrap();
        let (mut back, _buf2, _irq2) = buffered();
        back.load_state(&state).unwrap();
        assert_ne!(read_reg(&mut back, LSR) & LSR_DR, 0);
        assert_eq!(read_reg(&mut back, IER), IER_RDA);
        assert_eq!(read_reg(&mut back, THR), b'i');
        assert_eq!(read_reg(&mut back, LSR) & LSR_DR, 0);
    }

    #[test]
    fn null_and_file_outputs() {
        let mut dev = SerialDevice::new(SerialOutput::Null, evt());
        dev.write(THR, b"x");
        assert_eq!(dev.counters().bytes_out(), 1);

        let path = std::env::temp_dir().join(format!(
            "berth-serial-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = File::create(&path).unwrap();
        let mut dev = SerialDevice::new(SerialOutput::File(file), evt());
        for &b in b"file\n" {
            dev.write(THR, &[b]);
        }
        dev.flush().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"file\n");
        std::fs::remove_file(&path).unwrap();
        assert!(format!("{:?}", SerialOutput::Null).contains("Null"));
    }

    #[test]
    fn device_is_send() {
        fn check<T: Send>() {}
        check::<SerialDevice>();
    }
}
