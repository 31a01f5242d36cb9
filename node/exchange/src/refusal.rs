//! Why a delivered document is refused for good: the code and detail a `Reject` frame
//! carries. A leaf: the checks ([`crate::verify`]), the registry and the engine all produce it.

use kp_protocol::RejectCode;

/// A permanent refusal, sent back as `Reject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RejectCode,
    pub detail: String,
}

impl Refusal {
    pub fn new(code: RejectCode, detail: impl Into<String>) -> Refusal {
        Refusal { code, detail: detail.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.detail)
    }
}
