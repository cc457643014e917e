//! The remote protocol's transport layer, under gdbstub: what QEMU's stub
//! forgives on the wire, berth forgives too.
//!
//! gdbstub ends the session on any byte it does not expect, on a bad
//! checksum and on a `-` (retransmit) from gdb. On a serial line or with a
//! confused client that turns line noise into a lost session. [`Wire`] sits
//! between the socket and gdbstub:
//! - between packets only `$`, `+` and Ctrl-C (0x03) pass; other bytes are
//!   dropped (as QEMU's stub does in its idle state);
//! - a packet is held until its checksum is read; a bad one is answered with
//!   `-` and dropped, so gdb sends it again (no answer in no-ack mode);
//! - a `-` from gdb resends the stub's last packet.
//!
//! A packet whose command gdbstub cannot parse still ends the session (the
//! guest runs on and berth serves the next debugger).

use std::collections::VecDeque;

/// Longest packet held (gdbstub's own buffer is smaller; gdb asks for its
/// size in `qSupported`). A longer one is dropped like a bad checksum.
const MAX_PACKET: usize = 64 * 1024;

/// Where the reader is in gdb's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    /// Between packets.
    Idle,
    /// After `$`, before `#`.
    Body,
    /// After `#`: this many checksum digits read.
    Sum(u8),
}

/// The transport filter: bytes from gdb in, bytes for gdbstub and replies
/// for gdb out.
#[derive(Debug)]
pub struct Wire {
    state: In,
    /// The packet being read, from `$`.
    packet: Vec<u8>,
    /// Bytes that passed, not yet taken by gdbstub.
    ready: VecDeque<u8>,
    /// The stub's packet being written, from `$`.
    out: Vec<u8>,
    /// The stub's last complete packet (for a `-`).
    last: Vec<u8>,
    /// gdb asked for no-ack mode; the stub's next packet says whether it agreed.
    no_ack_asked: bool,
    /// No-ack mode is on: no `-` either way.
    no_ack: bool,
}

impl Default for Wire {
    fn default() -> Self {
        Wire::new()
    }
}

impl Wire {
    /// A filter at the start of a session.
    pub fn new() -> Wire {
        Wire {
            state: In::Idle,
            packet: Vec::new(),
            ready: VecDeque::new(),
            out: Vec::new(),
            last: Vec::new(),
            no_ack_asked: false,
            no_ack: false,
        }
    }

    /// A byte has passed and waits for gdbstub.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The next byte for gdbstub, if one has passed.
    pub fn take(&mut self) -> Option<u8> {
        self.ready.pop_front()
    }

    /// One byte from gdb. Returns what must be written back to gdb at once
    /// (a `-` or a resent packet), usually nothing.
    pub fn received(&mut self, byte: u8) -> Vec<u8> {
        match self.state {
            In::Idle => match byte {
                b'$' => {
                    self.packet.clear();
                    self.packet.push(byte);
                    self.state = In::Body;
                }
                b'+' | 0x03 => self.ready.push_back(byte),
                b'-' if !self.no_ack => return self.last.clone(),
                _ => log::debug!("gdb: dropped byte {byte:#04x} between packets"),
            },
            In::Body => {
                self.packet.push(byte);
                if byte == b'#' {
                    self.state = In::Sum(0);
                } else if byte == b'$' {
                    // A new packet starts: the unfinished one is lost.
                    self.packet.clear();
                    self.packet.push(byte);
                } else if self.packet.len() > MAX_PACKET {
                    self.state = In::Idle;
                    return self.bad("too long");
                }
            }
            In::Sum(n) => {
                self.packet.push(byte);
                if n == 0 {
                    self.state = In::Sum(1);
                } else {
                    self.state = In::Idle;
                    return self.complete();
                }
            }
        }
        Vec::new()
    }

    /// A packet's last checksum digit arrived.
    fn complete(&mut self) -> Vec<u8> {
        let n = self.packet.len();
        let body = &self.packet[1..n - 3];
        let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let given = std::str::from_utf8(&self.packet[n - 2..])
            .ok()
            .and_then(|s| u8::from_str_radix(s, 16).ok());
        if given != Some(sum) {
            return self.bad("bad checksum");
        }
        if body == b"QStartNoAckMode" {
            self.no_ack_asked = true;
        }
        self.ready.extend(self.packet.drain(..));
        Vec::new()
    }

    /// Drops the packet being read; asks gdb to send it again.
    fn bad(&mut self, why: &str) -> Vec<u8> {
        log::debug!("gdb: dropped packet ({why})");
        self.packet.clear();
        if self.no_ack {
            Vec::new()
        } else {
            vec![b'-']
        }
    }

    /// Bytes the stub wrote to gdb: the last packet is kept for a resend.
    pub fn sent(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'$' {
                self.out.clear();
            }
            if !self.out.is_empty() || b == b'$' {
                self.out.push(b);
            }
            let n = self.out.len();
            if n >= 3 && self.out[n - 3] == b'#' {
                self.last = std::mem::take(&mut self.out);
                if std::mem::take(&mut self.no_ack_asked) && self.last.starts_with(b"$OK#") {
                    self.no_ack = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(body: &str) -> Vec<u8> {
        let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
        format!("${body}#{sum:02x}").into_bytes()
    }

    /// Feeds `bytes`; returns (bytes for gdbstub, replies to gdb).
    fn feed(w: &mut Wire, bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut back = Vec::new();
        for &b in bytes {
            back.extend(w.received(b));
        }
        (std::iter::from_fn(|| w.take()).collect(), back)
    }

    #[test]
    fn good_packets_acks_and_ctrl_c_pass_unchanged() {
        let mut w = Wire::new();
        let mut input = packet("?");
        input.push(b'+');
        input.push(0x03);
        input.extend(packet("m1000,4"));
        assert_eq!(feed(&mut w, &input), (input.clone(), vec![]));
    }

    #[test]
    fn noise_between_packets_is_dropped() {
        let mut w = Wire::new();
        let mut input = b"garbage\x00\xff#12".to_vec();
        input.extend(packet("?"));
        input.extend(b"zz");
        assert_eq!(feed(&mut w, &input), (packet("?"), vec![]));
    }

    #[test]
    fn a_bad_checksum_is_answered_with_a_nack_and_dropped() {
        let mut w = Wire::new();
        let (pass, back) = feed(&mut w, b"$m1000,4#00$?#zz");
        assert_eq!((pass, back), (vec![], b"--".to_vec()));
        // An unfinished packet cut by a new one is lost, the new one passes.
        let mut input = b"$m10".to_vec();
        input.extend(packet("g"));
        assert_eq!(feed(&mut w, &input), (packet("g"), vec![]));
    }

    #[test]
    fn an_overlong_packet_is_dropped() {
        let mut w = Wire::new();
        let mut input = vec![b'$'];
        input.extend(std::iter::repeat_n(b'a', MAX_PACKET + 10));
        input.extend(b"#00");
        input.extend(packet("?"));
        let (pass, back) = feed(&mut w, &input);
        assert_eq!(pass, packet("?"));
        assert_eq!(back, b"-");
    }

    #[test]
    fn a_nack_resends_the_last_packet() {
        let mut w = Wire::new();
        assert_eq!(feed(&mut w, b"-"), (vec![], vec![]), "nothing sent yet");
        w.sent(b"+");
        w.sent(b"$T05thread:01;#");
        w.sent(b"ab");
        assert_eq!(feed(&mut w, b"-"), (vec![], b"$T05thread:01;#ab".to_vec()));
        w.sent(&packet("OK"));
        assert_eq!(feed(&mut w, b"-").1, packet("OK"));
    }

    #[test]
    fn no_ack_mode_stops_nacks_once_the_stub_agrees() {
        let mut w = Wire::new();
        let (pass, _) = feed(&mut w, &packet("QStartNoAckMode"));
        assert_eq!(pass, packet("QStartNoAckMode"));
        assert_eq!(feed(&mut w, b"$?#00").1, b"-", "not agreed yet");
        w.sent(b"+");
        w.sent(&packet("OK"));
        assert_eq!(feed(&mut w, b"$?#00"), (vec![], vec![]));
        assert_eq!(feed(&mut w, b"-"), (vec![], vec![]));
    }
}
