//! HMAC-SHA256 message signatures, as Jupyter defines them: the hex digest of
//! header, parent_header, metadata and content, in that order.

use std::num::NonZeroUsize;
use std::sync::Mutex;

use hmac::{Hmac, KeyInit, Mac};
use lru::LruCache;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// How many recent signatures are remembered to reject replays
/// (jupyter_client keeps the same number).
const REPLAY_HISTORY: usize = 1 << 16;

/// Why a message's signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("message has no signature")]
    Missing,
    #[error("message signature does not match")]
    Mismatch,
    #[error("message signature was seen before (replay)")]
    Replayed,
}

/// Signs and verifies messages with one key. An empty key disables
/// authentication, as in Jupyter.
pub struct Signer {
    mac: Option<HmacSha256>,
    seen: Mutex<LruCache<[u8; 32], ()>>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("authenticated", &self.mac.is_some())
            .finish()
    }
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        let mac = if key.is_empty() {
            None
        } else {
            Some(HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length"))
        };
        Signer {
            mac,
            seen: Mutex::new(LruCache::new(NonZeroUsize::new(REPLAY_HISTORY).unwrap())),
        }
    }

    /// The lowercase hex signature of `parts`; empty when unauthenticated.
    pub fn sign(&self, parts: &[&[u8]]) -> String {
        let Some(mut mac) = self.mac.clone() else {
            return String::new();
        };
        for part in parts {
            mac.update(part);
        }
        hex::encode(mac.finalize().into_bytes())
    }

    /// Checks `signature` (hex, as sent on the wire) against `parts`, and
    /// rejects a signature that was already accepted once.
    pub fn verify(&self, signature: &[u8], parts: &[&[u8]]) -> Result<(), SignatureError> {
        let Some(mut mac) = self.mac.clone() else {
            return Ok(());
        };
        if signature.is_empty() {
            return Err(SignatureError::Missing);
        }
        // Lowercase hex only, as signed (and as jupyter_client compares).
        let mut given = [0u8; 32];
        if signature.iter().any(u8::is_ascii_uppercase)
            || hex::decode_to_slice(signature, &mut given).is_err()
        {
            return Err(SignatureError::Mismatch);
        }
        for part in parts {
            mac.update(part);
        }
        // Constant-time comparison.
        if mac.verify_slice(&given).is_err() {
            return Err(SignatureError::Mismatch);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.put(given, ()).is_some() {
            return Err(SignatureError::Replayed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Values computed independently with Python:
    //   hmac.new(b"secret-key", b"".join(parts), hashlib.sha256).hexdigest()
    const KEY: &[u8] = b"secret-key";
    const PARTS: [&[u8]; 4] = [
        br#"{"msg_id":"1","msg_type":"kernel_info_request"}"#,
        b"{}",
        b"{}",
        b"{}",
    ];
    const PYTHON_DIGEST: &str = "d24613c901272087168eb7a17b371d2f54d14044dca08737846f4baf86191b6a";

    #[test]
    fn upper_case_signatures_are_refused() {
        let signer = Signer::new(KEY);
        let upper = signer.sign(&PARTS).to_uppercase();
        assert_eq!(
            signer.verify(upper.as_bytes(), &PARTS),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn signature_matches_python_hmac() {
        assert_eq!(Signer::new(KEY).sign(&PARTS), PYTHON_DIGEST);
    }

    #[test]
    fn verify_accepts_once_then_rejects_replay() {
        let signer = Signer::new(KEY);
        assert_eq!(signer.verify(PYTHON_DIGEST.as_bytes(), &PARTS), Ok(()));
        assert_eq!(
            signer.verify(PYTHON_DIGEST.as_bytes(), &PARTS),
            Err(SignatureError::Replayed)
        );
    }

    #[test]
    fn verify_rejects_missing_wrong_and_garbage() {
        let signer = Signer::new(KEY);
        assert_eq!(signer.verify(b"", &PARTS), Err(SignatureError::Missing));
        let wrong = Signer::new(b"other-key").sign(&PARTS);
        assert_eq!(
            signer.verify(wrong.as_bytes(), &PARTS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            signer.verify(b"zz-not-hex", &PARTS),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            signer.verify(&[0xff; 64], &PARTS),
            Err(SignatureError::Mismatch)
        );
        // A tampered part no longer matches.
        let tampered: [&[u8]; 4] = [PARTS[0], b"{}", b"{}", br#"{"code":"rm"}"#];
        assert_eq!(
            signer.verify(PYTHON_DIGEST.as_bytes(), &tampered),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn empty_key_disables_authentication() {
        let signer = Signer::new(b"");
        assert_eq!(signer.sign(&PARTS), "");
        assert_eq!(signer.verify(b"", &PARTS), Ok(()));
    }
}
