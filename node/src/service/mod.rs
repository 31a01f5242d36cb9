//! The node's operations on behalf of its operator, shared by the API and the offline command
//! line: console accounts ([`accounts`]), issuing certificates ([`issuing`]), the participant registry ([`participants`]), and
//! the age of the node's keys ([`keys`]).

pub mod accounts;
pub mod i18n;
pub mod issuing;
pub mod keys;
pub mod participants;

kp_protocol::problem_texts! {
    /// The problems the node's own services and the console's forms find (the certificate's
    /// are `kp_protocol::problem::ProblemText`, the registry's
    /// `kp_exchange::registry::RegistryText`): each a message id of the console's catalogues,
    /// `problem-<id>`.
    pub enum NodeText {
        AuthorityMismatch = "authority-mismatch" { given, authority, setting },
        UnionWithoutNode = "union-without-node" { importer },
        ReplacesOther = "replaces-other" { given, old },
        BeforePending = "before-pending" { code, pending, from },
        UnknownStatus = "unknown-status" { value },
        NameNeeded = "name-needed" { code },
        ReceivedInFuture = "received-in-future" { received, today },
        ReceivedBeforeIssue = "received-before-issue" { received, issued },
        ParcelsAtLeastOne = "parcels-at-least-one",
        FormTooManyFields = "form-too-many-fields" { count, max },
        FormNotAField = "form-not-a-field" { name },
        FormItemOutOfOrder = "form-item-out-of-order" { item, array },
        FormSentTwice = "form-sent-twice",
        FormValueAndGroup = "form-value-and-group",
        CertificateNotFound = "certificate-not-found" { number },
        CertificateWrongState = "certificate-wrong-state" { number, status },
        CertificateNumberTaken = "certificate-number-taken" { number },
        PeerNotEnrolled = "peer-not-enrolled" { code },
        PeerQuarantined = "peer-quarantined" { code },
        StoreFailed = "store-failed" { error },
        SigningUnavailable = "signing-unavailable" { detail },
        NodeUnavailable = "node-unavailable" { detail },
    }
}
