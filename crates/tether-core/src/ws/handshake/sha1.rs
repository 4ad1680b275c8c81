//! A compact SHA-1 (FIPS 180-4) for the one digest of the opening
//! handshake, `Sec-WebSocket-Accept`.
//!
//! The `sha1` crate unrolls its 80 rounds and brings the `digest` traits:
//! 3.2 KB of `.text` on the ESP32-C3, for a digest of 60 bytes computed
//! once per connection. This version is one loop over the rounds with a
//! 16-word rolling message schedule, fed a byte at a time: 0.8 KB, and
//! about five times slower (2.6 µs against 0.5 µs per accept value on
//! x86_64, `cargo bench -p tether-benches --bench handshake_digest`; see
//! "Code size" in `docs/performance.md`), which a handshake never notices.
//! SHA-1's weakness against collisions does not matter here: the accept
//! value only proves that the server understood the WebSocket handshake
//! (RFC 6455 1.3).
//!
//! Tested against the `sha1` crate (a differential property test) and the
//! test vectors of RFC 3174 and FIPS 180-2.

const INITIAL: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

/// SHA-1 state: the chaining value, the block being filled, and the
/// number of bytes hashed so far (a `usize`: no 64-bit arithmetic per byte
/// on a 32-bit core; the input is in memory, so it counts every byte).
struct Sha1 {
    state: [u32; 5],
    block: [u8; 64],
    len: usize,
}

impl Sha1 {
    const fn new() -> Self {
        Self {
            state: INITIAL,
            block: [0; 64],
            len: 0,
        }
    }

    fn push(&mut self, byte: u8) {
        let at = self.len % 64;
        if let Some(slot) = self.block.get_mut(at) {
            *slot = byte;
        }
        self.len = self.len.wrapping_add(1);
        if at == 63 {
            compress(&mut self.state, &self.block);
        }
    }
}

/// The SHA-1 digest of the concatenation of `parts`.
#[inline(never)]
pub(crate) fn digest(parts: &[&[u8]]) -> [u8; 20] {
    let mut sha1 = Sha1::new();
    for part in parts {
        for &byte in *part {
            sha1.push(byte);
        }
    }
    // `usize` is at most 64 bits: the bit length as FIPS 180-4 has it.
    let bits = (sha1.len as u64).wrapping_mul(8);
    // Padding: a one bit, zeros up to 56 bytes into a block, the length.
    sha1.push(0x80);
    while sha1.len % 64 != 56 {
        sha1.push(0);
    }
    for byte in bits.to_be_bytes() {
        sha1.push(byte);
    }
    let mut out = [0u8; 20];
    for (chunk, word) in out.chunks_exact_mut(4).zip(sha1.state) {
        chunk.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// One 64-byte block into the chaining value (FIPS 180-4 6.1.2).
fn compress(state: &mut [u32; 5], block: &[u8; 64]) {
    let mut w = [0u32; 16];
    for (word, bytes) in w.iter_mut().zip(block.chunks_exact(4)) {
        *word = bytes
            .iter()
            .fold(0, |word, &byte| word << 8 | u32::from(byte));
    }
    let [mut a, mut b, mut c, mut d, mut e] = *state;
    for round in 0..80usize {
        // W[t] for t >= 16 overwrites W[t - 16] in the 16-word window.
        let word = if round < 16 {
            w[round & 15]
        } else {
            let next =
                (w[(round + 13) & 15] ^ w[(round + 8) & 15] ^ w[(round + 2) & 15] ^ w[round & 15])
                    .rotate_left(1);
            w[round & 15] = next;
            next
        };
        let (f, k) = match round / 20 {
            0 => ((b & c) | (!b & d), 0x5A82_7999),
            1 => (b ^ c ^ d, 0x6ED9_EBA1),
            2 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
            _ => (b ^ c ^ d, 0xCA62_C1D6),
        };
        let t = a
            .rotate_left(5)
            .wrapping_add(f)
            .wrapping_add(e)
            .wrapping_add(k)
            .wrapping_add(word);
        e = d;
        d = c;
        c = b.rotate_left(30);
        b = a;
        a = t;
    }
    for (h, v) in state.iter_mut().zip([a, b, c, d, e]) {
        *h = h.wrapping_add(v);
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use alloc::vec::Vec;

    use ::sha1::Digest as _;
    use proptest::prelude::*;

    use super::*;

    fn hex(digest: [u8; 20]) -> alloc::string::String {
        use core::fmt::Write as _;
        let mut s = alloc::string::String::new();
        for byte in digest {
            let _ = write!(s, "{byte:02x}");
        }
        s
    }

    /// RFC 3174 7.3 (TEST1 to TEST4) and the FIPS 180-2 examples.
    #[test]
    fn rfc_3174_test_vectors() {
        let cases: [(&[u8], usize, &str); 5] = [
            (b"abc", 1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
                1,
                "84983e441c3bd26ebaae4aa1f95129e5e54670f1",
            ),
            (b"a", 1_000_000, "34aa973cd4c4daa4f61eeb2bdbad27316534016f"),
            (
                b"0123456701234567012345670123456701234567012345670123456701234567",
                10,
                "dea356a2cddd90c7a7ecedc5ebb563934f460452",
            ),
            (b"", 1, "da39a3ee5e6b4b0d3255bfef95601890afd80709"),
        ];
        for (text, repeat, expected) in cases {
            let parts: Vec<&[u8]> = core::iter::repeat_n(text, repeat).collect();
            assert_eq!(hex(digest(&parts)), expected, "{repeat} x {text:?}");
        }
    }

    proptest! {
        /// Same digest as the `sha1` crate, for any input cut anywhere,
        /// around every block and padding boundary.
        #[test]
        fn matches_the_sha1_crate(
            bytes in proptest::collection::vec(any::<u8>(), 0..300),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
        ) {
            let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut parts = Vec::new();
            let mut start = 0;
            for cut in cuts {
                parts.push(&bytes[start..cut]);
                start = cut;
            }
            parts.push(&bytes[start..]);
            let expected: [u8; 20] = ::sha1::Sha1::digest(&bytes).into();
            prop_assert_eq!(digest(&parts), expected);
        }
    }

    #[test]
    fn every_length_up_to_three_blocks_matches_the_sha1_crate() {
        let bytes: Vec<u8> = (0..=192u8).map(|i| i.wrapping_mul(31)).collect();
        for len in 0..bytes.len() {
            let expected: [u8; 20] = ::sha1::Sha1::digest(&bytes[..len]).into();
            assert_eq!(digest(&[&bytes[..len]]), expected, "{len} bytes");
        }
    }
}
