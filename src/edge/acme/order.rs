//! One ACME order for one name, config-free: the account (loaded from storage or
//! created), the order, its challenge answered through [`Challenges`], the CSR
//! (rcgen, a fresh ECDSA P-256 key per certificate) and the issued chain.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, ChallengeType, Identifier, NewAccount, NewOrder,
    OrderStatus, RetryPolicy,
};

use super::challenge::{ChallengeError, Challenges, Published};
use super::storage::{Storage, StorageError, StoredAccount};
use super::trust::{acme_client_config, TrustError};
use crate::config::AcmeChallenge;
use crate::model::host::HostName;
use crate::registry::{now_ms, AcmeStore};

/// How long the CA may take to validate and then to issue, each.
const CA_PATIENCE: Duration = Duration::from_secs(60);

/// Why an order gave no certificate.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("ACME CA: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("acme.ca_file: {0}")]
    Trust(#[from] TrustError),
    #[error("ACME storage: {0}")]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Challenge(#[from] ChallengeError),
    #[error("certificate request: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("the CA offers no {0:?} challenge for this name")]
    NoChallenge(ChallengeType),
    #[error("authorization ended {0:?}")]
    Authorization(AuthorizationStatus),
    #[error("issued certificate: {0}")]
    Issued(super::IssuedError),
    #[error("the node of the fleet ordering this name stored no certificate in time")]
    Peer,
    #[error("acme.max_orders_per_hour is used up")]
    RateLimited,
    #[error("order ended {0:?}, not ready")]
    NotReady(OrderStatus),
}

/// Who orders: the CA's directory, the trust roots for its API, the contact.
pub struct Orderer<'a> {
    pub directory: &'a str,
    pub ca_file: Option<&'a Path>,
    pub email: Option<&'a str>,
}

impl Orderer<'_> {
    /// The account stored for this directory, or a new one (then stored).
    pub async fn account(&self, storage: &Storage) -> Result<Account, OrderError> {
        let http = Client::builder(TokioExecutor::new()).build::<_, BodyWrapper<bytes::Bytes>>(
            hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(acme_client_config(self.ca_file)?)
                .https_or_http()
                .enable_http1()
                .build(),
        );
        let builder = Account::builder_with_http(Box::new(http));
        if let Some(stored) = storage.account(self.directory).await? {
            return Ok(builder.from_credentials(stored.credentials).await?);
        }
        let contact = self.email.map(|email| format!("mailto:{email}"));
        let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new = NewAccount {
            contact: &contact,
            terms_of_service_agreed: true,
            only_return_existing: false,
        };
        let (account, credentials) = builder
            .create(&new, self.directory.to_owned(), None)
            .await?;
        storage
            .save_account(&StoredAccount {
                directory: self.directory.to_owned(),
                credentials,
            })
            .await?;
        tracing::info!(directory = %self.directory, "ACME account created");
        Ok(account)
    }
}

/// How long a challenge answer shared through the registry stays answerable.
const SHARED_ANSWER_MS: i64 = 10 * 60 * 1000;

/// Order a certificate for `name`, answering `kind` through `challenges` (and,
/// in a fleet, through `shared`, so whichever node the CA reaches answers);
/// returns the chain followed by the private key, in PEM.
pub async fn order(
    account: &Account,
    name: &HostName,
    kind: AcmeChallenge,
    challenges: &Arc<Challenges>,
    shared: Option<&Arc<dyn AcmeStore>>,
) -> Result<String, OrderError> {
    let result = order_answering(account, name, kind, challenges, shared).await;
    if let Some(store) = shared {
        if let Err(error) = store.withdraw_challenge(name.as_str()).await {
            tracing::debug!(%error, "shared ACME challenge not withdrawn; it expires");
        }
    }
    result
}

async fn order_answering(
    account: &Account,
    name: &HostName,
    kind: AcmeChallenge,
    challenges: &Arc<Challenges>,
    shared: Option<&Arc<dyn AcmeStore>>,
) -> Result<String, OrderError> {
    let identifiers = [Identifier::Dns(name.as_str().to_owned())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let challenge_type = match kind {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    // Kept until the order is ready: the CA may validate more than once.
    let mut answers: Vec<Published> = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(OrderError::Authorization(other)),
        }
        let mut challenge = authorization
            .challenge(challenge_type.clone())
            .ok_or(OrderError::NoChallenge(challenge_type.clone()))?;
        let key_authorization = challenge.key_authorization();
        let digest = key_authorization.digest();
        let alpn_digest = (kind == AcmeChallenge::TlsAlpn01).then_some(digest.as_ref());
        answers.push(challenges.publish(
            name,
            &challenge.token,
            key_authorization.as_str(),
            alpn_digest,
        )?);
        if let Some(store) = shared {
            let expires = now_ms() + SHARED_ANSWER_MS;
            store
                .publish_challenge(
                    name.as_str(),
                    &challenge.token,
                    key_authorization.as_str(),
                    expires,
                )
                .await
                .map_err(StorageError::from)?;
        }
        challenge.set_ready().await?;
    }
    let patience = RetryPolicy::new().timeout(CA_PATIENCE);
    let status = order.poll_ready(&patience).await?;
    drop(answers);
    if status != OrderStatus::Ready {
        return Err(OrderError::NotReady(status));
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(vec![name.as_str().to_owned()])?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&patience).await?;
    Ok(format!("{}\n{}", chain.trim_end(), key.serialize_pem()))
}
