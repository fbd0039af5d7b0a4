//! Bearer tokens: who a request comes from, from a JWT verified against a JWKS.
//!
//! Behind API Gateway, the HTTP API's JWT authorizer verifies the token and the function
//! reads its claims from the request context; locally the server verifies the token
//! itself with [`Verifier`]. Both end in [`caller_from_claims`], so one mapping from
//! claims to a [`Caller`] serves both. [`LocalIssuer`] is the local stack's identity
//! provider: one ES256 key, its JWKS, and tokens minted for local use.
//!
//! Only asymmetric algorithms are accepted (RS256, ES256), each key only with its own:
//! a token's header cannot choose HS256 with the public key as its secret, nor `none`.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value, json};

use super::{Caller, Role, Unauthenticated, caller_from_claims};

/// The `iss` of the local stack's tokens.
pub const LOCAL_ISSUER: &str = "https://auth.cloudcafe.local";
/// The `aud` of the local stack's tokens: the API.
pub const LOCAL_AUDIENCE: &str = "cloudcafe-api";
/// The local issuer's private key (PKCS#8 DER, readable by its owner only).
const KEY_FILE: &str = "signing-key.p8";
/// The local issuer's public keys, for a verifier.
pub const JWKS_FILE: &str = "jwks.json";

/// Clock skew tolerated on `exp` and `nbf`.
pub const LEEWAY: Duration = Duration::from_secs(30);

/// Why keys cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A JWK that cannot verify tokens here.
    #[error("key {kid:?}: {reason}")]
    Unusable {
        /// Its id.
        kid: String,
        /// Why.
        reason: String,
    },
    /// Signing or key generation failed.
    #[error("signing key: {0}")]
    Signing(String),
    /// The key or the JWKS could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// Which file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Verifies tokens of one issuer for one audience.
pub struct Verifier {
    keys: HashMap<String, (DecodingKey, Algorithm)>,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Verifier {
    /// Over the keys of `jwks` (each needs a `kid`, and is RSA or P-256), for tokens
    /// `issuer` minted for `audience`.
    pub fn new(jwks: &JwkSet, issuer: &str, audience: &str) -> Result<Verifier, KeyError> {
        let mut keys = HashMap::new();
        for jwk in &jwks.keys {
            let kid = jwk.common.key_id.clone().unwrap_or_default();
            let unusable = |reason: String| KeyError::Unusable {
                kid: kid.clone(),
                reason,
            };
            if kid.is_empty() {
                return Err(unusable("no kid".into()));
            }
            let alg = match &jwk.algorithm {
                AlgorithmParameters::RSA(_) => Algorithm::RS256,
                AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => return Err(unusable("neither RSA nor EC".into())),
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| unusable(e.to_string()))?;
            keys.insert(kid, (key, alg));
        }
        Ok(Verifier {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A verifier of the local issuer's tokens, over the JWKS it keeps in `dir`
    /// ([`LocalIssuer::open`]).
    pub fn local(dir: &Path) -> Result<Verifier, KeyError> {
        let path = dir.join(JWKS_FILE);
        let text = std::fs::read(&path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        let jwks: JwkSet = serde_json::from_slice(&text).map_err(|e| KeyError::Unusable {
            kid: String::new(),
            reason: format!("{}: {e}", path.display()),
        })?;
        Verifier::new(&jwks, LOCAL_ISSUER, LOCAL_AUDIENCE)
    }

    /// The caller `token` was issued to, if it verifies.
    pub fn verify(&self, token: &str) -> Result<Caller, Unauthenticated> {
        let invalid = |e: &dyn std::fmt::Display| Unauthenticated::Invalid(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
        let kid = header.kid.ok_or_else(|| invalid(&"no kid in the header"))?;
        let (key, alg) = self.keys.get(&kid).ok_or_else(|| invalid(&"unknown kid"))?;
        if header.alg != *alg {
            return Err(invalid(&format!("{:?} is not the key's algorithm", header.alg)));
        }
        let mut rules = Validation::new(*alg);
        rules.leeway = LEEWAY.as_secs();
        rules.validate_nbf = true;
        rules.set_issuer(&[&self.issuer]);
        rules.set_audience(&[&self.audience]);
        rules.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &rules).map_err(|e| invalid(&e))?;
        caller_from_claims(|name| data.claims.get(name).and_then(Value::as_str))
    }
}

/// The local stack's identity provider: an ES256 key (PKCS#8), its public half as a
/// JWKS, and tokens for local callers.
pub struct LocalIssuer {
    pkcs8: Vec<u8>,
    key: EncodingKey,
    kid: String,
    jwks: JwkSet,
    /// The `iss` of its tokens.
    pub issuer: String,
    /// The `aud` of its tokens.
    pub audience: String,
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl LocalIssuer {
    /// A new key.
    pub fn generate(issuer: &str, audience: &str) -> Result<LocalIssuer, KeyError> {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
        let rng = aws_lc_rs::rand::SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        LocalIssuer::from_pkcs8(doc.as_ref(), issuer, audience)
    }

    /// The local stack's issuer, its key kept in `dir`: created on first use, with
    /// its JWKS ([`JWKS_FILE`]) beside it for whoever verifies, and the same key ever
    /// after, so tokens minted earlier stay valid.
    pub fn open(dir: &Path) -> Result<LocalIssuer, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| KeyError::Io { path, source }
        };
        let key_path = dir.join(KEY_FILE);
        let issuer = match std::fs::read(&key_path) {
            Ok(der) => LocalIssuer::from_pkcs8(&der, LOCAL_ISSUER, LOCAL_AUDIENCE)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let issuer = LocalIssuer::generate(LOCAL_ISSUER, LOCAL_AUDIENCE)?;
                std::fs::create_dir_all(dir).map_err(io(dir))?;
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&key_path);
                match created {
                    Ok(mut file) => file.write_all(issuer.pkcs8()).map_err(io(&key_path))?,
                    // Another process created it first: theirs is the key.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return LocalIssuer::open(dir),
                    Err(e) => return Err(io(&key_path)(e)),
                }
                issuer
            }
            Err(e) => return Err(io(&key_path)(e)),
        };
        let jwks_path = dir.join(JWKS_FILE);
        let jwks = serde_json::to_vec_pretty(issuer.jwks()).map_err(|e| KeyError::Signing(e.to_string()))?;
        std::fs::write(&jwks_path, jwks).map_err(io(&jwks_path))?;
        Ok(issuer)
    }

    /// The key kept earlier ([`LocalIssuer::pkcs8`]).
    pub fn from_pkcs8(pkcs8: &[u8], issuer: &str, audience: &str) -> Result<LocalIssuer, KeyError> {
        let key = EncodingKey::from_ec_der(pkcs8);
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).map_err(|e| KeyError::Signing(e.to_string()))?;
        let kid = jwk
            .thumbprint(ThumbprintHash::SHA256)
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        jwk.common.key_id = Some(kid.clone());
        Ok(LocalIssuer {
            pkcs8: pkcs8.to_vec(),
            key,
            kid,
            jwks: JwkSet { keys: vec![jwk] },
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// The private key, PKCS#8 DER, to keep.
    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public key set a verifier trusts.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// A token for `caller`, valid from now for `valid_for`.
    pub fn mint(&self, caller: &Caller, valid_for: Duration) -> Result<String, KeyError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|e| KeyError::Signing(e.to_string()))?
            .as_secs();
        let mut claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": caller.subject,
            "role": caller.role.name(),
            "iat": now,
            "nbf": now,
            "exp": now + valid_for.as_secs(),
        });
        if let Role::Staff { store } = &caller.role {
            claims["store"] = json!(store);
        }
        self.sign(&claims)
    }

    /// Any claims, signed with the key (tests build broken tokens with it).
    pub fn sign(&self, claims: &Value) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| KeyError::Signing(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

    const ISS: &str = "https://auth.cloudcafe.local";
    const AUD: &str = "cloudcafe-api";

    fn now() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
    }

    fn staff() -> Caller {
        Caller {
            subject: "barista-9".into(),
            role: Role::Staff {
                store: "store-00001".into(),
            },
        }
    }

    fn claims(overrides: Value) -> Value {
        let mut c = json!({
            "iss": ISS, "aud": AUD, "sub": "cust-1", "role": "customer",
            "iat": now(), "nbf": now(), "exp": now() + 600,
        });
        for (k, v) in overrides.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn a_minted_token_verifies_to_its_caller_and_the_key_survives_being_kept() {
        let issuer = LocalIssuer::generate(ISS, AUD).unwrap();
        let kept = LocalIssuer::from_pkcs8(issuer.pkcs8(), ISS, AUD).unwrap();
        let jwks: JwkSet = serde_json::from_str(&serde_json::to_string(kept.jwks()).unwrap()).unwrap();
        let verifier = Verifier::new(&jwks, ISS, AUD).unwrap();
        let token = issuer.mint(&staff(), Duration::from_secs(60)).unwrap();
        assert_eq!(verifier.verify(&token), Ok(staff()));
    }

    #[test]
    fn every_broken_token_is_refused() {
        let issuer = LocalIssuer::generate(ISS, AUD).unwrap();
        let verifier = Verifier::new(issuer.jwks(), ISS, AUD).unwrap();
        let sign = |overrides: Value| issuer.sign(&claims(overrides)).unwrap();
        assert!(verifier.verify(&sign(json!({}))).is_ok(), "the baseline verifies");

        let good = sign(json!({}));
        let (head_and_body, signature) = good.rsplit_once('.').unwrap();
        let mut sig = B64.decode(signature).unwrap();
        sig[0] ^= 1;
        let tampered = format!("{head_and_body}.{}", B64.encode(sig));
        let body = head_and_body.split_once('.').unwrap().1;
        let kid = issuer.kid.clone();
        let none = format!(
            "{}.{body}.",
            B64.encode(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string())
        );
        // HS256 with the public key's JSON as the secret: the classic confusion.
        let mut hs = Header::new(Algorithm::HS256);
        hs.kid = Some(kid.clone());
        let confused = jsonwebtoken::encode(
            &hs,
            &claims(json!({})),
            &EncodingKey::from_secret(serde_json::to_string(issuer.jwks()).unwrap().as_bytes()).unwrap(),
        )
        .unwrap();
        let stranger = LocalIssuer::generate(ISS, AUD).unwrap();
        let mut other_key = Header::new(Algorithm::ES256);
        other_key.kid = Some(kid);
        let forged = jsonwebtoken::encode(&other_key, &claims(json!({})), &stranger.key).unwrap();
        let skew = LEEWAY.as_secs();
        for (why, token) in [
            ("expired", sign(json!({"exp": now() - skew - 5}))),
            ("not yet valid", sign(json!({"nbf": now() + skew + 60}))),
            ("wrong audience", sign(json!({"aud": "another-api"}))),
            ("wrong issuer", sign(json!({"iss": "https://evil.example"}))),
            ("no expiry", sign(json!({"exp": null}))),
            ("tampered signature", tampered),
            ("alg none", none),
            ("HS256 with the public key", confused),
            ("another key under our kid", forged),
            ("unknown kid", stranger.mint(&staff(), Duration::from_secs(60)).unwrap()),
            ("not a JWT", "not.a.jwt".to_owned()),
        ] {
            assert!(
                matches!(verifier.verify(&token), Err(Unauthenticated::Invalid(_))),
                "{why}: {:?}",
                verifier.verify(&token)
            );
        }
        // Within the skew is still valid (clocks disagree a little).
        assert!(verifier.verify(&sign(json!({"exp": now() - 5}))).is_ok());
        for (why, overrides) in [
            ("no role", json!({"role": null})),
            ("unknown role", json!({"role": "admin"})),
            ("staff without a store", json!({"role": "staff"})),
            ("empty subject", json!({"sub": ""})),
        ] {
            assert!(
                matches!(verifier.verify(&sign(overrides)), Err(Unauthenticated::Claims(_))),
                "{why}"
            );
        }
    }

    #[test]
    fn the_local_issuer_keeps_its_key_and_publishes_its_jwks() {
        let dir = std::env::temp_dir().join(format!("cafe-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = LocalIssuer::open(&dir).unwrap();
        let token = first.mint(&staff(), Duration::from_secs(60)).unwrap();
        let again = LocalIssuer::open(&dir).unwrap();
        assert_eq!(again.kid, first.kid, "the same key the second time");
        let verifier = Verifier::local(&dir).unwrap();
        assert_eq!(verifier.verify(&token), Ok(staff()));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join(KEY_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is its owner's only");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn api_gateway_claims_map_the_same_way() {
        // API Gateway's JWT authorizer hands the claims over as strings.
        let claims: HashMap<&str, &str> = [("sub", "barista-9"), ("role", "staff"), ("store", "store-00001")].into();
        assert_eq!(caller_from_claims(|k| claims.get(k).copied()), Ok(staff()));
    }
}
