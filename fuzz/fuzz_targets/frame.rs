//! The worker's host frame decoder on arbitrary bytes: never panics, every
//! frame it yields re-encodes to the bytes it was read from, and it never
//! takes more bytes than it was given.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use par_worker::host::protocol::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut consumed = 0usize;
    loop {
        let before = buf.len();
        match decode(&mut buf) {
            Ok(Some(frame)) => {
                let taken = before - buf.len();
                let again = encode(frame.kind, frame.id, &frame.header, &frame.body);
                assert_eq!(&again[..], &data[consumed..consumed + taken]);
                consumed += taken;
            }
            Ok(None) => {
                assert_eq!(
                    buf.len(),
                    before,
                    "an incomplete frame must not be consumed"
                );
                break;
            }
            Err(_) => break,
        }
    }
    assert!(consumed <= data.len());
});
