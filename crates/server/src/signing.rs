//! Signed, expiring URLs for LFS uploads: the client PUTs to them without its token, so the URL
//! itself must carry the authority, bound to one repo, object, size and part.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Signs and checks upload URLs with a server secret shared by all replicas (kept in the metadata store).
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

/// A fresh random signing key (hex).
pub(crate) fn random_key() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

impl Signer {
    /// A signer over a hex or text key.
    pub fn new(key: &str) -> Self {
        Signer { key: key.as_bytes().to_vec() }
    }

    /// The signature over `fields` (joined with newlines, each length-prefixed).
    pub fn sign(&self, fields: &[&str]) -> String {
        hex::encode(self.mac(fields).finalize().into_bytes())
    }

    /// Checks a signature in constant time.
    pub fn verify(&self, fields: &[&str], signature: &str) -> bool {
        let Ok(signature) = hex::decode(signature) else { return false };
        self.mac(fields).verify_slice(&signature).is_ok()
    }

    fn mac(&self, fields: &[&str]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes keys of any length");
        for field in fields {
            mac.update(&(field.len() as u64).to_be_bytes());
            mac.update(field.as_bytes());
        }
        mac
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_field() {
        let signer = Signer::new("k");
        let sig = signer.sign(&["a", "b"]);
        assert!(signer.verify(&["a", "b"], &sig));
        assert!(!signer.verify(&["ab", ""], &sig));
        assert!(!signer.verify(&["a", "c"], &sig));
        assert!(!Signer::new("other").verify(&["a", "b"], &sig));
        assert!(!signer.verify(&["a", "b"], "zz"));
    }
}
