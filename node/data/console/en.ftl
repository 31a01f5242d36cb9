# The console's messages in English. Every .ftl file in this folder is one language, named by
# its code (en.ftl, ru.ftl): to add a language, copy this file to <code>.ftl and translate
# every message (keep the { $placeholders }); a test requires each file to have exactly the
# messages the templates and the console's code use. Status and role names in English are the
# codes the API and the CLI use.

## How this language writes dates and numbers (pieces put together by node/src/service/i18n.rs).
language-name = English
format-date = { $year }-{ $month }-{ $day }
format-datetime = { $date }T{ $hour }:{ $minute }:{ $second }.{ $millis }Z
format-group-separator = { "" }
format-decimal-separator = .

## Every page
app-name = kpnode console
skip-to-content = Skip to content
nav-label = Main
nav-dashboard = Dashboard
nav-certificates = Certificates
nav-issue = Issue a certificate
nav-verify = Verify
nav-partners = Partners
nav-participants = Participants
nav-statistics = Statistics
nav-password = Password
sign-out = Sign out
role-clerk = clerk
role-supervisor = supervisor
role-customs = customs
role-auditor = auditor

## Errors
error-title = Error
error-title-400 = Bad Request
error-title-403 = Forbidden
error-title-404 = Not Found
error-title-409 = Conflict
error-title-413 = Payload Too Large
error-title-422 = Unprocessable Entity
error-title-429 = Too Many Requests
error-title-500 = Internal Server Error
error-title-503 = Service Unavailable
error-back = Back to the dashboard
error-csrf = This form was not sent from this console session (its security token is missing or old). Reload the page and send the form again.
forbidden-void = Your role ({ $role }) may not void certificates. Ask a supervisor.
forbidden-confirm = Your role ({ $role }) may not confirm imports. Ask a supervisor.
forbidden-issue = Your role ({ $role }) may not issue certificates. Ask a supervisor.
forbidden-verify = Your role ({ $role }) may not verify certificates. Ask a supervisor.
forbidden-partners-see = Your role ({ $role }) may not see the partners. Ask a supervisor.
forbidden-partners-enrol = Your role ({ $role }) may not enrol partners. Ask a supervisor.
forbidden-partners-remove = Your role ({ $role }) may not remove partners. Ask a supervisor.
forbidden-participant-status = Your role ({ $role }) may not set a participant's status. Ask a supervisor.
forbidden-statistics-see = Your role ({ $role }) may not see the statistics. Ask a supervisor.
forbidden-statistics-download = Your role ({ $role }) may not download the statistics. Ask a supervisor.

## Signing in
login-title = Sign in
login-name = Name
login-password = Password
login-submit = Sign in
login-csrf = This sign-in form is too old or was not sent from this console. Open the sign-in page again.
login-busy = Too many sign-ins at once, try again in a moment.
login-wrong = The name or the password is wrong.
login-too-many-sessions = Too many people are signed in to this node; try again later.
login-locked-account = Too many wrong passwords: signing in as this user from this address is locked for { $count ->
        [one] { $count } more minute
       *[other] { $count } more minutes
    }. The node's operator can lift the lock at once (kpnode users unlock NAME).
login-locked-address = Too many wrong passwords from this address: signing in from it is locked for { $count ->
        [one] { $count } more minute
       *[other] { $count } more minutes
    }.
login-slowed = Many wrong passwords were tried for this user from other addresses, so from a new address one attempt is allowed at a time: try again in { $count ->
        [one] { $count } second
       *[other] { $count } seconds
    }, or sign in from an address you used before.

## Password and language
password-title = Change password
password-done = Your password is changed. Other sessions of yours have ended.
password-must-change = You signed in with a one-time password: choose your own before going on.
password-current = Current password
password-new = New password
password-new-hint = At least 12 characters; a few words are easiest.
password-repeat = New password again
password-submit = Change password
password-differ = The two new passwords differ.
password-current-wrong = The current password is wrong.
password-too-short = Use at least { $count } characters (a passphrase of a few words is easiest).
password-too-long = Use at most { $count } bytes.
password-unchanged = The new password must differ from the current one.
language-title = Language
language-label = The console's language
language-unknown = The console does not speak "{ $code }"; choose one of { $codes }.
language-submit = Use this language

## Dashboard
dashboard-title = Dashboard
dashboard-fingerprint = Signing key fingerprint:
dashboard-certificates = Certificates
dashboard-issued-here = Issued here
dashboard-received = Received
dashboard-vigilance = Received under enhanced vigilance
dashboard-log-entries = Log entries
dashboard-attention = Needs attention
dashboard-nothing = Nothing needs attention.
dashboard-links = Partners' links
dashboard-no-partner = No partner is enrolled yet.
col-partner = Partner
col-authority = Authority
col-link = Link
col-last-delivery = Last delivery
col-queued = Queued
col-last-error = Last error
col-issued = Issued
col-parcels = Parcels
col-carats = Carats
link-up = up
link-down = down

## Certificates
list-title = Certificates
list-number = Number
list-direction = Direction
list-status = Status
list-partner = Partner
list-issued-from = Issued from
list-issued-to = Issued to
certificates-date-invalid = "{ $value }" is not a day: write it as YYYY-MM-DD, such as 2026-12-07
certificates-date-order = This day is before "Issued from" ({ $from }): the range would be empty
list-any = any
list-show = Show
list-none = No certificate matches.
list-searched-to = Searched up to certificate { $number }.
list-search-further = Search further
list-next = Next page
direction-out = issued here
direction-in = received
direction-local = local
status-queued = queued
status-delivered = delivered
status-rejected = rejected
status-import_confirmed = import_confirmed
status-import_discrepancy = import_discrepancy
status-voided = voided
status-received = received
status-expired = expired

## A certificate
cert-title = Certificate { $number }
cert-status = Status:
cert-exporter = Exporter
cert-importer = Importer
cert-issued-on = Issued on
cert-expires-on = Expires on
cert-value-usd = Value (USD)
cert-timeline = Timeline
cert-actions = Actions
cert-download = Download the signed certificate (.kpc)
cert-qr-alt = QR seal of certificate { $number }, signed by this node
cert-qr-caption = The QR seal for the shipment's paperwork: a border post checks it with its console's Verify page or
cert-qr-png = Download it as PNG
timeline-exporting-authority = the exporting authority
timeline-issued = Issued and signed by { $issuer }
timeline-delivered-receipt = Delivered: { $receiver }'s node stored it at entry { $entry } of its log (its signed receipt)
timeline-received = Received by this node
timeline-delivered = Delivered
timeline-refused = Refused by the importer's node: { $detail }
timeline-confirmed = Import confirmed: { $parcels ->
        [one] { $parcels } parcel
       *[other] { $parcels } parcels
    }, { $carats } carats received on { $received_on }
timeline-confirmed-discrepancy = Import confirmed with a discrepancy: { $difference } (received { $parcels ->
        [one] { $parcels } parcel
       *[other] { $parcels } parcels
    }, { $carats } carats on { $received_on })
timeline-resolved = Discrepancy resolved by { $by } ({ $participant }): { $note }
timeline-voided = Voided: { $reason }
timeline-officer = { $step } — officer: { $officer }
void-reason = Reason for voiding
void-submit = Void this certificate
void-reason-missing = Say why the certificate is voided; the importer sees the reason.
confirm-legend = Confirm the import: what arrived
confirm-received-on = Received on
confirm-parcels = Parcels received
confirm-carats = Carats received
confirm-remarks = Remarks (optional)
confirm-hint = If parcels or carats differ from the certificate, the confirmation records the discrepancy and the exporter sees it.
confirm-submit = Confirm the import
confirm-parcels-invalid = "{ $value }" is not a whole number of parcels

## Issuing a certificate
issue-title = Issue a certificate
issue-intro = Each field is the certificate JSON's field of the same name (docs/certificate-json.md); the node checks it by the same rules as kpnode cert validate and the API.
issue-problems = The certificate was not issued: { $count ->
        [one] { $count } problem
       *[other] { $count } problems
    }
issue-submit = Issue the certificate
issue-choose = Choose…
issue-section-certificate = Certificate
issue-number = Number (optional)
issue-number-hint = Leave empty: the node numbers the certificate.
issue-exporting-participant = Exporting participant
issue-exporting-participant-hint = This node's participant code (or its union's).
issue-importing-participant = Importing participant
issue-issuing-authority = Issuing authority
issue-issued-on = Issued on
issue-expires-on = Expires on
issue-section-exporter = Exporter
issue-section-importer = Importer
issue-party-name = Name
issue-party-address = Address
issue-section-parcel = Parcel { $n }
issue-hs-code = HS code
issue-hs-7102-10 = 7102.10 unsorted
issue-hs-7102-21 = 7102.21 industrial
issue-hs-7102-31 = 7102.31 non-industrial (gem)
issue-carats = Carats
issue-carats-hint = A decimal, at most two decimals: 1520.35
issue-value-usd = Value (US$)
issue-value-usd-hint = A decimal, at most two decimals: 4231000.00
issue-origin = Origin
issue-origin-hint = Participant code of the country of origin, or MIXED.
issue-origin-area = Origin area (optional)
issue-origin-area-hint = Required for a restricted participant's exports.
issue-add-parcel = Add parcel
issue-remove-parcel = Remove parcel { $n }
issue-section-shipment = Shipment (optional)
issue-port-of-export = Port of export
issue-customs-reference = Customs reference
issue-add-declaration = Add declaration
issue-section-declaration = Declaration { $n }
issue-declaration-code = Code
issue-declaration-code-hint = E.g. WDC-SoW.
issue-declaration-text = Text
issue-remove-declaration = Remove declaration { $n }
issue-section-remarks = Remarks (optional)
issue-remarks = Remarks
issue-participant-suspended = { $code } — { $name } — suspended: certificates are refused
issue-participant-restricted = { $code } — { $name } — restricted: only within its restriction
issue-participant-unknown = { $code } — not in the registry
