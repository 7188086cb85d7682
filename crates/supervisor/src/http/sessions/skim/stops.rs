//! Where a string stops, sixteen bytes a step: a bit per byte for a quote,
//! a backslash or a control byte, and one for a byte outside ASCII.

/// Of sixteen bytes, one bit each: where a string stops (a quote, a
/// backslash or a control byte) and which are outside ASCII.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct Stops {
    pub stop: u32,
    pub high: u32,
}

/// `Stops` of the sixteen bytes at `i`; past the end of `b` every byte
/// stops (as a control byte would), so a scan never runs past it.
#[inline(always)]
pub(super) fn stops_at(b: &[u8], i: usize) -> Stops {
    if let Some(w) = b.get(i..i + 16) {
        return stops(w.try_into().unwrap_or(&[0; 16]));
    }
    if b.len() >= 16 && i <= b.len() {
        // The last sixteen, shifted down to `i`; the bytes past the end stop.
        let back = i - (b.len() - 16);
        let s = stops(b[b.len() - 16..].try_into().unwrap_or(&[0; 16]));
        let past = 0xffff << (16 - back) & 0xffff;
        return Stops {
            stop: s.stop >> back | past,
            high: s.high >> back & !past,
        };
    }
    let mut w = [0u8; 16];
    let rest = b.get(i..).unwrap_or_default();
    w[..rest.len()].copy_from_slice(rest);
    stops(&w)
}

/// `Stops` of sixteen bytes: SSE2, part of every x86-64 CPU.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
#[inline(always)]
fn stops(w: &[u8; 16]) -> Stops {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_min_epu8, _mm_movemask_epi8, _mm_or_si128,
        _mm_set1_epi8, _mm_xor_si128,
    };
    // SAFETY: SSE2 is in x86-64's baseline, enabled for every x86-64
    // target; the load reads the sixteen bytes `w` borrows.
    unsafe {
        let v = _mm_loadu_si128(w.as_ptr().cast());
        // A quote xor 2 is 0x20; a control byte xor 2 stays below it.
        let y = _mm_xor_si128(v, _mm_set1_epi8(0x02));
        let quote_or_control = _mm_cmpeq_epi8(_mm_min_epu8(y, _mm_set1_epi8(0x20)), y);
        let backslash = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
        Stops {
            stop: _mm_movemask_epi8(_mm_or_si128(quote_or_control, backslash)) as u32,
            high: _mm_movemask_epi8(v) as u32,
        }
    }
}

/// `Stops` of sixteen bytes, a byte at a time (other targets; the x86-64
/// one is tested against it).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn stops_bytewise(w: &[u8; 16]) -> Stops {
    let mut s = Stops { stop: 0, high: 0 };
    for (k, &c) in w.iter().enumerate() {
        s.stop |= u32::from(c < 0x20 || c == b'"' || c == b'\\') << k;
        s.high |= u32::from(c >= 0x80) << k;
    }
    s
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn stops(w: &[u8; 16]) -> Stops {
    stops_bytewise(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_stops_where_each_byte_says() {
        // Every byte value at every place of a window, and windows that run
        // past the end (whose missing bytes stop), against a byte at a time.
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for len in 0..40usize {
            for _ in 0..64 {
                let b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                for i in 0..=len {
                    let mut want = Stops { stop: 0, high: 0 };
                    for k in 0..16 {
                        match b.get(i + k) {
                            Some(&c) => {
                                let one = stops_bytewise(&[c; 16]);
                                want.stop |= (one.stop & 1) << k;
                                want.high |= (one.high & 1) << k;
                            }
                            None => want.stop |= 1 << k,
                        }
                    }
                    assert_eq!(stops_at(&b, i), want, "{b:?} at {i}");
                }
            }
        }
        for c in 0..=255u8 {
            for at in 0..16 {
                let mut w = [b'a'; 16];
                w[at] = c;
                assert_eq!(stops(&w), stops_bytewise(&w), "{c:#x} at {at}");
            }
        }
    }
}
