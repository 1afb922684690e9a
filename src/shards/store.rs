//! The group's lock interface: list and watch every Lease of the group (one label selector, so
//! one ordered stream), and get, create and replace one of them by name.
//! [`crate::kube_store::KubeGroupStore`] implements it over the Kubernetes API.

use std::future::Future;

use futures::stream::BoxStream;
use serde_json::Value;

use crate::election::{StoreError, StoredLease};

/// One change seen on the group's watch.
#[allow(clippy::large_enum_variant)] // a handful in flight at most
#[derive(Clone, Debug, PartialEq)]
pub enum GroupEvent {
    /// A Lease of the group was created or modified.
    Put(StoredLease),
    /// The Lease of this name was deleted.
    Deleted(String),
    /// The stream's resourceVersion is too old (410): list again.
    Expired,
    /// Nothing changed; the stream is at this resourceVersion.
    Bookmark(String),
}

/// Access to the Leases of one group. Every method is one API request; implementations
/// neither retry nor time out (the executor does).
pub trait GroupStore: Clone + Send + Sync + 'static {
    /// Every Lease of the group, and the list's resourceVersion to watch from.
    fn list(&self) -> impl Future<Output = Result<(Vec<StoredLease>, String), StoreError>> + Send;
    /// Every change after `resource_version`, in order.
    fn watch(
        &self,
        resource_version: String,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<GroupEvent, StoreError>>, StoreError>>
           + Send;
    /// Read one Lease.
    fn get(&self, name: &str) -> impl Future<Output = Result<StoredLease, StoreError>> + Send;
    /// Create one Lease from `object`.
    fn create(
        &self,
        name: &str,
        object: Value,
    ) -> impl Future<Output = Result<StoredLease, StoreError>> + Send;
    /// Replace one Lease; `object`'s resourceVersion is the precondition.
    fn replace(
        &self,
        name: &str,
        object: Value,
    ) -> impl Future<Output = Result<StoredLease, StoreError>> + Send;
}
