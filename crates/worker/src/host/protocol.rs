//! The framed protocol between the worker and the agent host (see `host.py`).
//!
//! Frame: `u32 length | u8 kind | u32 request id | u32 header length | header JSON | body`.

use bytes::{BufMut, Bytes, BytesMut};

/// Worker -> host frame kinds.
pub mod to_host {
    pub const INVOKE: u8 = 1;
    pub const CALL: u8 = 2;
    pub const HTTP: u8 = 3;
    pub const BODY: u8 = 4;
    pub const BODY_END: u8 = 5;
    pub const CANCEL: u8 = 6;
    pub const SHUTDOWN: u8 = 7;
    /// Flow control: the worker has passed on `u32` (body, big-endian) more bytes
    /// of this request's streamed response; the host may send that many more.
    pub const CREDIT: u8 = 8;
    /// Liveness: answered (`RESULT_OK`, same id) by the agent's event loop
    /// itself, so a loop blocked by agent code leaves it unanswered.
    pub const PING: u8 = 9;
    /// A WebSocket handshake: header = the scope (as for `HTTP`); the app's
    /// `receive` then yields `websocket.connect`.
    pub const WS_CONNECT: u8 = 20;
    /// A text message from the client (body = UTF-8).
    pub const WS_TEXT: u8 = 21;
    /// A binary message from the client.
    pub const WS_BINARY: u8 = 22;
    /// The client closed or went away: header = `{code, reason}`.
    pub const WS_DISCONNECT: u8 = 23;
}

/// Bytes of a streamed response the host may send ahead of what the worker has
/// passed on to the client. Bounds the worker's memory per slow client.
pub const STREAM_WINDOW: u32 = 1024 * 1024;

/// Host -> worker frame kinds.
pub mod from_host {
    pub const HELLO: u8 = 10;
    pub const RESULT_OK: u8 = 11;
    pub const RESULT_ERR: u8 = 12;
    pub const RESP_START: u8 = 13;
    pub const RESP_FULL: u8 = 14;
    pub const RESP_BODY: u8 = 15;
    pub const RESP_END: u8 = 16;
    pub const RESP_ERROR: u8 = 17;
    /// The app accepted a WebSocket: header = `{subprotocol, headers}`.
    pub const WS_ACCEPT: u8 = 30;
    /// A text message from the app (body = UTF-8).
    pub const WS_TEXT: u8 = 31;
    /// A binary message from the app.
    pub const WS_BINARY: u8 = 32;
    /// The app closed the WebSocket (before accepting it: a refusal):
    /// header = `{code, reason}`.
    pub const WS_CLOSE: u8 = 33;
    /// Flow control the other way: the app has taken `u32` (body, big-endian)
    /// more bytes of client messages; the worker may forward that many more.
    pub const WS_CREDIT: u8 = 34;
}

/// What one WebSocket message costs against a flow-control window besides its
/// bytes, so that a flood of empty messages is bounded too.
pub const WS_MESSAGE_OVERHEAD: u32 = 64;

/// Bytes before the header: kind, id, header length (the u32 length is separate).
pub const FIXED: usize = 1 + 4 + 4;

/// Largest frame accepted from the host (a body chunk or a result).
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub id: u32,
    pub header: Bytes,
    pub body: Bytes,
}

/// Encodes one frame.
pub fn encode(kind: u8, id: u32, header: &[u8], body: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + FIXED + header.len() + body.len());
    b.put_u32((FIXED + header.len() + body.len()) as u32);
    b.put_u8(kind);
    b.put_u32(id);
    b.put_u32(header.len() as u32);
    b.put_slice(header);
    b.put_slice(body);
    b.freeze()
}

/// Why a frame could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is larger than the limit")]
    TooLarge(usize),
    #[error("malformed frame: header length {header} exceeds frame length {len}")]
    BadHeader { header: usize, len: usize },
}

/// Takes one complete frame off the front of `buf`, if there is one.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if len < FIXED {
        return Err(FrameError::BadHeader { header: 0, len });
    }
    if buf.len() < 4 + len {
        buf.reserve(4 + len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(4 + len).freeze();
    let kind = frame[4];
    let id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]);
    let hlen = u32::from_be_bytes([frame[9], frame[10], frame[11], frame[12]]) as usize;
    if hlen > len - FIXED {
        return Err(FrameError::BadHeader { header: hlen, len });
    }
    let _ = frame.split_to(4 + FIXED);
    let body = frame.split_off(hlen);
    Ok(Some(Frame {
        kind,
        id,
        header: frame,
        body,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `host.py` repeats every constant above (one `NAME = value` line each):
    /// both sides must agree on every number.
    #[test]
    fn host_py_uses_the_same_numbers() {
        let py: std::collections::HashMap<&str, u32> = crate::host::HOST_PY
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(" = ")?;
                let name = name.trim();
                let ok =
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                ok.then_some((name, value.trim().parse().ok()?))
            })
            .collect();
        let rust: &[(&str, u32)] = &[
            ("INVOKE", to_host::INVOKE.into()),
            ("CALL", to_host::CALL.into()),
            ("HTTP", to_host::HTTP.into()),
            ("BODY", to_host::BODY.into()),
            ("BODY_END", to_host::BODY_END.into()),
            ("CANCEL", to_host::CANCEL.into()),
            ("SHUTDOWN", to_host::SHUTDOWN.into()),
            ("CREDIT", to_host::CREDIT.into()),
            ("PING", to_host::PING.into()),
            ("WS_CONNECT", to_host::WS_CONNECT.into()),
            ("WS_IN_TEXT", to_host::WS_TEXT.into()),
            ("WS_IN_BINARY", to_host::WS_BINARY.into()),
            ("WS_DISCONNECT", to_host::WS_DISCONNECT.into()),
            ("HELLO", from_host::HELLO.into()),
            ("RESULT_OK", from_host::RESULT_OK.into()),
            ("RESULT_ERR", from_host::RESULT_ERR.into()),
            ("RESP_START", from_host::RESP_START.into()),
            ("RESP_FULL", from_host::RESP_FULL.into()),
            ("RESP_BODY", from_host::RESP_BODY.into()),
            ("RESP_END", from_host::RESP_END.into()),
            ("RESP_ERROR", from_host::RESP_ERROR.into()),
            ("WS_ACCEPT", from_host::WS_ACCEPT.into()),
            ("WS_OUT_TEXT", from_host::WS_TEXT.into()),
            ("WS_OUT_BINARY", from_host::WS_BINARY.into()),
            ("WS_CLOSE", from_host::WS_CLOSE.into()),
            ("WS_CREDIT", from_host::WS_CREDIT.into()),
            ("WS_MESSAGE_OVERHEAD", WS_MESSAGE_OVERHEAD),
            (
                "EXIT_PACKAGE_FAILURE",
                par_contract::exit::PACKAGE_FAILURE as u32,
            ),
        ];
        for (name, value) in rust {
            assert_eq!(py.get(name), Some(value), "host.py's {name}");
        }
        let kinds: std::collections::HashSet<u32> =
            rust[..rust.len() - 2].iter().map(|(_, v)| *v).collect();
        assert_eq!(
            kinds.len(),
            rust.len() - 2,
            "two frame kinds share a number"
        );
    }

    #[test]
    fn round_trip_and_partial_input() {
        let a = encode(7, 42, br#"{"a":1}"#, b"body");
        let b = encode(11, 1, b"", b"");
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&a[..5]);
        assert!(decode(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&a[5..]);
        buf.extend_from_slice(&b);
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, f.id), (7, 42));
        assert_eq!(&f.header[..], br#"{"a":1}"#);
        assert_eq!(&f.body[..], b"body");
        let f = decode(&mut buf).unwrap().unwrap();
        assert_eq!((f.kind, f.id, f.header.len(), f.body.len()), (11, 1, 0, 0));
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_header_longer_than_frame() {
        let mut raw = BytesMut::from(&encode(1, 1, b"xx", b"")[..]);
        raw[12] = 200;
        assert!(decode(&mut raw).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn frames() -> impl Strategy<Value = Vec<(u8, u32, Vec<u8>, Vec<u8>)>> {
            proptest::collection::vec(
                (
                    any::<u8>(),
                    any::<u32>(),
                    proptest::collection::vec(any::<u8>(), 0..300),
                    proptest::collection::vec(any::<u8>(), 0..2000),
                ),
                0..12,
            )
        }

        proptest! {
            /// Frames written back to back and read in arbitrary pieces come
            /// out whole, in order, and nothing is left over.
            #[test]
            fn any_split_of_a_frame_stream_decodes_to_the_same_frames(
                sent in frames(),
                cuts in proptest::collection::vec(1usize..700, 0..40),
            ) {
                let wire: Vec<u8> = sent
                    .iter()
                    .flat_map(|(k, id, h, b)| encode(*k, *id, h, b).to_vec())
                    .collect();
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                let (mut at, mut cut) = (0, cuts.iter().cycle());
                while at < wire.len() {
                    let n = if cuts.is_empty() { wire.len() } else { *cut.next().unwrap() };
                    let end = (at + n).min(wire.len());
                    buf.extend_from_slice(&wire[at..end]);
                    at = end;
                    while let Some(f) = decode(&mut buf).unwrap() {
                        got.push((f.kind, f.id, f.header.to_vec(), f.body.to_vec()));
                    }
                }
                prop_assert_eq!(got, sent);
                prop_assert!(buf.is_empty());
            }

            /// Whatever a (hostile) agent host writes, decoding ends in frames,
            /// a wait for more, or an error — never a panic, never a frame
            /// that claims more bytes than arrived.
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let mut buf = BytesMut::from(&bytes[..]);
                let mut consumed = 0usize;
                loop {
                    let before = buf.len();
                    match decode(&mut buf) {
                        Ok(Some(f)) => {
                            let used = before - buf.len();
                            prop_assert_eq!(used, 4 + FIXED + f.header.len() + f.body.len());
                            consumed += used;
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
                prop_assert!(consumed <= bytes.len());
            }
        }
    }
}
