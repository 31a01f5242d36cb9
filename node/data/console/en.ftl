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
status-replaced = replaced
list-late-arrival = (late arrival)

## A certificate
cert-title = Certificate { $number }
cert-status = Status:
cert-late-arrival = Late arrival: the shipment was received on { $received_on }, after the certificate expired on { $expires_on }; its receipt is confirmed all the same.
cert-replaced-by = Replaced: this certificate no longer stands, and statistics count its replacement, signed { $at }:
cert-exporter = Exporter
cert-importer = Importer
cert-issued-on = Issued on
cert-expires-on = Expires on
cert-value-usd = Value (USD)
cert-replaces = Replaces
cert-importing-member = Importing member state
cert-exporter-licence = Exporter's licence
cert-importer-licence = Importer's licence
cert-port-of-entry = Port of entry
cert-transport-mode = Transport mode
cert-transport-document = Transport document
cert-container-seals = Container seals
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
issue-importing-member = Importing member state (optional)
issue-importing-member-hint = Only when the importing participant is a union such as EU: the member state where the shipment is imported, e.g. BE. The certificate goes to that member state's node.
issue-party-licence = Licence (optional)
issue-party-licence-hint = The export or import licence, or the registration number with the authority.
issue-port-of-entry = Port of entry
issue-port-of-entry-hint = The UN/LOCODE of the port in the importing country, e.g. BEANR (Antwerp).
issue-transport-mode = Transport mode
issue-transport-mode-none = Not given
issue-transport-mode-unknown = { $mode } — not a transport mode
issue-transport-document = Transport document
issue-transport-document-hint = The air waybill, bill of lading or consignment note number.
issue-container-seals = Container seals
issue-container-seals-hint = The numbers of the seals on the container(s), one per line or separated by commas; at most 16.
issue-container-seal-problem = seal { $n }: { $problem }
transport-mode-air = Air
transport-mode-sea = Sea
transport-mode-road = Road
transport-mode-rail = Rail
transport-mode-post = Post
transport-mode-hand-carried = Hand-carried
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

## Verify
verify-title = Verify a certificate
verify-intro = Upload the signed certificate file (.kpc) or a photo or scan of its QR seal (JPEG or PNG, or the SVG kpnode cert qr writes). The signature is checked against the issuing authority's keys as this node trusts them, and this node says what it knows of the certificate now.
verify-file = Certificate file or QR seal image
verify-file-hint = At most { $megabytes } MB; an image of at most { $megapixels } megapixels.
verify-file-missing = Choose the .kpc file or the photo or scan of the QR seal to verify.
verify-file-image = The QR seal could not be read from the image: { $detail }.
verify-file-kpc = The .kpc file could not be read: { $detail }.
verify-file-unknown = This file is neither a signed certificate (.kpc) nor a JPEG, PNG or SVG image of a QR seal.
verify-submit = Verify
verify-busy = Too many images are being read at once; send the form again in a moment.
verify-image-task-failed = The image could not be read: { $error }
verify-authentic-seal = Authentic QR seal
verify-authentic-kpc = Authentic signed certificate
verify-signed-by = Certificate { $number } was signed by { $authority } ({ $issuer }) for { $importer }.
verify-signed-at = Signed at
verify-signing-key = Signing key
verify-fingerprint = Issuer's fingerprint
verify-valid = Valid
verify-valid-range = { $from } to { $to }
verify-compare = Compare these figures with the paperwork and the shipment: the seal proves them, the paper alone does not.
verify-expired = The certificate expired on { $date }.
verify-not-authentic = Not authentic
verify-names-seal = The QR seal names certificate { $number }, but it does not verify:
verify-names-file = The file names certificate { $number }, but it does not verify:
verify-not-enrolled = It is signed by { $code }, which is not a partner enrolled on this node, so its signature cannot be checked here. A supervisor enrols { $code } on the Partners page (with the bundle and the fingerprint its authority gives); or check it offline with kpnode verify and { $code }'s bundle.
verify-not-a-seal = The QR code is not a Kimberley Process seal: { $why }.
verify-do-not-accept = Do not accept the shipment on this document. Ask the issuing authority to confirm the certificate.
verify-on-this-node = On this node now
verify-cert-page = the certificate's page
verify-voided = This certificate was voided at { $at }: { $reason }. Its signature and seal still verify, but it no longer stands.
verify-different = This node holds a different signed certificate under this number: the uploaded one is not the certificate this node received.
verify-not-held = This node holds no certificate { $number }: it was not sent to this participant, or has not arrived yet.

## Partners
partners-title = Partners
partners-enrolled = Partner { $code } is enrolled; its link is being dialled.
partners-col-fingerprint = Fingerprint
partners-col-enrolled = Enrolled
partners-col-remove = Remove
partners-signing-key = signing key { $key }
partners-rotations = { $count ->
        [one] { $count } rotation
       *[other] { $count } rotations
    }
partners-removed = removed
partners-remove-confirm = I confirmed the removal of { $code } with its authority
partners-remove-unticked = Tick the box that confirms the removal, then press Remove again.
partners-remove = Remove { $code }
partners-enrol-title = Enrol a partner
partners-enrol-intro = Upload the bundle the partner's authority sent (kpnode peer export), and type the fingerprint they read out to you over the telephone. A bundle whose fingerprint differs is refused.
partners-bundle = Bundle file
partners-bundle-missing = Choose the partner's bundle file (kpnode peer export).
partners-bundle-not-text = This file is not a bundle: it is not text.
partners-fingerprint = Fingerprint, as read out by the partner
partners-fingerprint-missing = Type the fingerprint the partner's authority read out to you (not the one in the file).
partners-replace-identity = The partner replaced its identity (new keys), and confirmed it by telephone
partners-enrol-submit = Enrol

## Participants
participants-title = Participants
participants-intro = The Kimberley Process participants this node knows, with the standing in force today. Open a participant to see its history.
participants-intro-set = The Kimberley Process participants this node knows, with the standing in force today. Open a participant to see its history and to change its status.
participants-col-code = Code
participants-col-name = Name
participants-col-since = Since
participants-col-reason = Reason
participants-col-detail = Origin areas or members
participants-col-pending = Changes pending
participant-status-active = active
participant-status-suspended = suspended
participant-status-restricted = restricted
participant-title = Participant { $code }
participant-bad-code = { $code } is not a participant code: { $error }
participant-unknown = { $code } is not in this node's participant registry.
participant-member-of = { $code } is a member state of
participant-member-of-end = , which participates on its behalf.
participant-in-force-since = In force since
participant-history = History
participant-no-history = No change was recorded on this node: its standing is the one the node was shipped with.
participant-col-recorded = Recorded
participant-col-from = From
participant-col-decided-by = Decided by
participant-col-log-entry = Log entry
participant-from-list = the signed list of { $source }
participant-from-operator = this node's operator
participant-set-title = Change the status
participant-in-force-from = In force from
participant-reason = Reason (the decision it follows)
participant-set-hint = The change is signed by this node and written to its log. A suspended participant's certificates are refused and messages for it are held.
participant-set-submit = Record the change

## Dashboard: counts by status
dashboard-by-status = By status
dashboard-counted-at = Counted at { $at }.
dashboard-counting = The certificates are being counted; reload the page in a moment.

## Statistics
statistics-title = Statistics
statistics-period = Period
statistics-period-hint = A quarter (2026-Q3), a half-year (2026-H1), a month (2026-07), a year (2026) or a range (2026-07-01..2026-09-30).
statistics-period-invalid = "{ $value }" is not a period: { $why }
statistics-basis = Imports counted by
statistics-basis-issued = date of issue
statistics-basis-imported = date of import (confirmed only)
statistics-chart = Chart
statistics-usd = US dollars
statistics-carats = carats
statistics-busy = The statistics of other periods are being computed; try again in a moment.
statistics-still-computing = The statistics are still being computed; try again in a moment.
statistics-pending = The figures of { $period } are being computed (they read every certificate of the period).
statistics-show-them = Show them in a moment
statistics-computed-at = Computed at { $at }.
statistics-stale = Newer figures are being computed.
statistics-csv = Download as CSV
statistics-voided-excluded = { $count ->
        [one] { $count } voided certificate is left out.
       *[other] { $count } voided certificates are left out.
    }
statistics-unconfirmed-imports = { $count ->
        [one] { $count } import valid in the period is not confirmed on this node yet, so it has no date of import and is left out.
       *[other] { $count } imports valid in the period are not confirmed on this node yet, so they have no date of import and are left out.
    }
statistics-totals = Totals
statistics-none = No certificate in this period.
statistics-col-flow = Flow
statistics-col-hs = HS code
statistics-flow-export = export
statistics-flow-import = import
statistics-by-month = By month and partner
statistics-chart-alt-usd = Chart of exports and imports per partner per month in { $period }, in US dollars; the same figures are in the table below.
statistics-chart-alt-carats = Chart of exports and imports per partner per month in { $period }, in carats; the same figures are in the table below.
statistics-by-partner = By partner and HS code
statistics-reconciliation = Reconciliation with partners
statistics-no-exchange = No certificate was exchanged with a partner in this period.
statistics-col-sent = Sent
statistics-col-confirmed = Confirmed by the partner
statistics-col-awaiting = Awaiting confirmation
statistics-col-received = Received
statistics-col-resolved = Discrepancies resolved
statistics-col-late = Late arrivals
statistics-att-discrepancy = the confirmation differs from the certificate
statistics-att-unconfirmed = not confirmed by the partner, expired on { $date }
statistics-att-not-confirmed-here = not confirmed here yet (expires on { $date })

## Uploads and QR seals
upload-unreadable = The form could not be read ({ $why }). Reload the page and send it again.
qr-bad-number = { $number } is not a certificate number: { $error }
qr-no-certificate = There is no certificate { $number } on this node.

## Problems with a certificate, a confirmation or a participant change, shown at their fields
## (the same problems the API reports in English; `problem-<id>` with the same arguments).
problem-not-json = The document is not valid JSON: { $detail }
problem-not-utf8 = The document is not valid UTF-8 text: { $detail }
problem-unknown-field = unknown field; the fields here are { $known }
problem-not-object = must be an object, not { $kind }
problem-not-string = must be a string, not { $kind }
problem-not-amount-string = must be a string (amounts are decimal strings such as "1520.35"), not { $kind }
problem-not-array = must be an array, not { $kind }
problem-required = is required
problem-internal = the certificate could not be read (internal inconsistency; please report)
problem-number-prefix = { $number } must start with the exporting participant's code { $exporting } (KPCS Annex I)
problem-number-not-in-own-range = { $number } is not in { $issuer }'s range: a member state's node issues { $union } certificates numbered { $own }… only, so that numbers stay unique across the union's nodes
problem-number-in-member-range = { $number } is in { $member }'s range: { $exporting } certificates numbered { $exporting }-{ $member }-… are issued by the node of { $member }, a member state of { $exporting }, only; give a number outside every member's range (a number assigned by this node, { $exporting }-<year>-<sequence>, is)
problem-exporting-not-allowed = is { $exporting }, but this certificate can only be issued in the name of { $allowed }
problem-exporting-not-allowed-union = is { $exporting }, but this certificate can only be issued in the name of { $issuer } (or { $union }, the union it belongs to)
problem-exporting-member-state = { $exporting } is a member state of { $union }, which is the Kimberley Process participant: certificates are issued in its name (exporting participant { $union })
problem-importing-same = is { $importing }, the same as the exporting participant; they must differ
problem-importing-within-union = { $from } and { $importing } are both within { $within }: trade inside a union needs no Kimberley Process certificate (only its external borders are controlled)
problem-importing-not-delivered = is { $importing }, but this certificate was delivered to { $expected }
problem-importing-member-state = { $importing } is a member state of { $union }, which is the Kimberley Process participant: name { $union } as the importing participant
problem-not-a-participant = { $code } is not a Kimberley Process participant known to this node; trade with non-participants is forbidden (KPCS Section III(c))
problem-parcels-none = at least one parcel is required
problem-parcels-too-many = has { $count } parcels; a certificate holds at most { $max }
problem-declarations-too-many = has { $count } declarations; at most { $max } are allowed
problem-issued-in-future = { $issued } lies in the future (today is { $today })
problem-expires-not-after-issue = { $expires } must be after the date of issue ({ $issued })
problem-validity-too-long = { $expires } is { $days } days after the date of issue; at most { $max } days are allowed (max_validity_days)
problem-expires-passed = { $expires } has already passed (today is { $today })
problem-value-empty = "{ $value }" must not be empty
problem-value-too-long = "{ $value }" is { $len } characters long; at most { $max } are allowed
problem-value-too-short = "{ $value }" is { $len } characters long; at least { $min } are required
problem-value-control-character = "{ $value }" contains a control character at character { $position }; remove it
problem-value-too-many-decimals = "{ $value }" has more than two decimals; amounts are kept in hundredths
problem-value-not-positive = "{ $value }" must be greater than zero
problem-value-too-large = "{ $value }" is too large; the maximum is { $max }
problem-value-synthetic = "{ $value }" is HS heading 7104 (synthetic or reconstructed stones): synthetic diamonds are outside the Kimberley Process and need no KP certificate
problem-value-unknown-hs-code = "{ $value }" is not a rough-diamond HS code of the Kimberley Process; use 7102.10 (unsorted), 7102.21 (industrial) or 7102.31 (non-industrial)
problem-value-no-such-date = "{ $value }" is not a date that exists in the calendar
problem-value-not-amount = "{ $value }" must be a decimal number with at most two decimals, such as "1520.35"
problem-value-not-hex = "{ $value }" must be hexadecimal digits of the right length
problem-value-not-slug = "{ $value }" must be letters, digits, '-', '_' and '.' only, such as WDC-SoW
problem-value-not-participant-code = "{ $value }" must be a two-letter participant code in capitals, such as RU or IN
problem-value-not-number-characters = "{ $value }" must be made of capital letters A-Z, digits 0-9 and '-' only
problem-value-not-origin = "{ $value }" must be a participant code such as RU, or MIXED for parcels of mixed origin
problem-value-date-out-of-range = "{ $value }" must be a date between 1970-01-01 and 9999-12-31
problem-value-not-date = "{ $value }" must be a date written YYYY-MM-DD, such as 2026-11-28
problem-value-not-instant = "{ $value }" must be an instant written YYYY-MM-DDTHH:MM:SS.mmmZ, in UTC
problem-value-not-locode = "{ $value }" must be a UN/LOCODE: the country's two capital letters, then three capital letters or digits 2-9, such as BEANR (Antwerp)
problem-value-not-transport-mode = "{ $value }" must be one of air, sea, road, rail, post, hand-carried
problem-container-seals-too-many = has { $count } container seals; at most { $max } are allowed
problem-replaces-itself = { $number } cannot replace itself: name the certificate this one replaces
problem-importing-member-not-union = names member state { $member }, but { $importing } is not a union: give importing_member only when the importing participant is a union such as EU
problem-importing-member-not-member = { $member } is not a member state of { $importing }
problem-restricted-needs-areas = { $code }: a restricted participant needs its approved origin areas (the rule its certificates must satisfy)
problem-areas-only-when-restricted = { $code }: approved origin areas only apply to a restricted participant, and { $code } is { $status }
problem-too-many-areas = { $code }: at most { $max } approved origin areas
problem-too-many-members = { $code }: at most { $max } member states
problem-own-member = { $code }: a union cannot be its own member
problem-member-twice = { $code }: member { $member } is listed twice
problem-importing-suspended = { $code } is suspended from the Kimberley Process since { $since }{ $reason }; no certificate may be issued to it until it is reinstated
problem-exporting-suspended = { $code } is suspended from the Kimberley Process since { $since }{ $reason }; partners refuse its certificates
problem-restricted-no-area = names no origin area; { $code } is restricted since { $since }{ $reason }: its certificates are accepted only for diamonds from the approved origin areas ({ $areas })
problem-restricted-area-not-approved = "{ $area }" is not approved; { $code } is restricted since { $since }{ $reason }: its certificates are accepted only for diamonds from the approved origin areas ({ $areas })
problem-restricted-mixed = a mixed parcel cannot show it comes from one approved area; { $code } is restricted since { $since }{ $reason }: its certificates are accepted only for diamonds from the approved origin areas ({ $areas })
problem-member-state-no-status = { $code } is a member state of { $union }; it has no status of its own (change { $union } instead)
problem-member-is-union = { $member } is a union itself, so it cannot be a member state of { $code }
problem-member-not-active = { $member } is { $status }; a participant joins { $code } only in good standing (make it active first)
problem-member-of-another = { $member } is already a member state of { $other }
problem-authority-mismatch = is "{ $given }", but this node signs for "{ $authority }" (authority in node.toml); correct the certificate, or set certificates.authority_mismatch in node.toml (now "{ $setting }")
problem-union-without-node = { $importer } is a union of member states, and no node of { $importer }'s own is enrolled here: name the member state where the shipment is imported (importing_member, such as "BE"), whose node receives and confirms it
problem-replaces-other = is { $given }, but this is the replacement of { $old }: leave replaces out or give { $old }
problem-before-pending = { $code } has a change recorded to take effect on { $pending }; a change from { $from } would replace it (it is recorded later): give an effective date of { $pending } or later, and the change builds on it
problem-unknown-status = "{ $value }" is not a status: active, suspended or restricted
problem-name-needed = { $code } is not in the registry yet: give its name to add it
problem-received-in-future = { $received } lies in the future (today is { $today })
problem-received-before-issue = { $received } is before the certificate was issued ({ $issued })
problem-parcels-at-least-one = must be at least 1
problem-form-too-many-fields = the form sent { $count } fields, more than the { $max } the largest certificate form has; reload the page
problem-form-not-a-field = the form sent a field "{ $name }" that is not a certificate field; reload the page
problem-form-item-out-of-order = comes before item { $item } of { $array } was sent; reload the page
problem-form-sent-twice = is sent twice
problem-form-value-and-group = is sent both as a value and as a group of fields
problem-certificate-not-found = there is no certificate { $number } on this node
problem-certificate-wrong-state = certificate { $number } is { $status }: this cannot be done to it now
problem-certificate-number-taken = certificate { $number } already exists with different content; give the new certificate another number
problem-peer-not-enrolled = { $code } is not an enrolled peer
problem-peer-quarantined = the record of { $code } cannot be loaded (the peer is quarantined); enrol a current bundle to replace it
problem-store-failed = the store has failed ({ $error }) and cannot answer this until it is reopened; fix what the error names: kpnode run reopens its store by itself once a test write succeeds
problem-signing-unavailable = this node cannot sign now: { $detail }. Nothing was done; try again once the key is available
problem-node-unavailable = the node cannot do this now: { $detail }. Try again later
problem-enrol-bundle-invalid = the bundle is not valid: { $detail }
problem-enrol-fingerprint-unreadable = { $detail }
problem-enrol-fingerprint-mismatch = fingerprint mismatch: the bundle's fingerprint is { $actual }, but you were given { $given }. Do not enrol it; ask { $participant }'s operator to read theirs again from `kpnode peer export`
problem-enrol-own-bundle = the bundle is this node's own ({ $participant }); enrol the partner's bundle instead
problem-enrol-endpoint-not-host-port = endpoint "{ $endpoint }" is not host:port
problem-enrol-bundle-older = the bundle is older than what this node holds for { $participant }: it has { $given } key rotation(s), this node holds { $held }. Enrolling it would roll { $participant }'s keys back; ask its operator for a current bundle (`kpnode peer export`)
problem-enrol-history-diverges = the bundle's key rotation { $sequence } differs from the one this node holds for { $participant }: the two histories fork. Do not enrol it; ask { $participant }'s operator what happened to their keys
problem-enrol-identity-change = { $participant } is enrolled with fingerprint { $held }, and this bundle has fingerprint { $given }: a new identity. If { $participant }'s operator confirmed by phone that they replaced their keys, enrol it again with the box "The partner replaced its identity" ticked; the old identity is archived so entries signed under it still verify
problem-enrol-tls-key-unproven = the bundle's key rotation { $sequence } brings a new TLS key without proof that { $participant } holds it: { $participant }'s node must run a kpnode version that proves possession
problem-enrol-tls-key-taken = the bundle claims a TLS key that is already bound to { $owner }: a TLS key belongs to one participant. Do not enrol it
problem-enrol-rotation-disowns = the bundle's key rotation { $sequence } retires { $participant }'s key { $key_id } at { $effective_from }, but this node holds a document { $participant } signed with that key at { $last_signed }: the rotation would disown what was already received. Do not enrol it; ask { $participant }'s operator what happened to their keys
