//! Why storing a transcript failed, in terms a person can act on. The apiserver's own error
//! (a `Status` dump naming the gateway's service account) is for the gateway's log; what the
//! browser, `status.message`, the audit row and the Event say comes from
//! [`StorageFailure`]. Pure.

use super::s3::SinkError;
use super::store::TranscriptError;

/// What the gateway's operators are pointed at when the gateway may not write Secrets.
const RBAC_DOC: &str = "docs/gateway.md, RBAC";
/// What they are pointed at when the S3 sink refuses.
const SINK_DOC: &str = "docs/transcripts-and-audit.md, S3 sink";

/// A transcript write failure, classified by what can be done about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageFailure {
    /// The apiserver refused the gateway's identity (403): it may not write Secrets in the
    /// transcript namespace. Every retry fails the same way until RBAC changes.
    Forbidden {
        /// The transcript namespace.
        namespace: String,
    },
    /// The transcript namespace does not exist (404 on an apply, which creates the Secret
    /// itself when only the Secret is missing).
    NamespaceMissing {
        /// The transcript namespace.
        namespace: String,
    },
    /// The apiserver is busy or unreachable (409, 408, 429, 5xx, timeouts, connection
    /// errors): trying again in a moment can work.
    Unavailable,
    /// Any other refusal, which a retry will not change; the details are in the gateway's log.
    Rejected {
        /// The HTTP status the apiserver answered with, when it answered.
        http_status: Option<u16>,
    },
    /// The policy's S3 sink (required) did not take an object: S3 refused it or could not
    /// be reached.
    Sink(SinkError),
}

impl StorageFailure {
    /// Classifies a failed write of transcript Secrets in `namespace`.
    pub fn classify(error: &TranscriptError, namespace: &str) -> Self {
        match error {
            TranscriptError::Kube(e) => Self::from_kube(e, namespace),
            TranscriptError::NoOwner(_) | TranscriptError::TaskLost => {
                Self::Rejected { http_status: None }
            }
            TranscriptError::Sink(e) => Self::from_sink(e),
        }
    }

    /// The S3 sink did not take an object.
    pub fn from_sink(error: &SinkError) -> Self {
        Self::Sink(error.clone())
    }

    fn from_kube(error: &kube::Error, namespace: &str) -> Self {
        match error {
            kube::Error::Api(status) => match status.code {
                403 => Self::Forbidden {
                    namespace: namespace.to_string(),
                },
                404 => Self::NamespaceMissing {
                    namespace: namespace.to_string(),
                },
                408 | 409 | 429 | 500..=599 => Self::Unavailable,
                code => Self::Rejected {
                    http_status: Some(code).filter(|c| *c != 0),
                },
            },
            // Connection errors and the client's timeouts.
            kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
                Self::Unavailable
            }
            _ => Self::Rejected { http_status: None },
        }
    }

    /// Whether trying again later can work.
    pub fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable)
    }

    /// What went wrong, as a clause: "the gateway may not write Secrets in namespace x".
    pub fn cause(&self) -> String {
        match self {
            Self::Forbidden { namespace } => {
                format!("the gateway may not write Secrets in namespace {namespace}")
            }
            Self::NamespaceMissing { namespace } => {
                format!("the transcript namespace {namespace} does not exist")
            }
            Self::Unavailable => "the transcript store (Kubernetes API) is unavailable".into(),
            Self::Rejected {
                http_status: Some(code),
            } => format!("the Kubernetes API refused to store the transcript (HTTP {code})"),
            Self::Rejected { http_status: None } => {
                "the gateway could not store the transcript".into()
            }
            Self::Sink(e) => e.to_string(),
        }
    }

    /// What to do about it, as a sentence.
    pub fn remedy(&self) -> String {
        match self {
            Self::Forbidden { .. } => format!(
                "Ask your platform team to grant the gateway's service account create/patch on secrets there (see {RBAC_DOC})."
            ),
            Self::NamespaceMissing { .. } => format!(
                "Ask your platform team to create it, or to set the gateway's transcript namespace (--namespace) to one that exists (see {RBAC_DOC})."
            ),
            Self::Unavailable => "Try again in a moment.".into(),
            Self::Rejected { .. } => {
                "Ask your platform team to check the gateway's log for this session.".into()
            }
            Self::Sink(e) => format!(
                "Ask your platform team to check that bucket {} exists with Object Lock enabled and that the gateway's role may s3:PutObject and s3:PutObjectRetention there (see {SINK_DOC}).",
                e.bucket
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(code: u16, message: &str) -> TranscriptError {
        TranscriptError::Kube(kube::Error::Api(
            Status::failure(message, "Forbidden")
                .with_code(code)
                .boxed(),
        ))
    }

    const DENIED: &str = r#"secrets "shell-1-transcript-0" is forbidden: User "system:serviceaccount:nodeshell-system:nodeshell-gateway" cannot patch resource "secrets" in API group "" in the namespace "default""#;

    #[test]
    fn a_403_is_a_permission_problem_that_retrying_does_not_fix() {
        let f = StorageFailure::classify(&api(403, DENIED), "default");
        assert_eq!(
            f,
            StorageFailure::Forbidden {
                namespace: "default".into()
            }
        );
        assert!(!f.retryable());
        assert_eq!(
            f.cause(),
            "the gateway may not write Secrets in namespace default"
        );
        assert!(
            f.remedy().contains("create/patch on secrets"),
            "{}",
            f.remedy()
        );
        assert!(
            f.remedy().contains("docs/gateway.md, RBAC"),
            "{}",
            f.remedy()
        );
    }

    #[test]
    fn a_404_says_the_namespace_is_missing() {
        let f = StorageFailure::classify(&api(404, r#"namespaces "gone" not found"#), "gone");
        assert!(!f.retryable());
        assert_eq!(f.cause(), "the transcript namespace gone does not exist");
        assert!(f.remedy().contains("create it"), "{}", f.remedy());
    }

    #[test]
    fn conflicts_throttling_server_errors_and_timeouts_are_worth_retrying() {
        for code in [408, 409, 429, 500, 503, 504] {
            let f = StorageFailure::classify(&api(code, "busy"), "ns");
            assert_eq!(f, StorageFailure::Unavailable, "HTTP {code}");
            assert!(f.retryable(), "HTTP {code}");
            assert_eq!(
                f.cause(),
                "the transcript store (Kubernetes API) is unavailable"
            );
            assert_eq!(f.remedy(), "Try again in a moment.");
        }
        let timeout = TranscriptError::Kube(kube::Error::Service(Box::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "deadline has elapsed",
        ))));
        assert_eq!(
            StorageFailure::classify(&timeout, "ns"),
            StorageFailure::Unavailable
        );
        let reset = TranscriptError::Kube(kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert_eq!(
            StorageFailure::classify(&reset, "ns"),
            StorageFailure::Unavailable
        );
    }

    #[test]
    fn other_refusals_are_final_and_point_at_the_log() {
        let f = StorageFailure::classify(&api(422, "Secret is invalid"), "ns");
        assert_eq!(
            f,
            StorageFailure::Rejected {
                http_status: Some(422)
            }
        );
        assert!(!f.retryable());
        assert!(f.cause().contains("HTTP 422"), "{}", f.cause());
        let f = StorageFailure::classify(&TranscriptError::NoOwner("s".into()), "ns");
        assert_eq!(f, StorageFailure::Rejected { http_status: None });
        assert!(f.remedy().contains("gateway's log"), "{}", f.remedy());
    }

    #[test]
    fn a_sink_refusal_names_the_bucket_s3s_error_and_the_permissions_to_check() {
        let e = SinkError {
            bucket: "acme-audit".into(),
            error: "AccessDenied: Access Denied".into(),
        };
        let f = StorageFailure::classify(&TranscriptError::Sink(e.clone()), "ns");
        assert_eq!(f, StorageFailure::from_sink(&e));
        assert!(!f.retryable());
        assert_eq!(
            f.cause(),
            "the S3 sink (bucket acme-audit) did not take the transcript: AccessDenied: Access Denied"
        );
        for what in [
            "acme-audit",
            "Object Lock",
            "s3:PutObject",
            "s3:PutObjectRetention",
            "docs/transcripts-and-audit.md, S3 sink",
        ] {
            assert!(f.remedy().contains(what), "{what}: {}", f.remedy());
        }
    }

    #[test]
    fn no_wording_carries_the_apiservers_text() {
        let every = [
            StorageFailure::classify(&api(403, DENIED), "default"),
            StorageFailure::classify(&api(404, DENIED), "default"),
            StorageFailure::classify(&api(503, DENIED), "default"),
            StorageFailure::classify(&api(400, DENIED), "default"),
        ];
        for f in every {
            let text = format!("{} {}", f.cause(), f.remedy());
            for leak in ["Status {", "code:", "serviceaccount", "nodeshell-gateway"] {
                assert!(!text.contains(leak), "{leak:?} in {text:?}");
            }
        }
    }
}
