//! A chunked body's end, found as its bytes pass (RFC 9112 §7.1): sizes,
//! extensions and trailers checked, nothing kept.

/// Finds where a chunked body ends, passing over its bytes as they come.
#[derive(Debug, Default)]
pub(in crate::http::proxy::direct) struct Chunks {
    state: ChunkState,
    size: u64,
    digits: u8,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    Trailer,
    EndLf,
    Done,
}

impl Chunks {
    /// Reads `bytes`; `Ok(Some(n))` when the body ends after `n` of them.
    pub(in crate::http::proxy::direct) fn feed(
        &mut self,
        bytes: &[u8],
    ) -> Result<Option<usize>, &'static str> {
        use ChunkState::*;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        if self.digits == 15 {
                            return Err("a chunk size too large");
                        }
                        let d = (b as char).to_digit(16).unwrap_or(0);
                        self.size = self.size * 16 + u64::from(d);
                        self.digits += 1;
                    }
                    b';' | b' ' | b'\t' if self.digits > 0 => self.state = Extension,
                    b'\r' if self.digits > 0 => self.state = SizeLf,
                    _ => return Err("a malformed chunk size"),
                },
                Extension => match b {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err("a malformed chunk size line"),
                    _ => {}
                },
                SizeLf => {
                    if b != b'\n' {
                        return Err("a malformed chunk size line");
                    }
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                    self.digits = 0;
                }
                Data => {
                    let take = (self.size as usize).min(bytes.len() - i);
                    self.size -= take as u64;
                    i += take;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    continue;
                }
                DataCr => {
                    if b != b'\r' {
                        return Err("a chunk longer than its size");
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err("a chunk longer than its size");
                    }
                    self.state = Size;
                }
                TrailerStart => self.state = if b == b'\r' { EndLf } else { Trailer },
                Trailer => {
                    if b == b'\n' {
                        self.state = TrailerStart;
                    }
                }
                EndLf => {
                    if b != b'\n' {
                        return Err("a malformed end of the chunked body");
                    }
                    self.state = Done;
                    return Ok(Some(i + 1));
                }
                Done => return Ok(Some(i)),
            }
            i += 1;
        }
        Ok(None)
    }
}
