//! The cluster store: etcd v3 through etcd-client, driven from a small
//! single-threaded tokio runtime so that the rest of the program stays
//! synchronous. Every call is bounded by the configured timeout.

use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp,
};

use super::{Compare, LeaseId, Op, Result, Store, StoreError};
use crate::config::EtcdConfig;

pub struct EtcdStore {
    runtime: tokio::runtime::Runtime,
    client: Client,
    /// `etcd://a,b,c` as configured, for messages.
    location: String,
    timeout: Duration,
    /// Set when a request found no member within the bound: the next
    /// requests in that window fail at once, so that one outage costs a
    /// hook one timeout, not one per request (rollback included).
    down_until: std::sync::Mutex<Option<(std::time::Instant, String)>>,
}

impl EtcdStore {
    pub fn connect(endpoints: &[String], config: &EtcdConfig) -> Result<EtcdStore> {
        let location = format!("etcd://{}", endpoints.join(","));
        let fail = |message: String| StoreError::Backend {
            location: location.clone(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("start the client runtime: {e}")))?;
        let tls = config.tls_enabled();
        let scheme = if tls { "https" } else { "http" };
        let urls: Vec<String> = endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(config.timeout)
            .with_timeout(config.timeout)
            // A cluster without a leader answers at once with an error
            // instead of holding the request.
            .with_require_leader(true);
        if tls {
            let mut tls_options = TlsOptions::new();
            if let Some(ca) = &config.ca {
                let pem = std::fs::read(ca)
                    .map_err(|e| fail(format!("read etcd.ca {}: {e}", ca.display())))?;
                tls_options = tls_options.ca_certificate(Certificate::from_pem(pem));
            }
            if let (Some(cert), Some(key)) = (&config.cert, &config.key) {
                let cert_pem = std::fs::read(cert)
                    .map_err(|e| fail(format!("read etcd.cert {}: {e}", cert.display())))?;
                let key_pem = std::fs::read(key)
                    .map_err(|e| fail(format!("read etcd.key {}: {e}", key.display())))?;
                tls_options = tls_options.identity(Identity::from_pem(cert_pem, key_pem));
            }
            options = options.with_tls(tls_options);
        }
        if let Some(user) = &config.user {
            let password = config
                .password()
                .map_err(|e| fail(format!("etcd password: {e}")))?;
            options = options.with_user(user.clone(), password);
        }
        let timeout = config.timeout;
        let client = runtime
            .block_on(async {
                tokio::time::timeout(timeout, Client::connect(urls, Some(options))).await
            })
            .map_err(|_| fail(no_answer(timeout)))?
            .map_err(|e| fail(describe(&e)))?;
        Ok(EtcdStore {
            runtime,
            client,
            location,
            timeout,
            down_until: std::sync::Mutex::new(None),
        })
    }

    fn error(&self, message: String) -> StoreError {
        StoreError::Backend {
            location: self.location.clone(),
            message,
        }
    }

    /// Runs one request, bounded by the timeout. A request that could not
    /// reach any member (connection refused or reset before it was sent)
    /// is tried again until the bound: with one member down, the client's
    /// balancer may still pick it.
    fn call<T, F>(&self, what: &str, request: impl Fn() -> F) -> Result<T>
    where
        F: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        {
            let down = self.down_until.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((until, message)) = &*down {
                if std::time::Instant::now() < *until {
                    return Err(self.error(format!("{what}: {message}")));
                }
            }
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let result = self.runtime.block_on(async {
            let mut last: Option<String> = None;
            loop {
                let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                match tokio::time::timeout(remaining, request()).await {
                    Ok(Ok(value)) => return Ok(value),
                    Ok(Err(e)) if not_sent(&e) => {
                        last = Some(describe(&e));
                        if tokio::time::Instant::now() >= deadline {
                            return Err((true, unreachable(self.timeout, last)));
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Ok(Err(e)) => return Err((false, describe(&e))),
                    Err(_) => return Err((true, unreachable(self.timeout, last))),
                }
            }
        });
        result.map_err(|(outage, message)| {
            if outage {
                *self.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((std::time::Instant::now() + self.timeout, message.clone()));
            }
            self.error(format!("{what}: {message}"))
        })
    }
}

fn unreachable(timeout: Duration, last: Option<String>) -> String {
    let mut message = no_answer(timeout);
    if let Some(last) = last {
        message.push_str(&format!("; last error: {last}"));
    }
    message
}

/// Whether the request failed before any member received it.
fn not_sent(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::Unavailable && status.message().contains("connect")
        }
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

fn no_answer(timeout: Duration) -> String {
    format!(
        "no answer within {} (is the cluster reachable, and does it have a leader?)",
        humantime::format_duration(timeout)
    )
}

/// The gRPC status message rather than the whole debug form.
fn describe(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let mut text = format!("{} ({:?})", status.message(), status.code());
            // "transport error" alone says little: add what caused it.
            let mut source = std::error::Error::source(status);
            while let Some(cause) = source {
                text.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            text
        }
        other => other.to_string(),
    }
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<String>> {
        let kv = self.client.kv_client();
        let response = self.call("get", || {
            let mut kv = kv.clone();
            async move { kv.get(key, None).await }
        })?;
        response
            .kvs()
            .first()
            .map(|kv| {
                kv.value_str()
                    .map(str::to_string)
                    .map_err(|e| self.error(format!("{key}: {e}")))
            })
            .transpose()
    }

    fn list(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let kv = self.client.kv_client();
        let response = self.call("list", || {
            let mut kv = kv.clone();
            async move { kv.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })?;
        response
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().map_err(|e| self.error(e.to_string()))?;
                let value = kv.value_str().map_err(|e| self.error(e.to_string()))?;
                Ok((key.to_string(), value.to_string()))
            })
            .collect()
    }

    fn transaction(&self, compares: &[Compare], ops: &[Op]) -> Result<bool> {
        let compares: Vec<EtcdCompare> = compares
            .iter()
            .map(|c| match c {
                // A key that does not exist has version 0.
                Compare::Absent(key) => EtcdCompare::version(key.as_str(), CompareOp::Equal, 0),
                Compare::Equals(key, value) => {
                    EtcdCompare::value(key.as_str(), CompareOp::Equal, value.as_str())
                }
            })
            .collect();
        let ops: Vec<TxnOp> = ops
            .iter()
            .map(|op| match op {
                Op::Put(key, value) => TxnOp::put(key.as_str(), value.as_str(), None),
                Op::PutWithLease(key, value, lease) => TxnOp::put(
                    key.as_str(),
                    value.as_str(),
                    Some(PutOptions::new().with_lease(lease.0)),
                ),
                Op::Delete(key) => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let kv = self.client.kv_client();
        let txn = Txn::new().when(compares).and_then(ops);
        match self.call("transaction", || {
            let mut kv = kv.clone();
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        }) {
            Ok(response) => Ok(response.succeeded()),
            // etcd refuses a put under a lease that has ended.
            Err(StoreError::Backend { message, .. })
                if message.contains("requested lease not found") =>
            {
                Err(StoreError::LeaseEnded(LeaseId(0)))
            }
            Err(e) => Err(e),
        }
    }

    fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        let lease = self.client.lease_client();
        let seconds = ttl.as_secs().max(1) as i64;
        let response = self.call("grant lease", || {
            let mut lease = lease.clone();
            async move { lease.grant(seconds, None).await }
        })?;
        Ok(LeaseId(response.id()))
    }

    fn keep_alive(&self, id: LeaseId) -> Result<bool> {
        let lease = self.client.lease_client();
        let response = match self.call("keep lease alive", || {
            let mut lease = lease.clone();
            async move {
                let (mut keeper, mut stream) = lease.keep_alive(id.0).await?;
                keeper.keep_alive().await?;
                stream.message().await
            }
        }) {
            Ok(response) => response,
            // The lease ran out while the cluster was away (a frozen or
            // partitioned member expires it on its return): ended, not an
            // error, so the registrar takes a new one and publishes again.
            Err(StoreError::Backend { message, .. }) if message.contains("lease not found") => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        };
        // A lease that has ended answers with TTL 0.
        Ok(response.map(|r| r.ttl() > 0).unwrap_or(false))
    }

    fn revoke_lease(&self, id: LeaseId) -> Result<()> {
        let lease = self.client.lease_client();
        match self.call("revoke lease", || {
            let mut lease = lease.clone();
            async move { lease.revoke(id.0).await }
        }) {
            Ok(_) => Ok(()),
            Err(StoreError::Backend { message, .. }) if message.contains("lease not found") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
