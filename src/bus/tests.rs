//! The bus's tests: overlaps refused and named, dispatch offsets, straddling
//! and unhandled accesses, counters, VM events, poisoned devices, concurrency,
//! device state.

use super::*;

/// Test device: reads return `offset + i` per byte, records writes, and
/// returns a configured event on write.
#[derive(Default)]
struct Probe {
    last_read: Option<(u64, usize)>,
    last_write: Option<(u64, Vec<u8>)>,
    event: Option<VmEvent>,
}

impl BusDevice for Probe {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.last_read = Some((offset, data.len()));
        for (i, b) in data.iter_mut().enumerate() {
            *b = (offset as u8).wrapping_add(i as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Option<VmEvent> {
        self.last_write = Some((offset, data.to_vec()));
        self.event
    }
}

fn probe() -> Arc<Mutex<Probe>> {
    Arc::new(Mutex::new(Probe::default()))
}

fn bus_with(space: AddressSpace, base: u64, len: u64, name: &str) -> Bus {
    let mut bus = Bus::new();
    bus.insert(space, base, len, name, probe()).unwrap();
    bus
}

#[test]
fn a_device_without_state_is_unsaved_unless_stateless() {
    let bus = bus_with(AddressSpace::Pio, 0x100, 0x10, "probe");
    assert_eq!(bus.unsaved(), vec!["probe@pio:0x100".to_string()]);
    let mut bus = Bus::new();
    let exit = crate::devices::debug_exit::DebugExit::new(4).unwrap();
    bus.insert(
        AddressSpace::Pio,
        0xf4,
        4,
        "debug-exit",
        Arc::new(Mutex::new(exit)),
    )
    .unwrap();
    assert!(bus.unsaved().is_empty());
}

#[test]
fn bus_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Bus>();
}

#[test]
fn overlap_refused() {
    use AddressSpace::Pio;
    let mut bus = bus_with(Pio, 0x100, 0x10, "a");
    // Exact overlap.
    assert!(matches!(
        bus.insert(Pio, 0x100, 0x10, "b", probe()),
        Err(BusError::Overlap { .. })
    ));
    // Partial at the start of the existing range.
    assert!(bus.insert(Pio, 0xf8, 0x10, "b", probe()).is_err());
    // Partial at the end of the existing range.
    assert!(bus.insert(Pio, 0x10f, 0x10, "b", probe()).is_err());
    // New range contains the existing one.
    assert!(bus.insert(Pio, 0x0, 0x1000, "b", probe()).is_err());
    // New range inside the existing one.
    assert!(bus.insert(Pio, 0x104, 0x2, "b", probe()).is_err());
    // Adjacent on both sides is fine.
    bus.insert(Pio, 0xf0, 0x10, "below", probe()).unwrap();
    bus.insert(Pio, 0x110, 0x10, "above", probe()).unwrap();
    // Containment spanning several existing ranges.
    assert!(bus.insert(Pio, 0xe0, 0x100, "b", probe()).is_err());
    assert_eq!(bus.ranges().len(), 3);
}

#[test]
fn overlap_error_names_both() {
    let mut bus = bus_with(AddressSpace::Mmio, 0x1000, 0x100, "uart");
    let err = bus
        .insert(AddressSpace::Mmio, 0x10f0, 0x20, "rtc", probe())
        .unwrap_err();
    assert_eq!(
        err,
        BusError::Overlap {
            space: AddressSpace::Mmio,
            name: "rtc".into(),
            base: 0x10f0,
            end: 0x1110,
            existing: "uart".into(),
            existing_base: 0x1000,
            existing_end: 0x1100,
        }
    );
    let msg = err.to_string();
    for part in ["rtc", "uart", "0x10f0", "0x1110", "0x1000", "0x1100", "mmio"] {
        assert!(msg.contains(part), "{msg} lacks {part}");
    }
}

#[test]
fn spaces_are_independent() {
    let mut bus = bus_with(AddressSpace::Pio, 0x3f8, 8, "com1");
    bus.insert(AddressSpace::Mmio, 0x3f8, 8, "mmio", probe()).unwrap();
    let mut b = [0u8; 1];
    assert!(bus.read(AddressSpace::Mmio, 0x3f8, &mut b));
    assert!(bus.read(AddressSpace::Pio, 0x3f8, &mut b));
}

#[test]
fn zero_length_and_overflow_refused() {
    let mut bus = Bus::new();
    assert!(matches!(
        bus.insert(AddressSpace::Pio, 0x10, 0, "z", probe()),
        Err(BusError::ZeroLength { .. })
    ));
    assert!(matches!(
        bus.insert(AddressSpace::Mmio, u64::MAX, 2, "o", probe()),
        Err(BusError::Overflow { .. })
    ));
    assert!(matches!(
        bus.insert(AddressSpace::Mmio, u64::MAX - 0xf, 0x10, "o", probe()),
        Err(BusError::Overflow { .. })
    ));
    bus.insert(AddressSpace::Mmio, u64::MAX - 0xf, 0xf, "top", probe())
        .unwrap();
    let mut b = [0u8; 1];
    assert!(bus.read(AddressSpace::Mmio, u64::MAX - 1, &mut b));
    assert!(!bus.read(AddressSpace::Mmio, u64::MAX, &mut b));
}

#[test]
fn read_dispatch_offset() {
    let dev = probe();
    let mut bus = Bus::new();
    bus.insert(AddressSpace::Mmio, 0xd000_0000, 0x1000, "d", dev.clone())
        .unwrap();
    let mut data = [0u8; 4];
    assert!(bus.read(AddressSpace::Mmio, 0xd000_0010, &mut data));
    assert_eq!(data, [0x10, 0x11, 0x12, 0x13]);
    assert_eq!(dev.lock().unwrap().last_read, Some((0x10, 4)));
    // Last byte of the range.
    let mut one = [0u8; 1];
    assert!(bus.read(AddressSpace::Mmio, 0xd000_0fff, &mut one));
    assert_eq!(dev.lock().unwrap().last_read, Some((0xfff, 1)));
}

#[test]
fn write_dispatch_offset() {
    let dev = probe();
    let mut bus = Bus::new();
    bus.insert(AddressSpace::Pio, 0x60, 5, "kbd", dev.clone())
        .unwrap();
    assert_eq!(bus.write(AddressSpace::Pio, 0x64, &[0xfe]), (true, None));
    assert_eq!(dev.lock().unwrap().last_write, Some((4, vec![0xfe])));
}

#[test]
fn straddling_access_unhandled() {
    let dev = probe();
    let mut bus = Bus::new();
    bus.insert(AddressSpace::Pio, 0x3f8, 8, "com1", dev.clone())
        .unwrap();
    let mut data = [0u8; 4];
    assert!(!bus.read(AddressSpace::Pio, 0x3fe, &mut data));
    assert_eq!(data, [0xff; 4]);
    assert_eq!(bus.write(AddressSpace::Pio, 0x3ff, &[1, 2]), (false, None));
    // Ending exactly at the end of the range is fine.
    assert!(bus.read(AddressSpace::Pio, 0x3fc, &mut data));
    let d = dev.lock().unwrap();
    assert_eq!(d.last_read, Some((4, 4)));
    assert!(d.last_write.is_none());
    drop(d);
    let u = bus.unhandled();
    assert_eq!((u.pio_reads, u.pio_writes), (1, 1));
    assert_eq!(bus.stats()[0].reads, 1);
}

#[test]
fn unhandled_read_all_ones() {
    let bus = bus_with(AddressSpace::Mmio, 0x1000, 0x10, "d");
    for size in [1usize, 2, 4, 8] {
        let mut data = vec![0u8; size];
        assert!(!bus.read(AddressSpace::Mmio, 0x2000, &mut data));
        assert!(data.iter().all(|&b| b == 0xff), "size {size}");
        // Below the first range too.
        data.fill(0);
        assert!(!bus.read(AddressSpace::Mmio, 0x10, &mut data));
        assert!(data.iter().all(|&b| b == 0xff), "size {size}");
    }
    // Nothing at all in PIO.
    let mut data = [0u8; 2];
    assert!(!bus.read(AddressSpace::Pio, 0x80, &mut data));
    assert_eq!(data, [0xff, 0xff]);
    assert_eq!(bus.write(AddressSpace::Pio, 0x80, &[0]), (false, None));
}

#[test]
fn counters() {
    let dev = probe();
    let mut bus = Bus::new();
    bus.insert(AddressSpace::Pio, 0x3f8, 8, "com1", dev.clone())
        .unwrap();
    bus.insert(AddressSpace::Pio, 0x2f8, 8, "com2", dev.clone())
        .unwrap();
    bus.insert(AddressSpace::Mmio, 0x1000, 4, "m", probe()).unwrap();
    let mut b = [0u8; 1];
    for _ in 0..3 {
        bus.read(AddressSpace::Pio, 0x3fd, &mut b);
    }
    bus.write(AddressSpace::Pio, 0x3f8, b"x");
    bus.write(AddressSpace::Pio, 0x2f8, b"y");
    bus.read(AddressSpace::Mmio, 0x1000, &mut b);
    // Unhandled: more than the log limit, counting must continue.
    for _ in 0..40 {
        bus.read(AddressSpace::Mmio, 0x9000, &mut b);
    }
    bus.write(AddressSpace::Mmio, 0x9000, &[0]);
    bus.write(AddressSpace::Pio, 0x80, &[0]);
    bus.write(AddressSpace::Pio, 0x80, &[0]);

    let stats = bus.stats();
    let summary: Vec<_> = stats
        .iter()
        .map(|s| (s.name.as_str(), s.space, s.base, s.len, s.reads, s.writes))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("com2", AddressSpace::Pio, 0x2f8, 8, 0, 1),
            ("com1", AddressSpace::Pio, 0x3f8, 8, 3, 1),
            ("m", AddressSpace::Mmio, 0x1000, 4, 1, 0),
        ]
    );
    assert_eq!(
        bus.unhandled(),
        UnhandledStats {
            pio_reads: 0,
            pio_writes: 2,
            mmio_reads: 40,
            mmio_writes: 1,
        }
    );
    assert_eq!(
        bus.ranges(),
        vec![
            (AddressSpace::Pio, 0x2f8, 8, "com2".to_string()),
            (AddressSpace::Pio, 0x3f8, 8, "com1".to_string()),
            (AddressSpace::Mmio, 0x1000, 4, "m".to_string()),
        ]
    );
}

#[test]
fn vm_event_passthrough() {
    let dev = probe();
    dev.lock().unwrap().event = Some(VmEvent::DebugExit(3));
    let mut bus = Bus::new();
    bus.insert(AddressSpace::Pio, 0xf4, 4, "debug-exit", dev.clone())
        .unwrap();
    assert_eq!(
        bus.write(AddressSpace::Pio, 0xf4, &[1]),
        (true, Some(VmEvent::DebugExit(3)))
    );
    dev.lock().unwrap().event = Some(VmEvent::Reset);
    assert_eq!(
        bus.write(AddressSpace::Pio, 0xf4, &[1]),
        (true, Some(VmEvent::Reset))
    );
}

#[test]
fn poisoned_device_still_dispatches() {
    let dev = probe();
    let mut bus = Bus::new();
    bus.insert(AddressSpace::Pio, 0x70, 2, "rtc", dev.clone())
        .unwrap();
    let d2 = dev.clone();
    let _ = std::thread::spawn(move || {
        let _g = d2.lock().unwrap();
        panic!("poison");
    })
    .join();
    assert!(dev.is_poisoned());
    let mut b = [0u8; 1];
    assert!(bus.read(AddressSpace::Pio, 0x71, &mut b));
    assert_eq!(b, [1]);
}

#[test]
fn concurrent_access() {
    let mut bus = Bus::new();
    bus.insert(AddressSpace::Pio, 0x3f8, 8, "com1", probe()).unwrap();
    let bus = Arc::new(bus);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                let mut b = [0u8; 1];
                for _ in 0..1000 {
                    bus.read(AddressSpace::Pio, 0x3f8, &mut b);
                    bus.read(AddressSpace::Pio, 0x80, &mut b);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(bus.stats()[0].reads, 4000);
    assert_eq!(bus.unhandled().pio_reads, 4000);
}

#[test]
fn le_value_formats() {
    assert_eq!(le_value(&[0x34, 0x12]), 0x1234);
    assert_eq!(le_value(&[]), 0);
    assert_eq!(le_value(&[1; 12]), 0x0101_0101_0101_0101);
}
