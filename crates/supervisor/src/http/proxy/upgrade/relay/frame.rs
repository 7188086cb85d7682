//! WebSocket frame headers (RFC 6455 §5.2): read from the bytes in passage,
//! and the close frames the relay writes itself.

/// One frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    /// Bytes of the header itself (2 to 14).
    pub size: usize,
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: u64,
}

pub(super) const CONTINUATION: u8 = 0;
pub(super) const CLOSE: u8 = 8;

/// The header at the start of `b`, or `None` while it is incomplete.
pub(super) fn parse_header(b: &[u8]) -> Option<Header> {
    if b.len() < 2 {
        return None;
    }
    let masked = b[1] & 0x80 != 0;
    let (payload, mut size) = match b[1] & 0x7f {
        126 => (u64::from(u16::from_be_bytes([*b.get(2)?, *b.get(3)?])), 4),
        127 => {
            let bytes: [u8; 8] = b.get(2..10)?.try_into().ok()?;
            (u64::from_be_bytes(bytes), 10)
        }
        n => (u64::from(n), 2),
    };
    if masked {
        size += 4;
    }
    if b.len() < size {
        return None;
    }
    Some(Header {
        size,
        fin: b[0] & 0x80 != 0,
        rsv: b[0] & 0x70,
        opcode: b[0] & 0x0f,
        masked,
        payload,
    })
}

/// A close frame with `code` and `reason`; masked (as a client's must be)
/// when it goes to the worker.
pub(super) fn close_frame(code: u16, reason: &str, masked: bool) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..reason.len().min(123)]);
    let mut frame = vec![0x80 | CLOSE, payload.len() as u8];
    if masked {
        frame[1] |= 0x80;
        let key = fastrand::u32(..).to_be_bytes();
        frame.extend_from_slice(&key);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
    }
    frame.extend_from_slice(&payload);
    frame
}
