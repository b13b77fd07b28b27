//! Leader election over a `coordination.k8s.io` Lease, so that of several operator
//! processes only one reconciles at a time.
//!
//! The algorithm is client-go's: a candidate takes the Lease when it is free or when its
//! record has not changed for a whole lease duration, as measured by the candidate's own
//! clock (so clocks need not agree); every write carries the `resourceVersion` it read, so
//! two candidates cannot both win. The leader renews every retry period and gives up when
//! it could not renew within the renew deadline, which is shorter than the lease duration:
//! it stops before anyone else may start.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::Mutex;

use crate::error::{Error, Refusal, Result};

/// Where the Lease is and how long it lasts.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Name of the Lease.
    pub name: String,
    /// Namespace of the Lease.
    pub namespace: String,
    /// This process's identity, unique among the candidates.
    pub identity: String,
    /// How long a Lease not renewed keeps others waiting.
    pub lease_duration: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// Pause between attempts to take or renew the Lease.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// A Lease with the default timings: 10 s duration, 7 s renew deadline, 2 s retries, so
    /// that a standby takes over within about 12 s of the leader dying.
    pub fn new(
        name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(10),
            renew_deadline: Duration::from_secs(7),
            retry_period: Duration::from_secs(2),
        }
    }

    fn check(&self) -> Result<()> {
        if self.identity.is_empty() {
            return Err(Error::Config(
                "the leader election identity is empty".into(),
            ));
        }
        if self.retry_period.is_zero()
            || self.renew_deadline <= self.retry_period
            || self.lease_duration <= self.renew_deadline
        {
            return Err(Error::Config(format!(
                "leader election needs 0 < retry period ({:?}) < renew deadline ({:?}) < lease duration ({:?})",
                self.retry_period, self.renew_deadline, self.lease_duration
            )));
        }
        Ok(())
    }
}

/// The last Lease record seen and when it was first seen by this process.
struct Observed {
    spec: LeaseSpec,
    since: Instant,
}

/// One candidate for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Mutex<Option<Observed>>,
}

impl LeaderElector {
    /// A candidate; checks the timings.
    pub fn new(client: Client, config: LeaseConfig) -> Result<Self> {
        config.check()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: Mutex::new(None),
        })
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.config.identity
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => {
                    tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    return;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, "cannot take the leader Lease yet"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease until that fails for longer than the renew deadline or another
    /// process holds it; returns the error saying so.
    ///
    /// A renewal that stalls is cut off at the deadline: a standby takes the Lease a lease
    /// duration after the last renewal it saw, and this process must have stopped by then.
    pub async fn hold(&self) -> Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            // Counted from before the request: the API server records the renewal later.
            let attempt = Instant::now();
            let deadline = tokio::time::Instant::from_std(renewed + self.config.renew_deadline);
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => renewed = attempt,
                Ok(Ok(false)) => {
                    return Error::LeadershipLost(format!(
                        "{}: another process holds it",
                        self.config.name
                    ));
                }
                Ok(Err(error)) => tracing::warn!(%error, "cannot renew the leader Lease"),
                Err(_) => tracing::warn!("renewing the leader Lease did not finish in time"),
            }
            if renewed.elapsed() >= self.config.renew_deadline {
                return Error::LeadershipLost(format!(
                    "{}: not renewed within {:?}",
                    self.config.name, self.config.renew_deadline
                ));
            }
        }
    }

    /// Gives the Lease up, if held, so a standby need not wait for it to expire.
    pub async fn release(&self) -> Result<()> {
        let lease = match self.api.get_opt(&self.config.name).await {
            Ok(Some(lease)) => lease,
            Ok(None) => return Ok(()),
            Err(source) => {
                return Err(Error::kube(
                    format!("get Lease {}", self.config.name),
                    source,
                ));
            }
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.config.identity) {
            return Ok(());
        }
        let released = Lease {
            spec: Some(LeaseSpec {
                holder_identity: None,
                lease_duration_seconds: Some(1),
                renew_time: Some(MicroTime(Timestamp::now())),
                ..spec
            }),
            ..lease
        };
        self.api
            .replace(&self.config.name, &PostParams::default(), &released)
            .await
            .map(|_| tracing::info!(lease = %self.config.name, "released the leader Lease"))
            .map_err(|source| Error::kube(format!("release Lease {}", self.config.name), source))
    }

    /// One round: takes or renews the Lease if it is ours, free or expired. `Ok(true)`
    /// when this candidate holds it afterwards.
    async fn try_acquire_or_renew(&self) -> Result<bool> {
        let name = &self.config.name;
        let now = MicroTime(Timestamp::now());
        let Some(lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| Error::kube(format!("get Lease {name}"), e))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.record(None, &now)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(created.spec.unwrap_or_default()).await;
                    Ok(true)
                }
                Err(error) if Refusal::of(&error) == Some(Refusal::Conflict) => Ok(false),
                Err(source) => Err(Error::kube(format!("create Lease {name}"), source)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let expired = self.observe(spec.clone()).await;
        let holder = spec
            .holder_identity
            .as_deref()
            .filter(|holder| !holder.is_empty());
        let ours = holder == Some(self.config.identity.as_str());
        if holder.is_some() && !ours && !expired {
            return Ok(false);
        }
        let mut record = self.record(Some(&spec).filter(|_| ours), &now);
        record.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + i32::from(!ours));
        let renewed = Lease {
            spec: Some(record),
            ..lease
        };
        match self
            .api
            .replace(name, &PostParams::default(), &renewed)
            .await
        {
            Ok(replaced) => {
                self.observe(replaced.spec.unwrap_or_default()).await;
                Ok(true)
            }
            Err(error) if Refusal::of(&error) == Some(Refusal::Conflict) => Ok(false),
            Err(source) => Err(Error::kube(format!("update Lease {name}"), source)),
        }
    }

    /// Our record: `previous` is our own current record when renewing, which keeps its
    /// acquire time.
    fn record(&self, previous: Option<&LeaseSpec>, now: &MicroTime) -> LeaseSpec {
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: Some(
                previous
                    .and_then(|p| p.acquire_time.clone())
                    .unwrap_or_else(|| now.clone()),
            ),
            renew_time: Some(now.clone()),
            lease_transitions: previous.and_then(|p| p.lease_transitions).or(Some(0)),
            ..LeaseSpec::default()
        }
    }

    /// Notes the record read; true when it has not changed for a whole lease duration
    /// (the holder's own duration, when it states one).
    async fn observe(&self, spec: LeaseSpec) -> bool {
        let mut observed = self.observed.lock().await;
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(self.config.lease_duration, Duration::from_secs);
        match observed.as_ref() {
            Some(previous) if previous.spec == spec => previous.since.elapsed() >= duration,
            _ => {
                *observed = Some(Observed {
                    spec,
                    since: Instant::now(),
                });
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_must_nest() {
        let mut config = LeaseConfig::new("l", "ns", "me");
        assert!(config.check().is_ok());
        config.renew_deadline = config.lease_duration;
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("renew deadline")
        );
        let config = LeaseConfig::new("l", "ns", "");
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .contains("identity is empty")
        );
    }
}
