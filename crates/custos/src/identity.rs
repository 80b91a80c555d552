//! User identities on DICOM associations (PS3.7 D.3.3.7): a username with a
//! passcode, or a JWT (an OpenID Connect token when `[oidc]` is set, or a
//! Custos API token), prove a Custos user, whose role narrows the peer's
//! rights. A username alone proves nothing and is refused.

use std::sync::Arc;

use custos_core::credentials::{parse_token, token_secret_matches, verify_dummy, verify_password};
use custos_core::{Permissions, Principal};
use custos_dimse::{IdentityClaim, IdentityKind, IdentityVerifier};
use custos_index::Index;
use custos_web::auth::now_unix;
use custos_web::oidc::Oidc;

pub struct Identities {
    pub index: Arc<dyn Index>,
    pub oidc: Option<Arc<Oidc>>,
}

#[async_trait::async_trait]
impl IdentityVerifier for Identities {
    async fn verify(&self, claim: &IdentityClaim) -> Option<(String, Permissions)> {
        let primary = String::from_utf8(claim.primary.clone()).ok()?;
        match claim.kind {
            IdentityKind::UsernamePasscode => {
                let passcode = String::from_utf8(claim.secondary.clone()).ok()?;
                if primary.len() > 64 || passcode.len() > 1024 {
                    return None;
                }
                let user = self.index.user(&primary).await.ok()?;
                let Some(user) = user.filter(|u| !u.disabled) else {
                    tokio::task::spawn_blocking(move || verify_dummy(&passcode))
                        .await
                        .ok()?;
                    return None;
                };
                let hash = user.password_hash.clone();
                let ok = tokio::task::spawn_blocking(move || verify_password(&hash, &passcode))
                    .await
                    .ok()?;
                ok.then(|| (user.name.clone(), user.role.permissions()))
            }
            IdentityKind::Jwt => {
                let token = primary.trim();
                if let Some((id, secret)) = parse_token(token) {
                    let t = self.index.token(id).await.ok()??;
                    if !token_secret_matches(&t, secret) || t.revoked || t.expires <= now_unix() {
                        return None;
                    }
                    let user = self.index.user(&t.user).await.ok()??;
                    if user.disabled {
                        return None;
                    }
                    let p = Principal::User {
                        name: user.name.clone(),
                        role: user.role,
                        read_only: t.read_only,
                    };
                    return Some((user.name, p.permissions()));
                }
                let oidc = self.oidc.as_ref()?;
                let p = oidc.principal(token).await?;
                Some((p.name().to_string(), p.permissions()))
            }
            _ => None,
        }
    }
}
