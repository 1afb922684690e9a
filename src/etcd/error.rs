//! What an etcd call can fail with, and whether trying again may help.

use std::time::Duration;

/// An etcd call that did not succeed.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum EtcdError {
    /// No answer within the call timeout (the request may still have been applied): retryable.
    #[error("no answer within {}", humantime::format_duration(*after))]
    TimedOut {
        /// The timeout.
        after: Duration,
    },
    /// The lease named in the request no longer exists (it expired or was revoked). Expected;
    /// the candidate starts over with a new lease. Not retryable as such.
    #[error("the etcd lease does not exist (expired or revoked)")]
    LeaseNotFound,
    /// No leader, no quorum, a transport error or an unreadable answer: retryable.
    #[error("{code}: {message}")]
    Unavailable {
        /// The gRPC status name (`Unavailable`, `DeadlineExceeded`, ...) or `transport`.
        code: String,
        /// What happened, for the log.
        message: String,
    },
    /// Permission denied, bad credentials or a bad request: retrying will not help until
    /// someone fixes the etcd role, the TLS files or the flags.
    #[error("{code}: {message}; fix: grant the etcd user readwrite on the election's key prefix (see README, 'Outside Kubernetes: etcd') and check --etcd-cert-file/--etcd-key-file")]
    Rejected {
        /// The gRPC status name.
        code: String,
        /// etcd's message.
        message: String,
    },
}

impl EtcdError {
    /// Whether the same request may succeed if simply tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            EtcdError::TimedOut { .. } | EtcdError::Unavailable { .. }
        )
    }

    /// The `code` label for metrics.
    pub fn code_label(&self) -> &str {
        match self {
            EtcdError::TimedOut { .. } => "timeout",
            EtcdError::LeaseNotFound => "NotFound",
            EtcdError::Unavailable { code, .. } | EtcdError::Rejected { code, .. } => code,
        }
    }

    /// From etcd-client's error.
    pub fn from_client(e: etcd_client::Error) -> Self {
        use tonic::Code;
        match e {
            etcd_client::Error::GRpcStatus(s) => {
                let code = format!("{:?}", s.code());
                let message = s.message().to_owned();
                match s.code() {
                    Code::NotFound if message.contains("lease not found") => {
                        EtcdError::LeaseNotFound
                    }
                    Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::OutOfRange
                    | Code::Unimplemented => EtcdError::Rejected { code, message },
                    _ => EtcdError::Unavailable { code, message },
                }
            }
            // etcd-client's own check of the first keep-alive answer (TTL <= 0).
            etcd_client::Error::LeaseKeepAliveError(m) if m.contains("lease not found") => {
                EtcdError::LeaseNotFound
            }
            other => EtcdError::Unavailable {
                code: "transport".to_owned(),
                message: other.to_string(),
            },
        }
    }
}
