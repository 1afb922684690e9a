//! The tiny lock interface the election runs on: get, create, replace and watch one Lease.
//!
//! Shaped after client-go's `resourcelock.Interface`. [`crate::kube_store::KubeLeaseStore`]
//! implements it over the Kubernetes API with kube-rs; `leaderd_testkit::memory::MemoryStore`
//! implements it in memory for the elector's tests.

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;
use serde_json::Value;

use super::record::StoredLease;

/// What a Lease operation can fail with.
///
/// [`StoreError::is_retryable`] tells whether trying again later may succeed; the elector
/// retries everything anyway (RBAC can be fixed while leaderd runs), but logs non-retryable
/// errors as configuration problems with their fix.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// 404: the Lease does not exist. Expected; not an error of configuration.
    #[error("the lease does not exist")]
    NotFound,
    /// 409 Conflict: someone else wrote first (stale resourceVersion). Re-read, never overwrite.
    #[error("conflict: the lease was modified by someone else")]
    Conflict,
    /// 409 AlreadyExists on create: someone else created it first. Re-read.
    #[error("the lease already exists")]
    AlreadyExists,
    /// 429, 5xx, a timeout, a transport error or an unreadable answer: retryable.
    #[error("{message}")]
    Unavailable {
        /// HTTP status, if an answer came at all.
        code: Option<u16>,
        /// What happened, for the log.
        message: String,
        /// The server's `Retry-After`, when it sent one (429).
        retry_after: Option<Duration>,
    },
    /// No answer within the call timeout (the request may still have been applied): retryable.
    #[error("no answer within {}", humantime::format_duration(*after))]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// 400/401/403/422 and other 4xx: the request or the configuration is wrong; retrying the
    /// same request will not help until someone fixes RBAC, credentials or the input.
    #[error("{message} (HTTP {code} {reason}){hint}")]
    Rejected {
        /// HTTP status.
        code: u16,
        /// The Status `reason`, e.g. `Forbidden`.
        reason: String,
        /// The Status `message`.
        message: String,
        /// How to fix it, prefixed with "; fix: ", or empty.
        hint: String,
    },
}

impl StoreError {
    /// Whether the same request may succeed if simply tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::TimedOut { .. }
        )
    }

    /// The delay the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StoreError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The `code` label for metrics: the HTTP status, or "error" when no answer came.
    pub fn code_label(&self) -> String {
        match self {
            StoreError::NotFound => "404".into(),
            StoreError::Conflict | StoreError::AlreadyExists => "409".into(),
            StoreError::Unavailable { code: Some(c), .. } => c.to_string(),
            StoreError::Rejected { code, .. } if *code > 0 => code.to_string(),
            StoreError::TimedOut { .. } => "timeout".into(),
            _ => "error".into(),
        }
    }

    /// Shorthand for an [`StoreError::Unavailable`] without status or Retry-After.
    pub fn unavailable(message: impl Into<String>) -> Self {
        StoreError::Unavailable {
            code: None,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// One change seen on the watch stream.
#[allow(clippy::large_enum_variant)] // a handful in flight at most
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    /// The Lease was created or modified (ADDED / MODIFIED).
    Put(StoredLease),
    /// The Lease was deleted.
    Deleted,
    /// The stream's resourceVersion is too old (410 Gone / Expired): list again and re-watch.
    Expired,
    /// A BOOKMARK: nothing changed, the stream is at this resourceVersion.
    Bookmark(String),
}

/// Access to one Lease. Every method is one API request (the watch: one long request).
/// Implementations do not retry and do not time out on their own: the elector wraps every
/// call in its own timeout.
pub trait LeaseStore: Clone + Send + Sync + 'static {
    /// Read the Lease. `Err(NotFound)` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<StoredLease, StoreError>> + Send;
    /// Create the Lease from a full object. `Err(AlreadyExists)` when it exists.
    fn create(&self, object: Value)
        -> impl Future<Output = Result<StoredLease, StoreError>> + Send;
    /// Replace the Lease (PUT) with `object`, whose `metadata.resourceVersion` is the
    /// precondition. `Err(Conflict)` when it is stale. The apiserver creates a missing Lease on
    /// update; the returned flag says whether that happened.
    fn replace(
        &self,
        object: Value,
    ) -> impl Future<Output = Result<(StoredLease, bool), StoreError>> + Send;
    /// Watch the Lease from `resource_version` (`None`: start with the current object as a
    /// `Put`). The stream ends when the server ends the watch; errors end it too.
    fn watch(
        &self,
        resource_version: Option<String>,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError>>
           + Send;
}
