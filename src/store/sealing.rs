//! Crypto-shredding's primitives: per-user data keys, wrapped by a key-encryption key
//! (KEK) from configuration, and the sealing of an event's personal fields with the
//! user's data key. Pure: no I/O, so the codec can use it and tests can drive it.
//!
//! - A [`DataKey`] is 32 random bytes, one per user, made at registration. Deleting it
//!   is the erasure: what it sealed can no longer be opened by anyone.
//! - A data key is stored only wrapped ([`KeyRing::wrap`]): sealed with the current
//!   KEK, with the user id as associated data, so a wrapped key moved to another user's
//!   row does not open. The wrapped form names its KEK by id, so old KEKs configured
//!   for reading open the keys they wrapped ([`KeyRing::unwrap`]).
//! - A personal field is sealed ([`DataKey::seal`]) with the event id and the field's
//!   name as associated data: a ciphertext copied into another event, or into another
//!   field of the same event, does not open.
//!
//! Two ciphers, each where its nonce suits the number of seals under one key:
//!
//! - Data keys are wrapped with XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`):
//!   one KEK wraps every user's key, an unbounded count, and 24-byte random nonces need
//!   no counter shared between instances at any count.
//! - Field values are sealed with AES-256-GCM (RustCrypto's `aes-gcm`), whose 12-byte
//!   random nonces are sound for up to 2^32 seals under one key (NIST SP 800-38D,
//!   8.3): a data key is one user's, sealing a few values per change of their profile,
//!   so no user comes near it. On this hardware (AES-NI, PCLMULQDQ) it seals a short
//!   value in a tenth of XChaCha20-Poly1305's time, whose Poly1305 pays a fixed set-up
//!   of about 2 µs per value on short inputs (docs/performance.md).
//!
//! Values sealed with XChaCha20-Poly1305 by the first version (`kv1.`) still open.

use aes_gcm::Aes256Gcm;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Key length of every key here.
pub const KEY_BYTES: usize = 32;
/// XChaCha20-Poly1305's nonce: wrapped keys, and `kv1.` values.
const NONCE_BYTES: usize = 24;
/// AES-256-GCM's nonce: `kv2.` values.
const GCM_NONCE_BYTES: usize = 12;
/// Marks a sealed field value, and its format version: AES-256-GCM, written now.
const SEALED_PREFIX: &str = "kv2.";
/// The first version's sealed values, XChaCha20-Poly1305: opened, no longer written.
const XCHACHA_SEALED_PREFIX: &str = "kv1.";
/// Format version byte of a wrapped data key.
const WRAPPED_VERSION: u8 = 1;
const KEK_ID_BYTES: usize = 8;

/// Why a key or a sealed value could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealingError {
    /// Not 32 bytes of standard base64.
    #[error("a key-encryption key must be 32 bytes, in standard base64")]
    MalformedKek,
    /// The wrapped key names a KEK that is not configured.
    #[error("the data key was wrapped by key-encryption key {0}, which is not configured")]
    UnknownKek(String),
    /// The bytes are not a wrapped key or a sealed value of a known format.
    #[error("malformed sealed value")]
    Malformed,
    /// Authentication failed: wrong key, wrong associated data, or tampering.
    #[error("the sealed value does not open with this key")]
    DoesNotOpen,
}

/// A key-encryption key from configuration.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Kek {
    key: [u8; KEY_BYTES],
    #[zeroize(skip)]
    id: [u8; KEK_ID_BYTES],
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kek({})", self.id())
    }
}

impl Kek {
    /// Parses 32 bytes of standard base64 (surrounding whitespace ignored).
    pub fn from_base64(encoded: &str) -> Result<Self, SealingError> {
        let mut bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| SealingError::MalformedKek)?;
        let key: [u8; KEY_BYTES] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealingError::MalformedKek)?;
        bytes.zeroize();
        Ok(Self::from_bytes(key))
    }

    /// The KEK in standard base64, as [`Kek::from_base64`] reads it: only for the
    /// development KEK the embedded store keeps beside its database.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.key)
    }

    /// A random KEK: for development only, since every data key it wraps is lost with
    /// the process.
    pub fn random() -> Self {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self::from_bytes(key)
    }

    fn from_bytes(key: [u8; KEY_BYTES]) -> Self {
        // The id names the KEK in every key it wraps without revealing it: a hash,
        // domain-separated from any other use of the key.
        let digest = Sha256::new()
            .chain_update(b"killrvideo-users/kek-id/v1")
            .chain_update(key)
            .finalize();
        let mut id = [0u8; KEK_ID_BYTES];
        id.copy_from_slice(&digest[..KEK_ID_BYTES]);
        Self { key, id }
    }

    /// The KEK's id, as hex: what `user_keys.kek_id` stores and logs may show.
    pub fn id(&self) -> String {
        hex(&self.id)
    }
}

/// The KEKs a process holds: the current one, which wraps new data keys, and old ones,
/// which only unwrap the keys they wrapped before a rotation.
#[derive(Debug, Clone)]
pub struct KeyRing {
    current: Kek,
    old: Vec<Kek>,
}

impl KeyRing {
    /// A ring of `current` and the `old` KEKs.
    pub fn new(current: Kek, old: Vec<Kek>) -> Self {
        Self { current, old }
    }

    /// The current KEK's id.
    pub fn current_id(&self) -> String {
        self.current.id()
    }

    /// Whether a KEK with this id is configured, current or old.
    pub fn knows(&self, kek_id: &str) -> bool {
        self.kek(kek_id).is_some()
    }

    fn kek(&self, kek_id: &str) -> Option<&Kek> {
        std::iter::once(&self.current)
            .chain(&self.old)
            .find(|kek| kek.id() == kek_id)
    }

    /// A fresh data key for `user_id`, and its wrapped form for `user_keys`.
    pub fn new_data_key(&self, user_id: Uuid) -> (DataKey, Vec<u8>) {
        let key = DataKey::random();
        let wrapped = self.wrap(user_id, &key);
        (key, wrapped)
    }

    /// Wraps `key` for `user_id` with the current KEK:
    /// version (1) · KEK id (8) · nonce (24) · ciphertext with tag (48).
    pub fn wrap(&self, user_id: Uuid, key: &DataKey) -> Vec<u8> {
        let nonce = random_nonce();
        let sealed = cipher(&self.current.key)
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: &key.0,
                    aad: &wrap_aad(user_id),
                },
            )
            .expect("XChaCha20-Poly1305 encryption of 32 bytes cannot fail");
        let mut wrapped = Vec::with_capacity(1 + KEK_ID_BYTES + NONCE_BYTES + sealed.len());
        wrapped.push(WRAPPED_VERSION);
        wrapped.extend_from_slice(&self.current.id);
        wrapped.extend_from_slice(&nonce);
        wrapped.extend_from_slice(&sealed);
        wrapped
    }

    /// The id of the KEK that wrapped `wrapped`.
    pub fn wrapped_by(wrapped: &[u8]) -> Result<String, SealingError> {
        match wrapped {
            [WRAPPED_VERSION, rest @ ..] if rest.len() > KEK_ID_BYTES + NONCE_BYTES => {
                Ok(hex(&rest[..KEK_ID_BYTES]))
            }
            _ => Err(SealingError::Malformed),
        }
    }

    /// Unwraps `user_id`'s data key with whichever configured KEK wrapped it.
    pub fn unwrap(&self, user_id: Uuid, wrapped: &[u8]) -> Result<DataKey, SealingError> {
        let kek_id = Self::wrapped_by(wrapped)?;
        let kek = self
            .kek(&kek_id)
            .ok_or_else(|| SealingError::UnknownKek(kek_id.clone()))?;
        let rest = &wrapped[1 + KEK_ID_BYTES..];
        let (nonce, sealed) = rest.split_at(NONCE_BYTES);
        let mut opened = cipher(&kek.key)
            .decrypt(
                &xnonce(nonce),
                Payload {
                    msg: sealed,
                    aad: &wrap_aad(user_id),
                },
            )
            .map_err(|_| SealingError::DoesNotOpen)?;
        let key: [u8; KEY_BYTES] = opened
            .as_slice()
            .try_into()
            .map_err(|_| SealingError::Malformed)?;
        opened.zeroize();
        Ok(DataKey(key))
    }
}

/// One user's data key, in the clear: only ever in memory.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; KEY_BYTES]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

impl DataKey {
    /// 32 random bytes from the operating system's generator (through `rand`).
    pub fn random() -> Self {
        let mut key = [0u8; KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Seals `plain`, the value of `field` in event `event_id`: `kv2.` followed by the
    /// URL-safe base64 of nonce · ciphertext · tag (AES-256-GCM).
    pub fn seal(&self, event_id: Uuid, field: &str, plain: &str) -> String {
        let mut nonce = [0u8; GCM_NONCE_BYTES];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = Aes256Gcm::new(&self.0.into())
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: plain.as_bytes(),
                    aad: &field_aad(event_id, field),
                },
            )
            .expect("AES-256-GCM encryption cannot fail on a short value");
        let mut bytes = Vec::with_capacity(GCM_NONCE_BYTES + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Opens what [`DataKey::seal`] sealed for the same event and field, in either
    /// format.
    pub fn open(&self, event_id: Uuid, field: &str, sealed: &str) -> Result<String, SealingError> {
        let (format, encoded) = SealedFormat::of(sealed).ok_or(SealingError::Malformed)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealingError::Malformed)?;
        if bytes.len() < format.nonce_bytes() {
            return Err(SealingError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(format.nonce_bytes());
        let payload = Payload {
            msg: ciphertext,
            aad: &field_aad(event_id, field),
        };
        let plain = match format {
            SealedFormat::Aes256Gcm => {
                let nonce: [u8; GCM_NONCE_BYTES] =
                    nonce.try_into().map_err(|_| SealingError::Malformed)?;
                Aes256Gcm::new(&self.0.into()).decrypt(&nonce.into(), payload)
            }
            SealedFormat::XChaCha20Poly1305 => cipher(&self.0).decrypt(&xnonce(nonce), payload),
        }
        .map_err(|_| SealingError::DoesNotOpen)?;
        String::from_utf8(plain).map_err(|_| SealingError::Malformed)
    }
}

/// Whether a stored value is a sealed one (as opposed to plain text written before
/// sealing existed).
pub fn is_sealed(value: &str) -> bool {
    SealedFormat::of(value).is_some()
}

/// The formats of a sealed value, told apart by their prefix.
#[derive(Debug, Clone, Copy)]
enum SealedFormat {
    /// `kv2.`: written now.
    Aes256Gcm,
    /// `kv1.`: the first version's, only opened.
    XChaCha20Poly1305,
}

impl SealedFormat {
    /// The format of `sealed`, and what follows its prefix.
    fn of(sealed: &str) -> Option<(Self, &str)> {
        match sealed.strip_prefix(SEALED_PREFIX) {
            Some(rest) => Some((Self::Aes256Gcm, rest)),
            None => sealed
                .strip_prefix(XCHACHA_SEALED_PREFIX)
                .map(|rest| (Self::XChaCha20Poly1305, rest)),
        }
    }

    fn nonce_bytes(self) -> usize {
        match self {
            Self::Aes256Gcm => GCM_NONCE_BYTES,
            Self::XChaCha20Poly1305 => NONCE_BYTES,
        }
    }
}

fn cipher(key: &[u8; KEY_BYTES]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(key.into())
}

fn xnonce(bytes: &[u8]) -> XNonce {
    let mut nonce = [0u8; NONCE_BYTES];
    nonce.copy_from_slice(bytes);
    XNonce::from(nonce)
}

fn random_nonce() -> [u8; NONCE_BYTES] {
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

fn wrap_aad(user_id: Uuid) -> Vec<u8> {
    [
        b"killrvideo-users/data-key/v1/".as_slice(),
        user_id.as_bytes(),
    ]
    .concat()
}

fn field_aad(event_id: Uuid, field: &str) -> Vec<u8> {
    [event_id.as_bytes().as_slice(), b"/", field.as_bytes()].concat()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ring() -> KeyRing {
        KeyRing::new(Kek::random(), vec![])
    }

    #[test]
    fn a_sealed_field_opens_only_for_its_event_and_field() {
        let key = DataKey::random();
        let (event, other_event) = (Uuid::now_v1(&[1; 6]), Uuid::now_v1(&[2; 6]));
        let sealed = key.seal(event, "firstname", "Zoë");
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("Zoë"));
        assert_eq!(key.open(event, "firstname", &sealed).unwrap(), "Zoë");
        assert_eq!(
            key.open(other_event, "firstname", &sealed),
            Err(SealingError::DoesNotOpen),
            "moved to another event"
        );
        assert_eq!(
            key.open(event, "lastname", &sealed),
            Err(SealingError::DoesNotOpen),
            "moved to another field"
        );
        assert_eq!(
            DataKey::random().open(event, "firstname", &sealed),
            Err(SealingError::DoesNotOpen),
            "another user's key"
        );
        assert_eq!(
            key.open(event, "firstname", "Zoë"),
            Err(SealingError::Malformed)
        );
    }

    /// A value sealed by the first format (XChaCha20-Poly1305, `kv1.`), before values
    /// were sealed with AES-256-GCM: key `[7; 32]`, nonce `[42; 24]`, "Zoë" as
    /// `firstname.to` of this event.
    #[test]
    fn values_sealed_in_the_first_format_still_open() {
        let key = DataKey([7; KEY_BYTES]);
        let event = Uuid::parse_str("1ec94210-2f0b-11f1-8000-010101010101").unwrap();
        let sealed = "kv1.KioqKioqKioqKioqKioqKioqKioqKioq1nrGQPlL9mVwlnXeDEww1KMiGhs";
        assert!(is_sealed(sealed));
        assert_eq!(key.open(event, "firstname.to", sealed).unwrap(), "Zoë");
        assert_eq!(
            key.open(event, "firstname.from", sealed),
            Err(SealingError::DoesNotOpen)
        );
        assert_eq!(
            DataKey::random().open(event, "firstname.to", sealed),
            Err(SealingError::DoesNotOpen)
        );
        let resealed = key.seal(event, "firstname.to", "Zoë");
        assert!(resealed.starts_with(SEALED_PREFIX), "{resealed}");
        assert!(
            resealed.len() < sealed.len(),
            "the 12-byte nonce is shorter"
        );
    }

    #[test]
    fn a_tampered_value_does_not_open() {
        let key = DataKey::random();
        let event = Uuid::now_v1(&[1; 6]);
        let sealed = key.seal(event, "email", "someone@example.com");
        let mut bytes = URL_SAFE_NO_PAD
            .decode(sealed.strip_prefix(SEALED_PREFIX).unwrap())
            .unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        let tampered = format!("{SEALED_PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
        assert_eq!(
            key.open(event, "email", &tampered),
            Err(SealingError::DoesNotOpen)
        );
        assert_eq!(
            key.open(event, "email", &format!("{SEALED_PREFIX}AAAA")),
            Err(SealingError::Malformed),
            "shorter than a nonce"
        );
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let key = DataKey::random();
        let event = Uuid::now_v1(&[1; 6]);
        assert_ne!(key.seal(event, "f", "same"), key.seal(event, "f", "same"));
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_user_and_with_its_kek() {
        let ring = ring();
        let user = Uuid::new_v4();
        let (key, wrapped) = ring.new_data_key(user);
        assert_eq!(ring.unwrap(user, &wrapped).unwrap(), key);
        assert_eq!(KeyRing::wrapped_by(&wrapped).unwrap(), ring.current_id());
        assert_eq!(
            ring.unwrap(Uuid::new_v4(), &wrapped),
            Err(SealingError::DoesNotOpen),
            "moved to another user"
        );
        let stranger = KeyRing::new(Kek::random(), vec![]);
        assert_eq!(
            stranger.unwrap(user, &wrapped),
            Err(SealingError::UnknownKek(ring.current_id()))
        );
        let mut tampered = wrapped.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(ring.unwrap(user, &tampered), Err(SealingError::DoesNotOpen));
    }

    #[test]
    fn after_a_rotation_old_keys_open_with_the_old_kek_configured_for_reading() {
        let old = Kek::random();
        let before = KeyRing::new(old.clone(), vec![]);
        let user = Uuid::new_v4();
        let (key, wrapped) = before.new_data_key(user);
        let after = KeyRing::new(Kek::random(), vec![old]);
        assert_eq!(after.unwrap(user, &wrapped).unwrap(), key);
        let (_, rewrapped) = after.new_data_key(user);
        assert_eq!(KeyRing::wrapped_by(&rewrapped).unwrap(), after.current_id());
    }

    #[test]
    fn keks_parse_from_32_bytes_of_base64_only() {
        let encoded = STANDARD.encode([7u8; 32]);
        let kek = Kek::from_base64(&format!(" {encoded}\n")).unwrap();
        assert_eq!(kek.id(), Kek::from_base64(&encoded).unwrap().id());
        assert_eq!(kek.id().len(), 16);
        assert!(!format!("{kek:?}").contains(&encoded));
        for bad in ["", "not base64!", &STANDARD.encode([7u8; 31])] {
            assert_eq!(
                Kek::from_base64(bad).unwrap_err(),
                SealingError::MalformedKek
            );
        }
    }

    proptest! {
        #[test]
        fn any_text_round_trips_and_never_shows_through(plain in "\\PC{1,64}") {
            let key = DataKey::random();
            let event = Uuid::now_v1(&[9; 6]);
            let sealed = key.seal(event, "email", &plain);
            prop_assert_eq!(key.open(event, "email", &sealed).unwrap(), plain.clone());
            if plain.len() >= 4 {
                prop_assert!(!sealed.contains(&plain));
                prop_assert!(!sealed.contains(&URL_SAFE_NO_PAD.encode(plain.as_bytes())));
            }
        }
    }
}
