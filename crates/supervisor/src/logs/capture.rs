//! Reading a worker's pipe line by line into the store: a line longer than
//! the limit is kept cut (the rest is read and counted, never held).

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

use super::store::LogStore;

/// Reads lines from a worker pipe into the store until EOF.
pub async fn capture(
    store: Arc<LogStore>,
    agent_id: String,
    process_id: String,
    stream: &'static str,
    pipe: impl AsyncRead + Unpin,
) {
    let max = store.limits().line_bytes;
    let mut reader = BufReader::with_capacity(8 * 1024, pipe);
    let mut line: Vec<u8> = Vec::with_capacity(256);
    // Bytes of the current line as printed (more than `line` holds once cut).
    let mut length = 0usize;
    let push = |line: &mut Vec<u8>, length: usize| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if !text.is_empty() {
            let cut = (length > line.len()).then_some(length);
            store.push_line(&agent_id, &process_id, stream, text, cut);
        }
        line.clear();
        if line.capacity() > 4096 {
            line.shrink_to(256);
        }
    };
    loop {
        let (done, used) = match reader.fill_buf().await {
            Err(_) => break,
            Ok([]) => {
                if length > 0 {
                    push(&mut line, length);
                }
                break;
            }
            Ok(buf) => {
                let (done, take) = match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => (true, i),
                    None => (false, buf.len()),
                };
                let room = max.saturating_sub(line.len());
                line.extend_from_slice(&buf[..take.min(room)]);
                length += take;
                (done, if done { take + 1 } else { take })
            }
        };
        reader.consume(used);
        if done {
            push(&mut line, length);
            length = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{Filter, Limits};

    #[tokio::test]
    async fn capture_cuts_long_lines_and_says_so() {
        let store = LogStore::new(Limits::default(), false);
        let max = Limits::default().line_bytes;
        let mut data = vec![b'x'; max * 2 + 5];
        data.extend_from_slice(b"\nshort\r\n");
        // A JSON line over the limit is kept as cut text.
        data.extend_from_slice(b"{\"message\":\"");
        data.extend(std::iter::repeat_n(b'y', max));
        data.extend_from_slice(b"\"}\nlast");
        capture(
            Arc::clone(&store),
            "a".into(),
            "par-a".into(),
            "stdout",
            &data[..],
        )
        .await;
        let got = store.query(&Filter::default());
        assert_eq!(got.len(), 4);
        let marker = format!("… [cut: {} bytes]", max * 2 + 5);
        assert!(
            got[0].message.ends_with(&marker),
            "{}",
            &got[0].message[max - 10..]
        );
        assert_eq!(got[0].message.len(), max + marker.len());
        assert_eq!(got[0].line_bytes, Some(max * 2 + 5));
        assert_eq!(got[1].message, "short");
        assert_eq!(got[1].line_bytes, None);
        assert!(got[2].message.starts_with("{\"message\":\"yyy"));
        assert!(got[2]
            .message
            .ends_with(&format!("… [cut: {} bytes]", max + 14)));
        assert!(got[2].fields.is_none());
        assert_eq!(got[3].message, "last");
        let json = serde_json::to_value(&*got[0]).unwrap();
        assert_eq!(json["fields"]["line_bytes"], max * 2 + 5);
        assert_eq!(json["source"], "agent");
        assert_eq!(json["stream"], "stdout");
    }
}
