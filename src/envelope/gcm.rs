//! AES-256-GCM over a stream: the whole file is one GCM message (one IV, the tag at the end), as the
//! S3 Encryption Client V2 format requires, yet it is processed in chunks so memory stays constant
//! whatever the file's size.
//!
//! `aes-gcm` (RustCrypto) only encrypts a whole message held in memory, and its AES and GHASH
//! reach about 45% of OpenSSL's speed on these machines. AWS-LC, already linked for TLS by the AWS
//! SDK, offers streaming GCM through its `EVP_CIPHER_CTX` API (the OpenSSL interface) at about twice
//! OpenSSL 3.0's single-core figure; no safe Rust wrapper exposes it (`aws-lc-rs` has one-shot AEAD
//! only), so this module is that wrapper: a few FFI calls, each checked, behind a safe API. The unit
//! tests check it against `aes-gcm` byte for byte.

// The crate denies unsafe code; this wrapper is one of the few places that need it (Cargo.toml lists
// them).
#![allow(unsafe_code)]

use std::ffi::c_int;
use std::ptr::{NonNull, null_mut};

use aws_lc_sys as ffi;

pub(crate) const KEY_LEN: usize = 32;
pub(crate) const IV_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;
/// `EVP_*Update` takes a C `int` length.
const MAX_UPDATE: usize = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GcmError {
    /// The data or its key, IV or length was altered.
    #[error("the AES-GCM authentication tag does not match: the object was altered or is not what its metadata says")]
    TagMismatch,
    #[error("the AES-GCM cipher failed in {0} (out of memory?)")]
    Cipher(&'static str),
}

/// An owned `EVP_CIPHER_CTX`; freeing it wipes the key schedule.
struct Context(NonNull<ffi::EVP_CIPHER_CTX>);

// SAFETY: the context is owned exclusively and holds no thread-local state; it is only ever used
// through `&mut self`.
unsafe impl Send for Context {}

impl Context {
    fn new(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN], encrypt: bool) -> Result<Self, GcmError> {
        // SAFETY: plain constructor; a null result is checked.
        let ctx = NonNull::new(unsafe { ffi::EVP_CIPHER_CTX_new() }).ok_or(GcmError::Cipher("EVP_CIPHER_CTX_new"))?;
        let ctx = Self(ctx);
        // SAFETY: `ctx` is a fresh context; key and IV are valid for the lengths AES-256-GCM reads
        // (32 bytes of key; 12 bytes of IV, GCM's default IV length).
        let ok = unsafe {
            let cipher = ffi::EVP_aes_256_gcm();
            if encrypt {
                ffi::EVP_EncryptInit_ex(ctx.0.as_ptr(), cipher, null_mut(), key.as_ptr(), iv.as_ptr())
            } else {
                ffi::EVP_DecryptInit_ex(ctx.0.as_ptr(), cipher, null_mut(), key.as_ptr(), iv.as_ptr())
            }
        };
        if ok != 1 {
            return Err(GcmError::Cipher("EVP_CipherInit_ex"));
        }
        Ok(ctx)
    }

    /// Additional authenticated data, before any of the body.
    fn aad(&mut self, aad: &[u8], encrypt: bool) -> Result<(), GcmError> {
        let mut out_len: c_int = 0;
        let len = c_int::try_from(aad.len()).map_err(|_| GcmError::Cipher("AAD too long"))?;
        // SAFETY: a null output pointer makes the update take `aad` as AAD; it is read for `len` bytes.
        let ok = unsafe {
            if encrypt {
                ffi::EVP_EncryptUpdate(self.0.as_ptr(), null_mut(), &mut out_len, aad.as_ptr(), len)
            } else {
                ffi::EVP_DecryptUpdate(self.0.as_ptr(), null_mut(), &mut out_len, aad.as_ptr(), len)
            }
        };
        if ok != 1 {
            return Err(GcmError::Cipher("EVP_CipherUpdate (AAD)"));
        }
        Ok(())
    }

    /// Encrypts or decrypts `data` in place (GCM is a stream mode: output length = input length).
    fn update(&mut self, data: &mut [u8], encrypt: bool) -> Result<(), GcmError> {
        for chunk in data.chunks_mut(MAX_UPDATE) {
            let mut out_len: c_int = 0;
            let len = chunk.len() as c_int;
            // SAFETY: in-place operation is allowed when input and output are the same buffer;
            // `chunk` is valid for `len` bytes, which GCM writes exactly.
            let ok = unsafe {
                let p = chunk.as_mut_ptr();
                if encrypt {
                    ffi::EVP_EncryptUpdate(self.0.as_ptr(), p, &mut out_len, p, len)
                } else {
                    ffi::EVP_DecryptUpdate(self.0.as_ptr(), p, &mut out_len, p, len)
                }
            };
            if ok != 1 || out_len != len {
                return Err(GcmError::Cipher("EVP_CipherUpdate"));
            }
        }
        Ok(())
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: the pointer came from EVP_CIPHER_CTX_new and is freed exactly once.
        unsafe { ffi::EVP_CIPHER_CTX_free(self.0.as_ptr()) }
    }
}

/// Encrypts a stream chunk by chunk, in place; [`finish`](Self::finish) returns the tag to append.
pub struct Encryptor(Context);

impl Encryptor {
    pub fn new(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Result<Self, GcmError> {
        Context::new(key, iv, true).map(Self)
    }

    /// With additional authenticated data (the committing format's suite id).
    pub(crate) fn with_aad(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN], aad: &[u8]) -> Result<Self, GcmError> {
        let mut ctx = Context::new(key, iv, true)?;
        ctx.aad(aad, true)?;
        Ok(Self(ctx))
    }

    pub fn encrypt(&mut self, chunk: &mut [u8]) -> Result<(), GcmError> {
        self.0.update(chunk, true)
    }

    pub fn finish(self) -> Result<[u8; TAG_LEN], GcmError> {
        let mut tag = [0u8; TAG_LEN];
        let mut out_len: c_int = 0;
        // SAFETY: GCM's final step writes no output bytes; the tag buffer holds TAG_LEN bytes.
        let ok = unsafe {
            ffi::EVP_EncryptFinal_ex(self.0.0.as_ptr(), tag.as_mut_ptr(), &mut out_len) == 1
                && ffi::EVP_CIPHER_CTX_ctrl(
                    self.0.0.as_ptr(),
                    ffi::EVP_CTRL_GCM_GET_TAG,
                    TAG_LEN as c_int,
                    tag.as_mut_ptr().cast(),
                ) == 1
        };
        if ok {
            Ok(tag)
        } else {
            Err(GcmError::Cipher("EVP_EncryptFinal_ex"))
        }
    }
}

/// Decrypts a stream chunk by chunk, in place. The plaintext is unauthenticated until
/// [`finish`](Self::finish) accepts the tag: callers must not release it before then.
pub(crate) struct Decryptor(Context);

impl Decryptor {
    pub fn new(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN]) -> Result<Self, GcmError> {
        Context::new(key, iv, false).map(Self)
    }

    /// With additional authenticated data, which the tag covers.
    pub(crate) fn with_aad(key: &[u8; KEY_LEN], iv: &[u8; IV_LEN], aad: &[u8]) -> Result<Self, GcmError> {
        let mut ctx = Context::new(key, iv, false)?;
        ctx.aad(aad, false)?;
        Ok(Self(ctx))
    }

    pub fn decrypt(&mut self, chunk: &mut [u8]) -> Result<(), GcmError> {
        self.0.update(chunk, false)
    }

    /// Checks the tag (in constant time, inside AWS-LC).
    pub fn finish(self, tag: &[u8]) -> Result<(), GcmError> {
        if tag.len() != TAG_LEN {
            return Err(GcmError::TagMismatch);
        }
        let mut tag_copy = [0u8; TAG_LEN];
        tag_copy.copy_from_slice(tag);
        let mut scratch = [0u8; TAG_LEN];
        let mut out_len: c_int = 0;
        // SAFETY: SET_TAG reads TAG_LEN bytes from `tag_copy`; the final step writes no output.
        let ok = unsafe {
            ffi::EVP_CIPHER_CTX_ctrl(
                self.0.0.as_ptr(),
                ffi::EVP_CTRL_GCM_SET_TAG,
                TAG_LEN as c_int,
                tag_copy.as_mut_ptr().cast(),
            ) == 1
                && ffi::EVP_DecryptFinal_ex(self.0.0.as_ptr(), scratch.as_mut_ptr(), &mut out_len) == 1
        };
        if ok { Ok(()) } else { Err(GcmError::TagMismatch) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes_gcm::aead::AeadInPlace;
    use aes_gcm::{Aes256Gcm, KeyInit, Nonce};

    fn reference(key: &[u8; 32], iv: &[u8; 12], data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        let tag = Aes256Gcm::new(key.into())
            .encrypt_in_place_detached(Nonce::from_slice(iv), b"", &mut out)
            .unwrap();
        out.extend_from_slice(&tag);
        out
    }

    fn pseudo_random(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    #[test]
    fn aad_is_authenticated_as_the_reference_computes_it() {
        let (key, iv, aad) = ([5u8; 32], [1u8; 12], [0x00u8, 0x73]);
        let data = pseudo_random(1000, 3);
        let mut expected = data.clone();
        let tag = Aes256Gcm::new(&key.into())
            .encrypt_in_place_detached(Nonce::from_slice(&iv), &aad, &mut expected)
            .unwrap();
        let mut enc = Encryptor::with_aad(&key, &iv, &aad).unwrap();
        let mut out = data.clone();
        enc.encrypt(&mut out).unwrap();
        assert_eq!((out.clone(), enc.finish().unwrap().to_vec()), (expected, tag.to_vec()));
        let mut dec = Decryptor::with_aad(&key, &iv, &aad).unwrap();
        dec.decrypt(&mut out).unwrap();
        assert_eq!(out, data);
        assert!(dec.finish(&tag).is_ok());
        let mut wrong = Decryptor::with_aad(&key, &iv, &[0x00, 0x74]).unwrap();
        let mut again = data.clone();
        wrong.decrypt(&mut again).unwrap();
        assert_eq!(wrong.finish(&tag), Err(GcmError::TagMismatch), "other AAD, other tag");
    }

    #[test]
    fn matches_aes_gcm_for_every_length_and_chunking() {
        let key = [7u8; 32];
        let iv = [9u8; 12];
        for len in [0, 1, 15, 16, 17, 31, 32, 33, 100, 1000, 4097] {
            let data = pseudo_random(len, len as u8);
            let expected = reference(&key, &iv, &data);
            for chunk in [1, 3, 16, 17, 64, 5000] {
                let mut enc = Encryptor::new(&key, &iv).unwrap();
                let mut out = data.clone();
                for c in out.chunks_mut(chunk) {
                    enc.encrypt(c).unwrap();
                }
                out.extend_from_slice(&enc.finish().unwrap());
                assert_eq!(out, expected, "len {len} chunk {chunk}");

                let (body, tag) = out.split_at_mut(len);
                let mut dec = Decryptor::new(&key, &iv).unwrap();
                for c in body.chunks_mut(chunk) {
                    dec.decrypt(c).unwrap();
                }
                dec.finish(tag).unwrap();
                assert_eq!(body, &data[..]);
            }
        }
    }

    #[test]
    fn a_flipped_byte_or_a_wrong_tag_is_refused() {
        let key = [1u8; 32];
        let iv = [2u8; 12];
        let mut sealed = reference(&key, &iv, b"the quick brown fox jumps over the lazy dog");
        sealed[5] ^= 1;
        let (body, tag) = sealed.split_at_mut(43);
        let mut dec = Decryptor::new(&key, &iv).unwrap();
        dec.decrypt(body).unwrap();
        assert_eq!(dec.finish(tag), Err(GcmError::TagMismatch));
        let dec = || Decryptor::new(&key, &iv).unwrap();
        assert_eq!(dec().finish(&[0u8; 16]), Err(GcmError::TagMismatch));
        assert_eq!(dec().finish(&[0u8; 3]), Err(GcmError::TagMismatch));
    }
}
