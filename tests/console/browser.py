"""The console in a real browser: headless Chromium driven by Playwright for Python.

Run by tests/tests/console_browser.rs against two running nodes; reads its scenario from the
JSON file named on the command line, writes screenshots into its "out" folder, checks every
page with axe-core (injected from "axe"), and prints one JSON object with what it found:
{"pages": [...], "violations": [...], "steps": [...]}. Any failed expectation raises, so the
process exits non-zero and the Rust test shows the traceback.
"""
import base64
import json
import subprocess
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

cfg = json.loads(Path(sys.argv[1]).read_text())
out = Path(cfg["out"])
out.mkdir(parents=True, exist_ok=True)
axe_source = Path(cfg["axe"]).read_text()
report = {"pages": [], "violations": [], "steps": []}


def check(page, name):
    """A screenshot, then axe-core: serious and critical violations are collected."""
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)
    page.add_script_tag(content=axe_source)
    result = page.evaluate("async () => await axe.run(document)")
    for v in result["violations"]:
        if v["impact"] in ("serious", "critical"):
            report["violations"].append(
                {"page": name, "id": v["id"], "impact": v["impact"], "help": v["help"],
                 "nodes": [n["target"] for n in v["nodes"]][:5]})
    report["pages"].append(name)


def expect(cond, what):
    if not cond:
        raise AssertionError(what)
    report["steps"].append(what)


def sign_in(page, base, name, password):
    page.goto(base + "/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    with page.expect_navigation():
        page.keyboard.press("Enter")  # keyboard-usable: Enter sends the form


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path=cfg["chromium"],
        args=["--no-sandbox", "--disable-background-networking", "--disable-gpu",
              "--disable-dev-shm-usage", "--no-first-run", "--disable-sync",
              "--disable-component-update", "--disable-default-apps"])
    ru, inn = cfg["ru"], cfg["in"]

    # The clerk at the exporting node.
    # bypass_csp: the console's CSP rightly refuses inline scripts, axe-core's included.
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True)
    page = ctx.new_page()
    page.goto(ru + "/login")
    check(page, "login")
    sign_in(page, ru, "clara", "wrong password here")
    expect(page.locator("#login-error").is_visible(), "a wrong password is shown at the field")
    check(page, "login-error")
    sign_in(page, ru, "clara", cfg["password"])
    expect(page.url.rstrip("/") == ru, "the clerk lands on the dashboard")
    check(page, "dashboard")

    # The clerk issues a certificate through the form: every input named by its JSON path.
    with page.expect_navigation():
        page.get_by_role("link", name="Issue a certificate").click()
    zw = page.locator('select[name="importing_participant"] option[value="ZW"]').inner_text()
    expect("suspended" in zw, "the participant picker marks a suspended participant")
    page.get_by_label("Importing participant").select_option("IN")
    page.get_by_label("Expires on").fill(cfg["expires_on"])
    page.locator('[name="exporter.name"]').fill("ALROSA PJSC")
    page.locator('[name="exporter.address"]').fill("6 Lenina St, Mirny, 678174, Russia")
    page.locator('[name="importer.name"]').fill("Kiran Gems Pvt Ltd")
    page.locator('[name="importer.address"]').fill("Bharat Diamond Bourse, Mumbai 400051, India")
    page.locator('[name="parcels[0].hs_code"]').select_option("7102.31")
    page.locator('[name="parcels[0].carats"]').fill("1520.355")  # the mistake: three decimals
    page.locator('[name="parcels[0].value_usd"]').fill("4231000.00")
    page.locator('[name="parcels[0].origin"]').fill("RU")
    # Format 2's inputs, found by their labels as a screen reader finds them.
    page.get_by_label("Port of entry").fill("INBOM")
    page.get_by_label("Transport mode").select_option("air")
    page.get_by_label("Container seals").fill("SEAL-0045117\nSEAL-0045118")
    check(page, "issue")
    # Parcels are added and removed by the form's own buttons (no script on the page).
    with page.expect_navigation():
        page.get_by_role("button", name="Add parcel").click()
    expect(page.locator('[name="parcels[0].carats"]').input_value() == "1520.355", "adding a parcel keeps what was typed")
    with page.expect_navigation():
        page.get_by_role("button", name="Add parcel").click()
    expect(page.locator('[name="parcels[2].carats"]').count() == 1, "a parcel is added without JavaScript")
    with page.expect_navigation():
        page.get_by_role("button", name="Remove parcel 3").click()
    expect(page.locator('[name="parcels[2].carats"]').count() == 0, "and removed")
    page.locator('[name="parcels[1].hs_code"]').select_option("7102.21")
    page.locator('[name="parcels[1].carats"]').fill("310.00")
    page.locator('[name="parcels[1].value_usd"]').fill("15500.00")
    page.locator('[name="parcels[1].origin"]').fill("MIXED")
    with page.expect_navigation():
        page.get_by_role("button", name="Issue the certificate").first.click()
    carats_input = page.locator('[name="parcels[0].carats"]')
    expect(page.locator("#f-parcels-0--carats-error").is_visible(), "the mistake is shown at its field")
    expect("f-parcels-0--carats-error" in (carats_input.get_attribute("aria-describedby") or ""),
           "the error is linked to its input with aria-describedby")
    expect(carats_input.get_attribute("aria-invalid") == "true", "the input is marked invalid")
    expect(page.locator("#f-parcels-1--carats-error").count() == 0, "and only that field")
    check(page, "issue-error")
    # The server refuses a suspended importer, whatever the page offers.
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    fields = {name: page.locator(f'[name="{name}"]').input_value() for name in (
        "exporting_participant", "issuing_authority", "issued_on", "expires_on", "exporter.name",
        "exporter.address", "importer.name", "importer.address", "parcels[1].hs_code",
        "parcels[1].carats", "parcels[1].value_usd", "parcels[1].origin")}
    fields = {k.replace("parcels[1]", "parcels[0]"): v for k, v in fields.items()}
    r = page.request.post(ru + "/certificates/new", max_redirects=0,
                          form={**fields, "csrf": csrf, "importing_participant": "ZW", "action": "issue"})
    expect(r.status == 422 and "f-importing_participant-error" in r.text() and "suspended" in r.text(),
           "a suspended importer is refused at its field")
    # The form's own idempotency key: the same form sent twice (a double click) issues once.
    twice = {**fields, "csrf": csrf, "importing_participant": "IN", "action": "issue", "form_id": "ab" * 32}
    first = page.request.post(ru + "/certificates/new", max_redirects=0, form=twice)
    second = page.request.post(ru + "/certificates/new", max_redirects=0, form=twice)
    expect(first.status == 303 and first.headers["location"] == second.headers["location"],
           "the same form sent twice issues one certificate")
    carats_input.fill("1520.35")
    with page.expect_navigation():
        carats_input.press("Enter")  # keyboard-usable: Enter sends the form to be issued
    expect("/certificates/RU-" in page.url, "the fixed certificate is issued and its page shown")
    number = page.url.rsplit("/", 1)[1]
    report["issued"] = number
    expect(page.locator("#status").inner_text() in ("queued", "delivered"), "the issued certificate's status is shown")
    carats = "1830.35"

    with page.expect_navigation():
        page.get_by_role("link", name="Certificates").first.click()
    check(page, "certificates")
    with page.expect_navigation():
        page.get_by_role("link", name=number).click()
    expect(page.locator("#status").inner_text() in ("queued", "delivered"), "the certificate's page shows its status")
    expect(page.get_by_role("button", name="Void this certificate").count() == 0, "a clerk is not offered the void")
    check(page, "certificate")
    # The server checks the role whatever the page offers: a clerk's void, posted with the
    # session's own token, is refused 403; a form without its token is refused 403 too.
    csrf = page.locator('input[name="csrf"]').first.get_attribute("value")
    r = page.request.post(ru + f"/certificates/{number}/void",
                          form={"csrf": csrf, "reason": "a clerk tries"}, max_redirects=0)
    expect(r.status == 403, "a clerk's void is refused with 403")
    r = page.request.post(ru + "/password", max_redirects=0,
                          form={"current_password": cfg["password"], "new_password": "another long passphrase",
                                "repeat_password": "another long passphrase"})
    expect(r.status == 403, "a form posted without its CSRF token is refused")
    page.reload()
    expect(page.locator("#status").inner_text() in ("queued", "delivered"), "and no void happened")
    page.goto(ru + "/password")
    check(page, "password")

    # Customs at the importing node, on a tablet-sized screen.
    tablet = browser.new_context(viewport={"width": 820, "height": 1180}, bypass_csp=True)
    cpage = tablet.new_page()
    sign_in(cpage, inn, "cora", cfg["password"])
    r = cpage.request.get(inn + "/certificates/new", max_redirects=0)
    expect(r.status == 403, "customs may not open the issue form (403)")
    for _ in range(100):  # the certificate reaches the importer's node
        if cpage.request.get(inn + f"/certificates/{number}", max_redirects=0).status == 200:
            break
        cpage.wait_for_timeout(200)
    cpage.goto(inn + f"/certificates/{number}")
    check(cpage, "customs-certificate")

    # The QR seal the exporter's node draws (`kpnode cert qr`, against the running daemon),
    # photographed at the border: customs verifies it on its own node's Verify page.
    seal_png = out / "seal.png"
    subprocess.run([cfg["kpnode"], "cert", "qr", number, "--out", str(seal_png), "--dir", cfg["ru_dir"]],
                   check=True, capture_output=True)
    with cpage.expect_navigation():
        cpage.get_by_role("link", name="Verify").click()
    check(cpage, "verify")
    cpage.get_by_label("Certificate file or QR seal image").set_input_files(str(seal_png))
    with cpage.expect_navigation():
        cpage.get_by_role("button", name="Verify").click()
    expect(cpage.locator("#verdict").inner_text() == "Authentic QR seal", "the QR seal from a PNG is authentic")
    expect(number in cpage.locator(".verdict").inner_text(), "the verdict names the certificate")
    expect(cpage.locator("#held-status").inner_text() in ("received", "delivered"),
           "and its current status on this node")
    check(cpage, "verify-authentic")
    # A photo of the printed seal, as a phone saves it: JPEG, on a grey background.
    seal_jpeg = out / "seal-photo.jpg"
    camera = ctx.new_page()
    camera.set_content('<body style="margin:0;background:#ddd"><img style="margin:40px" src="data:image/png;base64,'
                       + base64.b64encode(seal_png.read_bytes()).decode() + '"></body>')
    camera.screenshot(path=str(seal_jpeg), type="jpeg", quality=75)
    camera.close()
    cpage.get_by_label("Certificate file or QR seal image").set_input_files(str(seal_jpeg))
    with cpage.expect_navigation():
        cpage.get_by_role("button", name="Verify").click()
    expect(cpage.locator("#verdict").inner_text() == "Authentic QR seal", "the QR seal from a JPEG photo is authentic")
    # A file that is neither a .kpc nor a seal image is refused at the field.
    junk = out / "not-a-seal.txt"
    junk.write_text("not a certificate")
    cpage.get_by_label("Certificate file or QR seal image").set_input_files(str(junk))
    with cpage.expect_navigation():
        cpage.get_by_role("button", name="Verify").click()
    expect(cpage.locator("#file-error").is_visible(), "a file that is no certificate is refused at its field")
    r = cpage.request.post(inn + "/verify", multipart={"file": {"name": "seal.png", "mimeType": "image/png",
                                                                 "buffer": seal_png.read_bytes()}},
                           max_redirects=0)
    expect(r.status == 403, "an upload without its CSRF token is refused")
    cpage.goto(inn + f"/certificates/{number}")
    cpage.get_by_label("Carats received").fill("twelve")
    with cpage.expect_navigation():
        cpage.get_by_role("button", name="Confirm the import").click()
    expect(cpage.locator("#carats-error").is_visible(), "a bad carats figure is shown at its field")
    check(cpage, "customs-confirm-error")
    cpage.get_by_label("Carats received").fill(carats)
    parcels = int(cpage.get_by_label("Parcels received").input_value())
    cpage.get_by_label("Parcels received").fill(str(parcels + 1))
    with cpage.expect_navigation():
        cpage.get_by_role("button", name="Confirm the import").click()
    expect(cpage.locator("#status").inner_text() == "import_discrepancy", "the importer's console shows import_discrepancy")
    check(cpage, "customs-discrepancy")

    # The exporter's console shows it too, once the confirmation arrived.
    for _ in range(100):
        page.goto(ru + f"/certificates/{number}")
        if page.locator("#status").inner_text() == "import_discrepancy":
            break
        page.wait_for_timeout(200)
    expect(page.locator("#status").inner_text() == "import_discrepancy", "the exporter's console shows import_discrepancy")
    expect("with a discrepancy" in page.content(), "the timeline shows the difference")
    check(page, "exporter-discrepancy")

    # The exporter's certificate page shows its QR seal; the list filters by date of issue.
    expect(page.locator("figure.qr img").count() == 1, "the certificate's page shows its QR seal")
    r = page.request.get(ru + f"/certificates/{number}/qr.svg")
    expect(r.status == 200 and "<svg" in r.text(), "the QR seal is served as SVG")
    # Its date of issue as the form filled it in (the node's date when the form loaded: read
    # from the form, not from the clock, in case midnight passed since).
    issued_on = fields["issued_on"]
    page.goto(ru + f"/certificates?issued_from={issued_on}&issued_to={issued_on}")
    expect(page.get_by_role("link", name=number).count() == 1, "the date filter keeps the certificate's day")
    page.goto(ru + "/certificates?issued_from=2000-01-01&issued_to=2000-01-31")
    expect(page.get_by_role("link", name=number).count() == 0, "and leaves it out of another range")
    page.goto(ru + "/certificates?issued_from=yesterday")
    expect(page.locator("#issued_from-error").is_visible(), "a bad date is shown at its field")
    check(page, "certificates-date-error")

    # A supervisor at the importer: partners, participants; a wrong fingerprint enrols nothing.
    sup = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
    sign_in(sup, inn, "sam", cfg["password"])
    expect(sup.locator("#by-status").count() == 1, "the dashboard counts certificates by status")
    check(sup, "supervisor-dashboard")
    with sup.expect_navigation():
        sup.get_by_role("link", name="Partners").click()
    expect("RU" in sup.locator("table").inner_text(), "the partners page lists the enrolled partner")
    check(sup, "partners")
    sup.get_by_label("Bundle file").set_input_files(cfg["ru_bundle"])
    sup.get_by_label("Fingerprint, as read out by the partner").fill("0" * 64)
    with sup.expect_navigation():
        sup.get_by_role("button", name="Enrol").click()
    expect(sup.locator("#fingerprint-error").is_visible(), "a fingerprint that is not the bundle's is refused at its field")
    check(sup, "partners-mismatch")
    with sup.expect_navigation():
        sup.get_by_role("link", name="Participants").click()
    check(sup, "participants")
    sup.goto(inn + "/participants/ZW")
    csrf = sup.locator('input[name="csrf"]').first.get_attribute("value")
    r = sup.request.post(inn + "/participants/ZW", max_redirects=0,
                         form={"csrf": csrf, "status": "suspended", "effective_from": "not a date", "reason": "x"})
    expect(r.status == 422 and 'id="effective_from-error"' in r.text(), "a bad date is shown at its field")
    sup.get_by_label("Status", exact=True).select_option("suspended")
    sup.get_by_label("In force from").fill(cfg["today"])
    sup.get_by_label("Reason (the decision it follows)").fill("Plenary decision 2026/9")
    with sup.expect_navigation():
        sup.get_by_role("button", name="Record the change").click()
    expect(sup.locator("#status").inner_text() == "suspended", "the supervisor sets a participant's status")
    expect("Plenary decision 2026/9" in sup.locator("table").inner_text(), "and the history shows the change")
    check(sup, "participant")
    # Customs reads the registry but may not change it, nor see the partners.
    r = cpage.request.get(inn + "/partners", max_redirects=0)
    expect(r.status == 403, "customs may not open the partners page (403)")

    # The auditor at the exporter: statistics, chart, CSV, reconciliation.
    aud = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=True).new_page()
    sign_in(aud, ru, "ada", cfg["password"])
    with aud.expect_navigation():
        aud.get_by_role("link", name="Statistics").click()
    for _ in range(50):  # the figures are computed off the page: it says so until they are there
        if aud.locator("#computed").count() == 1:
            break
        expect(aud.locator("#pending").count() == 1, "the statistics page says the figures are being computed")
        aud.wait_for_timeout(200)
        aud.reload()
    expect("export" in aud.locator("section").first.inner_text(), "the statistics show this year's exports")
    expect(number in aud.locator(".warnings").inner_text(), "the reconciliation lists the discrepancy that needs attention")
    r = aud.request.get(ru + "/statistics/chart.svg?period=" + cfg["today"][:4])
    expect(r.status == 200 and "<svg" in r.text(), "the chart is an SVG")
    r = aud.request.get(ru + "/statistics/statistics.csv?period=" + cfg["today"][:4])
    expect(r.status == 200 and "IN" in r.text(), "the CSV downloads")
    check(aud, "statistics")
    aud.goto(ru + "/statistics?period=2026-Q9")
    expect(aud.locator("#period-error").is_visible(), "a bad period is shown at its field")
    r = page.request.get(ru + "/statistics", max_redirects=0)
    expect(r.status == 403, "a clerk may not open the statistics (403)")

    # Five wrong passwords lock the account: then even the right one is refused.
    guesser = browser.new_context(bypass_csp=True).new_page()
    for i in range(5):
        sign_in(guesser, ru, "clara", f"wrong guess {i} of five")
    sign_in(guesser, ru, "clara", cfg["password"])
    expect("locked" in guesser.locator("#login-error").inner_text(), "five wrong passwords lock the account out")
    check(guesser, "login-locked")

    # A Russian-speaking supervisor: the console speaks the account's language.
    rpage = browser.new_context(bypass_csp=True).new_page()
    sign_in(rpage, ru, "rita", cfg["password"])
    expect(rpage.locator("html").get_attribute("lang") == "ru", "a Russian-speaking user's pages say lang=ru")
    expect(rpage.get_by_role("heading", name="Сертификаты").count() == 1, "the dashboard is in Russian")
    expect(rpage.get_by_role("link", name="Сводка").count() == 1, "so is the menu")
    check(rpage, "dashboard-ru")
    expect(rpage.get_by_role("heading", name="По статусам").count() == 1, "so are the counts by status")
    rpage.goto(ru + "/partners")
    expect(rpage.get_by_role("heading", name="Регистрация партнёра").count() == 1, "the partners page is in Russian")
    check(rpage, "partners-ru")
    rpage.goto(ru + "/statistics")
    expect(rpage.get_by_role("heading", name="Статистика").count() == 1, "so is the statistics page")
    rpage.goto(ru + "/verify")
    expect(rpage.get_by_role("button", name="Проверить").count() == 1, "and the verify page")

    # Signing out ends the session: the dashboard sends back to sign-in.
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    page.goto(ru + "/")
    expect(page.url.endswith("/login"), "after signing out the console asks to sign in again")
    browser.close()

print(json.dumps(report))
