//! The relay's frame parsing, admission and pass-through.

use super::*;
use tokio::io::AsyncReadExt;

#[test]
fn headers_of_every_length_form() {
    assert_eq!(parse_header(&[0x81]), None);
    let h = parse_header(&[0x81, 0x05]).unwrap();
    assert_eq!(
        (h.size, h.fin, h.opcode, h.payload, h.masked),
        (2, true, 1, 5, false)
    );
    let h = parse_header(&[0x02, 0xfe, 0x01, 0x00, 1, 2, 3, 4]).unwrap();
    assert_eq!(
        (h.size, h.fin, h.opcode, h.payload, h.masked),
        (8, false, 2, 256, true)
    );
    assert_eq!(parse_header(&[0x02, 0xfe, 0x01, 0x00, 1, 2, 3]), None);
    let mut b = vec![0x82, 0x7f];
    b.extend_from_slice(&(70_000u64).to_be_bytes());
    assert_eq!(parse_header(&b).unwrap().payload, 70_000);
    assert_eq!(parse_header(&b).unwrap().size, 10);
}

#[test]
fn admission_follows_the_protocol_and_the_limits() {
    let limits = Limits {
        max_message: 1000,
        max_frame: 400,
    };
    let mut up = Inbound::new(true, &[]);
    let h = |fin: bool, opcode: u8, masked: bool, payload: u64| Header {
        size: 2,
        fin,
        rsv: 0,
        opcode,
        masked,
        payload,
    };
    // Unmasked from a client, reserved opcodes, long or fragmented controls.
    assert_eq!(
        up.admit(&h(true, 2, false, 1), limits),
        Err(Pumped::Protocol)
    );
    assert_eq!(
        up.admit(&h(true, 3, true, 1), limits),
        Err(Pumped::Protocol)
    );
    assert_eq!(
        up.admit(&h(true, 9, true, 126), limits),
        Err(Pumped::Protocol)
    );
    assert_eq!(
        up.admit(&h(false, 9, true, 1), limits),
        Err(Pumped::Protocol)
    );
    // A continuation with no message begun.
    assert_eq!(
        up.admit(&h(true, 0, true, 1), limits),
        Err(Pumped::Protocol)
    );
    assert_eq!(
        up.admit(&h(true, 2, true, 401), limits),
        Err(Pumped::TooBig)
    );
    // 3 x 300 fits; a fourth does not; a ping in between is fine.
    assert_eq!(up.admit(&h(false, 2, true, 300), limits), Ok(()));
    // A new message before the last one ended.
    assert_eq!(
        up.admit(&h(true, 1, true, 1), limits),
        Err(Pumped::Protocol)
    );
    assert_eq!(up.admit(&h(false, 0, true, 300), limits), Ok(()));
    assert_eq!(up.admit(&h(true, 9, true, 4), limits), Ok(()));
    assert_eq!(up.admit(&h(false, 0, true, 300), limits), Ok(()));
    assert_eq!(
        up.admit(&h(true, 0, true, 101), limits),
        Err(Pumped::TooBig)
    );
    assert_eq!(up.admit(&h(true, 0, true, 100), limits), Ok(()));
    assert!(!up.in_message);
    // From a worker, frames must not be masked.
    let mut down = Inbound::new(false, &[]);
    assert_eq!(
        down.admit(&h(true, 1, true, 1), limits),
        Err(Pumped::Protocol)
    );
    assert_eq!(down.admit(&h(true, 1, false, 1), limits), Ok(()));
}

#[test]
fn close_frames_are_masked_toward_the_worker_only() {
    let f = close_frame(1009, "message too big", false);
    assert_eq!(&f[..4], &[0x88, 17, 0x03, 0xf1]);
    assert_eq!(&f[4..], b"message too big");
    let f = close_frame(1001, "idle timeout", true);
    assert_eq!(f[1], 0x80 | 14);
    let key = [f[2], f[3], f[4], f[5]];
    let payload: Vec<u8> = f[6..]
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    assert_eq!(&payload[..2], &1001u16.to_be_bytes());
    assert_eq!(&payload[2..], b"idle timeout");
}

/// Frames cross whole and in order through a small buffer, a large
/// fragmented message among them; nothing of it is held.
#[tokio::test]
async fn frames_pass_through_as_they_are() {
    let (mut client, relay_side) = tokio::io::duplex(64 * 1024);
    let (worker_side, mut worker) = tokio::io::duplex(64 * 1024);
    let mut input = Vec::new();
    let key = [1, 2, 3, 4];
    let frame = |fin: bool, op: u8, payload: &[u8]| {
        let mut f = vec![(u8::from(fin) << 7) | op];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        f
    };
    input.extend(frame(true, 1, b"hello"));
    input.extend(frame(false, 2, &vec![7; 100_000]));
    input.extend(frame(true, 9, b"ping"));
    input.extend(frame(true, 0, &vec![8; 70_000]));
    input.extend(close_frame(1000, "bye", true));
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let (m_in, m_out) = (AtomicU64::new(0), AtomicU64::new(0));
    let relay = Relay {
        limits: Limits {
            max_message: 1 << 20,
            max_frame: 1 << 20,
        },
        idle: Duration::from_secs(60),
        messages_in: &m_in,
        messages_out: &m_out,
        shutdown,
    };
    let expected = input.clone();
    let run = relay.run(relay_side, worker_side, &[]);
    let drive = async {
        let mut got = vec![0; expected.len()];
        let (w, r) = tokio::join!(client.write_all(&input), worker.read_exact(&mut got));
        w.unwrap();
        r.unwrap();
        assert!(got == expected, "the worker got other bytes");
        // The worker's reply to the close ends the relay.
        worker
            .write_all(&close_frame(1000, "bye", false))
            .await
            .unwrap();
        let mut reply = vec![0; 7];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, close_frame(1000, "bye", false));
    };
    tokio::join!(run, drive);
    assert_eq!(m_in.load(Ordering::Relaxed), 2);
}

/// A masked frame from a client.
fn client_frame(fin: bool, op: u8, payload: &[u8]) -> Vec<u8> {
    let key = [9, 8, 7, 6];
    let mut f = vec![(u8::from(fin) << 7) | op, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn relay_for_test<'a>(
    m_in: &'a AtomicU64,
    m_out: &'a AtomicU64,
    shutdown: tokio::sync::watch::Receiver<bool>,
) -> Relay<'a> {
    Relay {
        limits: Limits {
            max_message: 1 << 20,
            max_frame: 1 << 20,
        },
        idle: Duration::from_secs(60),
        messages_in: m_in,
        messages_out: m_out,
        shutdown,
    }
}

/// Frames that arrive together leave together, each counted; a frame the
/// protocol does not allow among them stops the relay at its first byte:
/// the frames before it pass, nothing of it does, and both sides get a close.
#[tokio::test]
async fn frames_read_together_pass_together_up_to_a_bad_one() {
    let (mut client, relay_side) = tokio::io::duplex(64 * 1024);
    let (worker_side, mut worker) = tokio::io::duplex(64 * 1024);
    let mut good = Vec::new();
    for i in 0..10u8 {
        good.extend(client_frame(true, 1, &[b'a' + i; 5]));
    }
    let mut input = good.clone();
    // Not masked: a client's frames must be.
    input.extend_from_slice(&[0x81, 0x02, b'n', b'o']);
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let (m_in, m_out) = (AtomicU64::new(0), AtomicU64::new(0));
    let relay = relay_for_test(&m_in, &m_out, shutdown);
    let run = relay.run(relay_side, worker_side, &[]);
    let drive = async {
        client.write_all(&input).await.unwrap();
        let mut got = vec![0; good.len()];
        worker.read_exact(&mut got).await.unwrap();
        assert!(got == good, "the worker got other bytes");
        // Then the relay's own close, masked, 1001.
        let mut head = [0u8; 6];
        worker.read_exact(&mut head).await.unwrap();
        assert_eq!(head[0], 0x88);
        let len = usize::from(head[1] & 0x7f);
        let mut payload = vec![0; len];
        worker.read_exact(&mut payload).await.unwrap();
        let code = u16::from_be_bytes([payload[0] ^ head[2], payload[1] ^ head[3]]);
        assert_eq!(code, GOING_AWAY);
        worker
            .write_all(&close_frame(1001, "", false))
            .await
            .unwrap();
        let mut reply = vec![0; 4];
        client.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..4], &[0x88, 16, 0x03, 0xea]);
        drop(client);
        drop(worker);
    };
    tokio::join!(run, drive);
    assert_eq!(m_in.load(Ordering::Relaxed), 10);
}

/// What hyper read from the worker past its 101 goes to the client first.
#[tokio::test]
async fn bytes_read_with_the_handshake_come_first() {
    let (mut client, relay_side) = tokio::io::duplex(1024);
    let (worker_side, mut worker) = tokio::io::duplex(1024);
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let (m_in, m_out) = (AtomicU64::new(0), AtomicU64::new(0));
    let relay = relay_for_test(&m_in, &m_out, shutdown);
    let ahead = [0x81, 0x02, b'h', b'i', 0x81, 0x03, b'y'];
    let run = relay.run(relay_side, worker_side, &ahead);
    let drive = async {
        worker.write_all(b"ou").await.unwrap();
        let mut got = [0u8; 9];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x81\x02hi\x81\x03you");
        client
            .write_all(&close_frame(1000, "", true))
            .await
            .unwrap();
        worker
            .write_all(&close_frame(1000, "", false))
            .await
            .unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, close_frame(1000, "", false));
    };
    tokio::join!(run, drive);
    assert_eq!(m_out.load(Ordering::Relaxed), 2);
}
