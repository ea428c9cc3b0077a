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

/// A CAS access token: the scope as base64url JSON, its expiry and a signature over both.
/// hf_xet sends it back as `Authorization: Bearer`; it stands for itself (no database lookup).
pub fn xet_token(signer: &Signer, scope: &domain::xet::XetScope, exp: i64) -> String {
    use base64::Engine as _;
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(scope).unwrap_or_default());
    let exp = exp.to_string();
    let sig = signer.sign(&["xet-token", &payload, &exp]);
    format!("mxet1.{payload}.{exp}.{sig}")
}

/// The scope of a CAS token, if its signature holds and it has not expired.
pub fn read_xet_token(signer: &Signer, token: &str) -> Result<domain::xet::XetScope, domain::Error> {
    use base64::Engine as _;
    let invalid = || domain::Error::Unauthenticated("invalid Xet token: ask the xet-read-token or xet-write-token endpoint for one".into());
    let mut parts = token.split('.');
    let (Some("mxet1"), Some(payload), Some(exp), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) else { return Err(invalid()) };
    if !signer.verify(&["xet-token", payload, exp], sig) {
        return Err(invalid());
    }
    let exp: i64 = exp.parse().map_err(|_| invalid())?;
    if chrono::Utc::now().timestamp() >= exp {
        return Err(domain::Error::Unauthenticated("the Xet token has expired; refresh it".into()));
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).map_err(|_| invalid())?;
    serde_json::from_slice(&json).map_err(|_| invalid())
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
