//! One certificate order with one challenge type, from new order to chain:
//! set up every authorization's answer, tell the CA it is ready, wait, collect
//! the CA's problem documents if it failed, else send a CSR and fetch the chain.
//! Answers are always taken down again, success or not.

use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewOrder, Order, OrderStatus,
    RetryPolicy,
};

use crate::config::{Challenge, HostPattern};
use crate::tls::challenges::{alpn_certificate, Challenges};

/// A new certificate and its key, as PEM.
#[derive(Debug)]
pub struct Issued {
    /// Leaf first, then intermediates.
    pub chain_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    /// The CA or the connection to it failed.
    #[error(transparent)]
    Acme(#[from] instant_acme::Error),
    /// The CA tried to validate and failed; its problem documents.
    #[error("the CA could not validate: {}", problems.join("; "))]
    Invalid {
        /// "type: detail" per failed challenge.
        problems: Vec<String>,
    },
    /// The CA offered no challenge of this type for a name.
    #[error("the CA offers no {kind} challenge for {name}")]
    NoChallenge {
        /// The challenge type.
        kind: &'static str,
        /// The name.
        name: String,
    },
    /// An authorization was in a state that cannot become valid.
    #[error("authorization for {name} is {status}")]
    Authorization {
        /// The name.
        name: String,
        /// Its status.
        status: String,
    },
    /// The DNS hook failed.
    #[error("dns_hook {action} for {name} failed: {why}")]
    Hook {
        /// `present` or `cleanup`.
        action: &'static str,
        /// The name.
        name: String,
        /// Exit status or I/O error.
        why: String,
    },
    /// Building a key, CSR or challenge certificate failed.
    #[error("certificate request: {0}")]
    Csr(#[from] rcgen::Error),
}

impl OrderError {
    /// The ACME problem types involved, for hints.
    pub fn problem_types(&self) -> Vec<&str> {
        match self {
            OrderError::Acme(instant_acme::Error::Api(problem)) => {
                problem.r#type.as_deref().into_iter().collect()
            }
            OrderError::Invalid { problems } => problems
                .iter()
                .map(|p| p.split(' ').next().unwrap_or(""))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What an order needs besides the account.
pub struct OrderPlan<'a> {
    /// The names, as the site lists them.
    pub hosts: &'a [HostPattern],
    /// The one challenge type to use.
    pub challenge: Challenge,
    /// Where answers are published for the listeners.
    pub challenges: &'a Challenges,
    /// The DNS-01 hook.
    pub dns_hook: Option<&'a Path>,
}

/// Orders a certificate for `plan.hosts`.
pub async fn obtain(account: &Account, plan: OrderPlan<'_>) -> Result<Issued, OrderError> {
    let identifiers: Vec<Identifier> = plan
        .hosts
        .iter()
        .map(|h| Identifier::Dns(h.to_string()))
        .collect();
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut cleanup = Vec::new();
    let result = answer_all(&mut order, &plan, &mut cleanup).await;
    let ready = match result {
        Ok(()) => {
            order
                .poll_ready(
                    &RetryPolicy::new()
                        .initial_delay(Duration::from_millis(500))
                        .timeout(Duration::from_secs(120)),
                )
                .await
        }
        Err(e) => {
            take_down(&plan, cleanup).await;
            return Err(e);
        }
    };
    take_down(&plan, cleanup).await;
    match ready? {
        OrderStatus::Ready => {}
        _ => {
            return Err(OrderError::Invalid {
                problems: problems(&mut order).await,
            })
        }
    }
    let names: Vec<String> = plan.hosts.iter().map(ToString::to_string).collect();
    let mut params = rcgen::CertificateParams::new(names)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let key = rcgen::KeyPair::generate()?;
    let csr = params.serialize_request(&key)?;
    order.finalize_csr(csr.der()).await?;
    let chain_pem = order
        .poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(120)))
        .await?;
    Ok(Issued {
        chain_pem,
        key_pem: key.serialize_pem(),
    })
}

/// What to take down after the order: an HTTP token, an ALPN name, a TXT record.
enum Posted {
    Http(String),
    Alpn(String),
    Txt(String, String),
}

async fn answer_all(
    order: &mut Order,
    plan: &OrderPlan<'_>,
    posted: &mut Vec<Posted>,
) -> Result<(), OrderError> {
    let kind = match plan.challenge {
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        Challenge::Http01 => ChallengeType::Http01,
        Challenge::Dns01 => ChallengeType::Dns01,
    };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization?;
        let name = authorization.identifier().to_string();
        match authorization.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            other => {
                return Err(OrderError::Authorization {
                    name,
                    status: format!("{other:?}"),
                })
            }
        }
        let mut challenge =
            authorization
                .challenge(kind.clone())
                .ok_or_else(|| OrderError::NoChallenge {
                    kind: plan.challenge.name(),
                    name: name.clone(),
                })?;
        let key_authorization = challenge.key_authorization();
        match plan.challenge {
            Challenge::Http01 => {
                plan.challenges.put_http(
                    challenge.token.clone(),
                    key_authorization.as_str().to_string(),
                );
                posted.push(Posted::Http(challenge.token.clone()));
            }
            Challenge::TlsAlpn01 => {
                let certificate = alpn_certificate(&name, key_authorization.digest().as_ref())?;
                plan.challenges.put_alpn(name.clone(), certificate);
                posted.push(Posted::Alpn(name.clone()));
            }
            Challenge::Dns01 => {
                // The TXT record of `*.example.com` lives at `_acme-challenge.example.com`.
                let domain = name.trim_start_matches("*.").to_string();
                let value = key_authorization.dns_value();
                run_hook(plan.dns_hook, "present", &domain, &value).await?;
                posted.push(Posted::Txt(domain, value));
            }
        }
        challenge.set_ready().await?;
    }
    Ok(())
}

async fn take_down(plan: &OrderPlan<'_>, posted: Vec<Posted>) {
    for item in posted {
        match item {
            Posted::Http(token) => plan.challenges.remove_http(&token),
            Posted::Alpn(name) => plan.challenges.remove_alpn(&name),
            Posted::Txt(domain, value) => {
                if let Err(error) = run_hook(plan.dns_hook, "cleanup", &domain, &value).await {
                    tracing::warn!(%error, "DNS-01 cleanup failed; remove the TXT record by hand");
                }
            }
        }
    }
}

/// The CA's problem documents of every failed challenge in `order`.
async fn problems(order: &mut Order) -> Vec<String> {
    let mut found = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let _ = authorization.refresh().await;
        for challenge in &authorization.challenges {
            if let Some(problem) = &challenge.error {
                found.push(format!(
                    "{} {}: {}",
                    problem.r#type.as_deref().unwrap_or("unknown"),
                    authorization.identifier(),
                    problem.detail.as_deref().unwrap_or("no detail")
                ));
            }
        }
    }
    if found.is_empty() {
        found.push("the order became invalid without a problem document".to_string());
    }
    found
}

/// Runs `HOOK action domain value`, certbot-hook style, within two minutes.
async fn run_hook(
    hook: Option<&Path>,
    action: &'static str,
    domain: &str,
    value: &str,
) -> Result<(), OrderError> {
    let fail = |why: String| OrderError::Hook {
        action,
        name: domain.to_string(),
        why,
    };
    let hook = hook.ok_or_else(|| fail("no dns_hook configured".to_string()))?;
    let run = tokio::process::Command::new(hook)
        .args([action, domain, value])
        .kill_on_drop(true)
        .status();
    match tokio::time::timeout(Duration::from_secs(120), run).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(fail(format!("exited with {status}"))),
        Ok(Err(error)) => Err(fail(error.to_string())),
        Err(_) => Err(fail("did not finish within 2 minutes".to_string())),
    }
}
