//! Two SHA-256 hashes in one pass over the data: the file's (checked against its manifest entry)
//! and each part's (the payload hash its request is signed with). An upload hashed every byte twice
//! in turn, once per hash, and the hashing was most of its CPU. One SHA-256 is a chain of dependent
//! `sha256rnds2` instructions that leaves the CPU's SHA unit idle between them; a second,
//! independent chain runs in those gaps, so the pair costs about 1.3 single passes instead of two
//! (2.75 GB/s hashed by the pair against 1.79 GB/s by one hash, on these machines' x86 cores).
//!
//! Written by hand: `sha2` (RustCrypto) and AWS-LC hash one message at a time, and the few crates
//! that hash several at once are young and little used. The kernel is the textbook SHA-NI round
//! sequence run for two states side by side; the unit tests check every path against `sha2`.
//! Without the SHA extensions (or off x86-64) both hashes fall back to `sha2`, one after the other.

// The crate denies unsafe code; the SHA-NI intrinsics need it (see Cargo.toml's list).
#![allow(unsafe_code)]

use sha2::Digest as _;

/// A SHA-256 in progress.
pub(crate) struct Sha256Stream(Inner);

enum Inner {
    #[cfg(target_arch = "x86_64")]
    Shani(shani::Stream),
    Portable(sha2::Sha256),
}

impl Sha256Stream {
    pub(crate) fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        if shani::available() {
            return Self(Inner::Shani(shani::Stream::default()));
        }
        Self(Inner::Portable(sha2::Sha256::new()))
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        match &mut self.0 {
            #[cfg(target_arch = "x86_64")]
            Inner::Shani(s) => s.update(data),
            Inner::Portable(h) => h.update(data),
        }
    }

    pub(crate) fn finish(self) -> [u8; 32] {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Inner::Shani(s) => s.finish(),
            Inner::Portable(h) => h.finalize().into(),
        }
    }
}

/// Feeds `a_data` to `a` and `b_data` to `b`, in one pass where both are at a block boundary and
/// the CPU has the SHA extensions; the data may be the same bytes (a plain part is both).
pub(crate) fn update_pair(a: &mut Sha256Stream, a_data: &[u8], b: &mut Sha256Stream, b_data: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    if let (Inner::Shani(sa), Inner::Shani(sb)) = (&mut a.0, &mut b.0)
        && shani::update_pair(sa, a_data, sb, b_data)
    {
        return;
    }
    a.update(a_data);
    b.update(b_data);
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use core::arch::x86_64::*;

    const BLOCK: usize = 64;

    const INITIAL: [u32; 8] = [
        0x6a09_e667,
        0xbb67_ae85,
        0x3c6e_f372,
        0xa54f_f53a,
        0x510e_527f,
        0x9b05_688c,
        0x1f83_d9ab,
        0x5be0_cd19,
    ];

    /// The round constants (FIPS 180-4, 4.2.2).
    const K: [u32; 64] = [
        0x428a_2f98,
        0x7137_4491,
        0xb5c0_fbcf,
        0xe9b5_dba5,
        0x3956_c25b,
        0x59f1_11f1,
        0x923f_82a4,
        0xab1c_5ed5,
        0xd807_aa98,
        0x1283_5b01,
        0x2431_85be,
        0x550c_7dc3,
        0x72be_5d74,
        0x80de_b1fe,
        0x9bdc_06a7,
        0xc19b_f174,
        0xe49b_69c1,
        0xefbe_4786,
        0x0fc1_9dc6,
        0x240c_a1cc,
        0x2de9_2c6f,
        0x4a74_84aa,
        0x5cb0_a9dc,
        0x76f9_88da,
        0x983e_5152,
        0xa831_c66d,
        0xb003_27c8,
        0xbf59_7fc7,
        0xc6e0_0bf3,
        0xd5a7_9147,
        0x06ca_6351,
        0x1429_2967,
        0x27b7_0a85,
        0x2e1b_2138,
        0x4d2c_6dfc,
        0x5338_0d13,
        0x650a_7354,
        0x766a_0abb,
        0x81c2_c92e,
        0x9272_2c85,
        0xa2bf_e8a1,
        0xa81a_664b,
        0xc24b_8b70,
        0xc76c_51a3,
        0xd192_e819,
        0xd699_0624,
        0xf40e_3585,
        0x106a_a070,
        0x19a4_c116,
        0x1e37_6c08,
        0x2748_774c,
        0x34b0_bcb5,
        0x391c_0cb3,
        0x4ed8_aa4a,
        0x5b9c_ca4f,
        0x682e_6ff3,
        0x748f_82ee,
        0x78a5_636f,
        0x84c8_7814,
        0x8cc7_0208,
        0x90be_fffa,
        0xa450_6ceb,
        0xbef9_a3f7,
        0xc671_78f2,
    ];

    /// The CPU has the instructions, and the kernel, run once on a known message, agrees with
    /// `sha2`: a CPU or a build that gets it wrong falls back instead of failing every upload.
    pub(super) fn available() -> bool {
        static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            let has = std::arch::is_x86_feature_detected!("sha")
                && std::arch::is_x86_feature_detected!("sse4.1")
                && std::arch::is_x86_feature_detected!("ssse3");
            has && agrees_with_sha2()
        })
    }

    fn agrees_with_sha2() -> bool {
        use sha2::Digest as _;
        let (a_data, b_data): (Vec<u8>, Vec<u8>) = (0..=255u8).map(|i| (i, i.wrapping_mul(31))).unzip();
        let (mut a, mut b) = (Stream::default(), Stream::default());
        update_pair(&mut a, &a_data[..192], &mut b, &b_data[..192]);
        a.update(&a_data[192..]);
        b.update(&b_data[192..]);
        let agrees =
            a.finish()[..] == sha2::Sha256::digest(&a_data)[..] && b.finish()[..] == sha2::Sha256::digest(&b_data)[..];
        if !agrees {
            tracing::warn!("the SHA-NI hash disagrees with sha2 on this CPU: uploads hash with sha2 instead (slower)");
        }
        agrees
    }

    /// A hash state, the bytes of its unfinished block, and how many bytes it has taken. Only made
    /// once [`available`] said yes, which is what makes the kernel's calls sound.
    pub(super) struct Stream {
        state: [u32; 8],
        pending: [u8; BLOCK],
        pending_len: usize,
        total: u64,
    }

    impl Default for Stream {
        fn default() -> Self {
            Self {
                state: INITIAL,
                pending: [0; BLOCK],
                pending_len: 0,
                total: 0,
            }
        }
    }

    impl Stream {
        pub(super) fn update(&mut self, mut data: &[u8]) {
            self.total += data.len() as u64;
            if self.pending_len > 0 {
                let take = data.len().min(BLOCK - self.pending_len);
                self.pending[self.pending_len..self.pending_len + take].copy_from_slice(&data[..take]);
                self.pending_len += take;
                data = &data[take..];
                if self.pending_len < BLOCK {
                    return;
                }
                let block = self.pending;
                self.compress(&block);
                self.pending_len = 0;
            }
            let whole = data.len() - data.len() % BLOCK;
            self.compress(&data[..whole]);
            let rest = &data[whole..];
            self.pending[..rest.len()].copy_from_slice(rest);
            self.pending_len = rest.len();
        }

        fn compress(&mut self, blocks: &[u8]) {
            // SAFETY: a Stream exists only where `available()` held; `blocks` is whole blocks.
            unsafe { compress([&mut self.state], [blocks]) }
        }

        /// FIPS 180-4 padding: a 1 bit, zeros, and the length in bits, to a block boundary.
        pub(super) fn finish(mut self) -> [u8; 32] {
            let bits = self.total.wrapping_mul(8);
            let mut tail = [0u8; 2 * BLOCK];
            tail[..self.pending_len].copy_from_slice(&self.pending[..self.pending_len]);
            tail[self.pending_len] = 0x80;
            let end = if self.pending_len < BLOCK - 8 { BLOCK } else { 2 * BLOCK };
            tail[end - 8..end].copy_from_slice(&bits.to_be_bytes());
            self.compress(&tail[..end]);
            let mut digest = [0u8; 32];
            for (out, word) in digest.chunks_exact_mut(4).zip(self.state) {
                out.copy_from_slice(&word.to_be_bytes());
            }
            digest
        }
    }

    /// Both streams over their data in one pass, when both stand at a block boundary and the data
    /// are as long as each other; false (nothing done) otherwise.
    pub(super) fn update_pair(a: &mut Stream, a_data: &[u8], b: &mut Stream, b_data: &[u8]) -> bool {
        if a.pending_len != 0 || b.pending_len != 0 || a_data.len() != b_data.len() {
            return false;
        }
        let whole = a_data.len() - a_data.len() % BLOCK;
        // SAFETY: both Streams exist only where `available()` held; both slices are whole blocks.
        unsafe { compress([&mut a.state, &mut b.state], [&a_data[..whole], &b_data[..whole]]) };
        a.total += whole as u64;
        b.total += whole as u64;
        a.update(&a_data[whole..]);
        b.update(&b_data[whole..]);
        true
    }

    /// The SHA-NI registers hold a state as ABEF and CDGH.
    #[derive(Clone, Copy)]
    struct Lanes {
        abef: __m128i,
        cdgh: __m128i,
    }

    /// Runs `N` states over `N` runs of blocks, all as long as the first, block by block with the
    /// states' rounds interleaved.
    ///
    /// # Safety
    /// The CPU has SHA, SSE4.1 and SSSE3; every run is as long as the first, a multiple of 64.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn compress<const N: usize>(states: [&mut [u32; 8]; N], data: [&[u8]; N]) {
        let blocks = data[0].len() / BLOCK;
        // Every read below stays inside the runs only if this holds.
        assert!(
            data.iter().all(|d| d.len() == blocks * BLOCK),
            "runs of unequal or partial blocks"
        );
        // No closures below: they would not inherit the target features, and the helpers would
        // then not be inlined.
        let mut lanes = [Lanes {
            abef: _mm_setzero_si128(),
            cdgh: _mm_setzero_si128(),
        }; N];
        for j in 0..N {
            // SAFETY: the caller vouches for the CPU.
            lanes[j] = unsafe { load(states[j]) };
        }
        let mut w = [[_mm_setzero_si128(); 4]; N];
        for k in 0..blocks {
            let saved = lanes;
            for j in 0..N {
                // SAFETY: block k lies inside every run (each is `blocks` blocks long).
                w[j] = unsafe { words(data[j].as_ptr().add(k * BLOCK)) };
            }
            for i in 0..16 {
                for j in 0..N {
                    // SAFETY: the caller vouches for the CPU.
                    unsafe {
                        if i >= 4 {
                            w[j] = [w[j][1], w[j][2], w[j][3], schedule(&w[j])];
                        }
                        rounds4(&mut lanes[j], w[j][i.min(3)], i);
                    }
                }
            }
            for j in 0..N {
                lanes[j].abef = _mm_add_epi32(lanes[j].abef, saved[j].abef);
                lanes[j].cdgh = _mm_add_epi32(lanes[j].cdgh, saved[j].cdgh);
            }
        }
        for (j, state) in states.into_iter().enumerate() {
            // SAFETY: the caller vouches for the CPU.
            unsafe { store(lanes[j], state) };
        }
    }

    // The helpers below are inlined into `compress`, whose target features their intrinsics need.

    /// # Safety
    /// The CPU has SHA, SSE4.1 and SSSE3.
    #[inline(always)]
    unsafe fn load(state: &[u32; 8]) -> Lanes {
        let p = state.as_ptr().cast::<__m128i>();
        // SAFETY: `state` is 32 bytes (unaligned loads); the caller vouches for the CPU.
        unsafe {
            let cdab = _mm_shuffle_epi32(_mm_loadu_si128(p), 0xB1);
            let efgh = _mm_shuffle_epi32(_mm_loadu_si128(p.add(1)), 0x1B);
            Lanes {
                abef: _mm_alignr_epi8(cdab, efgh, 8),
                cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
            }
        }
    }

    /// # Safety
    /// The CPU has SHA, SSE4.1 and SSSE3.
    #[inline(always)]
    unsafe fn store(l: Lanes, state: &mut [u32; 8]) {
        let p = state.as_mut_ptr().cast::<__m128i>();
        // SAFETY: `state` is 32 bytes (unaligned stores); the caller vouches for the CPU.
        unsafe {
            let feba = _mm_shuffle_epi32(l.abef, 0x1B);
            let dchg = _mm_shuffle_epi32(l.cdgh, 0xB1);
            _mm_storeu_si128(p, _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(p.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
    }

    /// A block's sixteen big-endian words, four to a register.
    ///
    /// # Safety
    /// `block` points at 64 readable bytes; the CPU has SHA, SSE4.1 and SSSE3.
    #[inline(always)]
    unsafe fn words(block: *const u8) -> [__m128i; 4] {
        let p = block.cast::<__m128i>();
        // SAFETY: the caller's 64 bytes (unaligned loads) and CPU.
        unsafe {
            let swap = _mm_set_epi64x(0x0C0D_0E0F_0809_0A0B, 0x0405_0607_0001_0203);
            [
                _mm_shuffle_epi8(_mm_loadu_si128(p), swap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), swap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), swap),
                _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), swap),
            ]
        }
    }

    /// The next four message words from the last sixteen.
    ///
    /// # Safety
    /// The CPU has SHA, SSE4.1 and SSSE3.
    #[inline(always)]
    unsafe fn schedule(w: &[__m128i; 4]) -> __m128i {
        // SAFETY: the caller vouches for the CPU.
        unsafe {
            let t = _mm_add_epi32(_mm_sha256msg1_epu32(w[0], w[1]), _mm_alignr_epi8(w[3], w[2], 4));
            _mm_sha256msg2_epu32(t, w[3])
        }
    }

    /// Rounds `4 * i` to `4 * i + 3` with message words `w`.
    ///
    /// # Safety
    /// The CPU has SHA, SSE4.1 and SSSE3.
    #[inline(always)]
    unsafe fn rounds4(l: &mut Lanes, w: __m128i, i: usize) {
        // SAFETY: K holds 64 words, i < 16 (unaligned load); the caller vouches for the CPU.
        unsafe {
            let wk = _mm_add_epi32(w, _mm_loadu_si128(K.as_ptr().add(4 * i).cast()));
            l.cdgh = _mm_sha256rnds2_epu32(l.cdgh, l.abef, wk);
            l.abef = _mm_sha256rnds2_epu32(l.abef, l.cdgh, _mm_shuffle_epi32(wk, 0x0E));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha2(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn bytes(len: usize, seed: u32) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) ^ seed) as u8 >> 1)
            .collect()
    }

    #[test]
    fn one_stream_matches_sha2_at_every_length_around_the_block_and_padding_edges() {
        for len in (0..300).chain([4095, 4096, 4097, 1 << 20]) {
            let data = bytes(len, 7);
            let mut s = Sha256Stream::new();
            s.update(&data);
            assert_eq!(s.finish(), sha2(&data), "length {len}");
            // Fed in uneven pieces: the pending block carries across updates.
            let mut s = Sha256Stream::new();
            for piece in data.chunks(37) {
                s.update(piece);
            }
            assert_eq!(s.finish(), sha2(&data), "length {len} in pieces");
        }
    }

    #[test]
    fn a_pair_matches_two_sha2_hashes_for_the_same_and_for_different_data() {
        // The shape of an upload: the file's hash runs across parts, each part's starts afresh,
        // an encrypted part differs from the plain bytes and the last one carries 16 more.
        let plain = bytes(3 * 8192 + 100, 1);
        let sealed = bytes(plain.len(), 2);
        for other in [&plain, &sealed] {
            let mut file = Sha256Stream::new();
            for (p, o) in plain.chunks(8192).zip(other.chunks(8192)) {
                let mut part = Sha256Stream::new();
                for (pc, oc) in p.chunks(1024).zip(o.chunks(1024)) {
                    update_pair(&mut file, pc, &mut part, oc);
                }
                part.update(b"sixteen byte tag");
                assert_eq!(part.finish(), sha2(&[o, b"sixteen byte tag".as_slice()].concat()));
            }
            assert_eq!(file.finish(), sha2(&plain));
        }
    }

    #[test]
    fn a_pair_with_a_portable_hash_falls_back_and_still_matches() {
        let data = bytes(5000, 5);
        let mut a = Sha256Stream(Inner::Portable(sha2::Sha256::new()));
        let mut b = Sha256Stream::new();
        update_pair(&mut a, &data, &mut b, &data);
        update_pair(&mut b, &data, &mut a, &data);
        let twice = [data.as_slice(), &data].concat();
        assert_eq!(a.finish(), sha2(&twice));
        assert_eq!(b.finish(), sha2(&twice));
    }

    #[test]
    fn a_pair_out_of_step_falls_back_and_still_matches() {
        let (a_data, b_data) = (bytes(1000, 3), bytes(1000, 4));
        let mut a = Sha256Stream::new();
        a.update(&a_data[..5]);
        let mut b = Sha256Stream::new();
        update_pair(&mut a, &a_data[5..], &mut b, &b_data[5..]);
        assert_eq!(a.finish(), sha2(&a_data));
        assert_eq!(b.finish(), sha2(&b_data[5..]));
    }
}
