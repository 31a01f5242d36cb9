//! Statistics from the log, partner reconciliation, the SVG chart, and QR seals checked with
//! independent readers (an XML parser, a PNG decoder and a QR decoder).

use std::collections::BTreeMap;
use std::time::Duration;

use kp_tests::*;
use serde_json::{json, Value};

fn today() -> kp_protocol::Date {
    kp_node::clock::Clock::now(&kp_node::clock::SystemClock).date()
}

fn quarter_of(d: kp_protocol::Date) -> (String, kp_protocol::Date) {
    let (y, m, _) = d.ymd();
    let q = (m - 1) / 3;
    (format!("{y}-Q{}", q + 1), kp_protocol::Date::from_ymd(y, q * 3 + 1, 1).unwrap())
}

/// A small deterministic generator, so a failure replays.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Hundredths of a decimal string.
fn h(s: &str) -> u64 {
    let (i, f) = s.split_once('.').unwrap_or((s, "00"));
    i.parse::<u64>().unwrap() * 100 + format!("{f:0<2}")[..2].parse::<u64>().unwrap()
}

fn fmt(v: u64) -> String {
    format!("{}.{:02}", v / 100, v % 100)
}

#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
struct Sum {
    certificates: u64,
    parcels: u64,
    carats: u64,
    usd: u64,
}

fn row_sum(r: &Value) -> Sum {
    Sum {
        certificates: r["certificates"].as_u64().unwrap(),
        parcels: r["parcels"].as_u64().unwrap(),
        carats: h(r["carats"].as_str().unwrap()),
        usd: h(r["value_usd"].as_str().unwrap()),
    }
}

#[test]
fn a_quarter_of_traffic_among_four_nodes_adds_up_on_both_sides() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let codes = ["RU", "IN", "AE", "BY"];
    let mut nodes: Vec<TestNode> =
        codes.iter().map(|c| TestNode::start(&rt, init_dir(tmp.path(), c, free_port()))).collect();
    for i in 0..nodes.len() {
        for j in i + 1..nodes.len() {
            enrol_pair(&nodes[i], &nodes[j]);
        }
    }
    let api = |c: &str| nodes[codes.iter().position(|x| *x == c).unwrap()].api.clone();

    // A quarter's worth of certificates (as much of it as validity rules allow to be issued
    // now: up to 59 days back), random pairs, HS codes, weights and values.
    let today = today();
    let (label, quarter_start) = quarter_of(today);
    let earliest = today.add_days(-59).unwrap().max(quarter_start);
    let span = today.days_after(earliest) as u64;
    let mut rng = Lcg(2021);
    let mut expected: BTreeMap<(String, String, String), Sum> = BTreeMap::new();
    let mut submitted: Vec<(String, String, String)> = Vec::new();
    let hs_codes = ["7102.10", "7102.21", "7102.31"];
    for n in 0..48 {
        let from = codes[rng.next(4) as usize];
        let to = loop {
            let t = codes[rng.next(4) as usize];
            if t != from {
                break t;
            }
        };
        let issued = earliest.add_days(rng.next(span + 1) as i32).unwrap();
        let mut cert: Value =
            serde_json::from_str(&certificate_json(from, to, Some(&format!("{from}-STAT-{n:04}")), 0))
                .unwrap();
        cert["issued_on"] = issued.to_string().into();
        cert["expires_on"] = issued.add_days(60).unwrap().to_string().into();
        let parcels: Vec<Value> = (0..1 + rng.next(3))
            .map(|_| {
                let hs = hs_codes[rng.next(3) as usize];
                let carats = 1 + rng.next(500_000);
                let usd = 100 + rng.next(900_000_000);
                json!({"hs_code": hs, "carats": fmt(carats), "value_usd": fmt(usd), "origin": from})
            })
            .collect();
        cert["parcels"] = Value::Array(parcels);
        let number = api(from).submit(&cert.to_string());
        submitted.push((number, from.to_owned(), to.to_owned()));
        let mut seen = std::collections::BTreeSet::new();
        for p in cert["parcels"].as_array().unwrap() {
            let hs = p["hs_code"].as_str().unwrap().to_owned();
            let s = expected.entry((from.to_owned(), to.to_owned(), hs.clone())).or_default();
            if seen.insert(hs) {
                s.certificates += 1;
            }
            s.parcels += 1;
            s.carats += h(p["carats"].as_str().unwrap());
            s.usd += h(p["value_usd"].as_str().unwrap());
        }
    }
    wait_until(Duration::from_secs(60), "every certificate is delivered", || {
        codes.iter().map(|c| api(c).count("out", "delivered")).sum::<usize>() == submitted.len()
    });

    // One is voided: it leaves both sides' statistics.
    let (voided, vfrom, vto) = submitted[0].clone();
    let (s, v) =
        api(&vfrom).post(&format!("/v1/certificates/{voided}/void"), r#"{"reason": "shipment cancelled"}"#);
    assert_eq!(s, 200, "{v}");
    wait_until(Duration::from_secs(20), "the void reaches the importer", || {
        api(&vto).certificate(&voided)["status"] == "voided"
    });
    let (_, vcert) = api(&vfrom).get(&format!("/v1/certificates/{voided}"));
    let mut seen = std::collections::BTreeSet::new();
    for p in vcert["certificate"]["parcels"].as_array().unwrap() {
        let hs = p["hs_code"].as_str().unwrap().to_owned();
        let s = expected.get_mut(&(vfrom.clone(), vto.clone(), hs.clone())).unwrap();
        if seen.insert(hs) {
            s.certificates -= 1;
        }
        s.parcels -= 1;
        s.carats -= h(p["carats"].as_str().unwrap());
        s.usd -= h(p["value_usd"].as_str().unwrap());
    }
    expected.retain(|_, s| s.parcels > 0);

    // Each node's statistics equal the sums computed here from the submitted JSON.
    let mut reports: BTreeMap<&str, Value> = BTreeMap::new();
    for c in codes {
        let (s, v) = api(c).get(&format!("/v1/stats?period={label}&by=partner,hs_code"));
        assert_eq!(s, 200, "{v}");
        let mut got: BTreeMap<(String, String, String), Sum> = BTreeMap::new();
        for r in v["rows"].as_array().unwrap() {
            let partner = r["partner"].as_str().unwrap().to_owned();
            let hs = r["hs_code"].as_str().unwrap().to_owned();
            let key =
                if r["flow"] == "export" { (c.to_owned(), partner, hs) } else { (partner, c.to_owned(), hs) };
            got.insert(key, row_sum(r));
        }
        let mine: BTreeMap<_, _> =
            expected.iter().filter(|((f, t, _), _)| f == c || t == c).map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(got, mine, "{c}'s statistics");
        assert_eq!(v["voided_excluded"], if c == vfrom || c == vto { 1 } else { 0 }, "{c}");
        reports.insert(c, v);
    }
    // A's exports to B are B's imports from A, row for row.
    for a in codes {
        for b in codes.iter().filter(|b| **b != a) {
            let pick = |c: &str, flow: &str, partner: &str| -> Vec<Value> {
                reports[c]["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|r| r["flow"] == flow && r["partner"] == partner)
                    .map(|r| {
                        json!([r["hs_code"], r["certificates"], r["parcels"], r["carats"], r["value_usd"]])
                    })
                    .collect()
            };
            assert_eq!(pick(a, "export", b), pick(b, "import", a), "{a} → {b}");
        }
    }

    // Offline, with the daemons stopped: CSV and the chart.
    for n in &mut nodes {
        n.stop(&rt);
    }
    let ru = tmp.path().join("RU");
    let chart = tmp.path().join("ru.svg");
    let (code, csv, err) = kpnode(&[
        "stats",
        "--period",
        &label,
        "--by",
        "partner",
        "--csv",
        "--chart",
        chart.to_str().unwrap(),
        "--dir",
        ru.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("flow,partner,hs_code,certificates,parcels,carats,value_usd"));
    let mut by_partner: BTreeMap<(String, String), Sum> = BTreeMap::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        assert_eq!(f.len(), 7, "{l}");
        if f[1] == "ALL" {
            continue;
        }
        by_partner.insert(
            (f[0].to_owned(), f[1].to_owned()),
            Sum {
                certificates: f[3].parse().unwrap(),
                parcels: f[4].parse().unwrap(),
                carats: h(f[5]),
                usd: h(f[6]),
            },
        );
    }
    // The chart: a real SVG whose bars carry the same figures.
    let text = std::fs::read_to_string(&chart).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the chart is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.tag_name().namespace(), Some("http://www.w3.org/2000/svg"));
    assert!(root.attribute("viewBox").is_some());
    let title = root.children().find(|n| n.has_tag_name("title")).and_then(|n| n.text()).unwrap_or_default();
    assert!(title.contains("RU") && title.contains(&label), "{title}");
    let mut bars: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
    let mut months = std::collections::BTreeSet::new();
    for bar in doc.descendants().filter(|n| n.attribute("class") == Some("bar")) {
        let flow = bar.attribute("data-flow").unwrap().to_owned();
        let partner = bar.attribute("data-partner").unwrap().to_owned();
        months.insert(bar.attribute("data-month").unwrap().to_owned());
        let height: f64 = bar.attribute("height").unwrap().parse().unwrap();
        assert!(height > 0.0);
        let e = bars.entry((flow, partner)).or_default();
        e.0 += bar.attribute("data-certificates").unwrap().parse::<u64>().unwrap();
        e.1 += h(bar.attribute("data-value-usd").unwrap());
    }
    assert!(!bars.is_empty());
    let from_csv: BTreeMap<(String, String), (u64, u64)> =
        by_partner.iter().map(|(k, s)| (k.clone(), (s.certificates, s.usd))).collect();
    assert_eq!(bars, from_csv, "the chart shows what the statistics say");
    assert!(months.iter().all(|m| m.starts_with(&label[..4])), "{months:?}");

    // Bad input names the option.
    let (code, _, err) = kpnode(&["stats", "--period", "2026-Q5", "--dir", ru.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(err.contains("--period"), "{err}");
}

/// Statistics by country of origin beside partner, and imports placed by date of issue or by
/// the confirmation's date of import, over two real daemons.
#[test]
fn origins_and_the_import_basis_give_the_planted_figures() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let mut ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", free_port()));
    let mut inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", free_port()));
    enrol_pair(&ru, &inn);
    // Today read once: a test running across midnight still plants and asks the same days.
    let today = today();
    let day = |n: i32| today.add_days(n).unwrap().to_string();
    // IN exports to RU: one certificate 10 days ago, two 5 days ago; parcels of AE, RU and
    // mixed origin.
    let cert = |issued: &str, parcels: Value| {
        let mut c: Value = serde_json::from_str(&certificate_json("IN", "RU", None, 0)).unwrap();
        c["issued_on"] = issued.into();
        c["parcels"] = parcels;
        inn.api.submit(&c.to_string())
    };
    let p = |hs: &str, carats: &str, usd: &str, origin: &str| json!({"hs_code": hs, "carats": carats, "value_usd": usd, "origin": origin});
    let c1 = cert(
        &day(-10),
        json!([p("7102.31", "100.25", "50000.00", "AE"), p("7102.21", "10.00", "800.50", "MIXED")]),
    );
    let c2 =
        cert(&day(-5), json!([p("7102.31", "20.10", "9000.00", "AE"), p("7102.10", "5.05", "300.00", "RU")]));
    let c3 = cert(&day(-5), json!([p("7102.10", "7.00", "700.00", "RU")]));
    wait_until(Duration::from_secs(30), "all three reach RU", || ru.api.certificates("in").len() == 3);
    // RU confirms the first yesterday and the second today; the third stays unconfirmed.
    for (n, on, parcels, carats) in [(&c1, day(-1), 2, "110.25"), (&c2, day(0), 2, "25.15")] {
        let body = json!({"received_on": on, "parcels": parcels, "carats": carats}).to_string();
        let (s, v) = ru.api.post(&format!("/v1/certificates/{n}/confirm"), &body);
        assert_eq!(s, 200, "{v}");
    }

    let get = |api: &Api, q: &str| {
        let (s, v) = api.get(&format!("/v1/stats?{q}"));
        assert_eq!(s, 200, "{q}: {v}");
        v
    };
    let origins = |v: &Value, flow: &str| -> BTreeMap<String, Sum> {
        v["origins"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["flow"] == flow)
            .map(|r| (r["origin"].as_str().unwrap().to_owned(), row_sum(r)))
            .collect()
    };
    let sum = |certificates, parcels, carats, usd| Sum { certificates, parcels, carats, usd };
    let import_total = |v: &Value| row_sum(&v["totals"].as_array().unwrap()[1]);
    let whole = format!("{}..{}", day(-10), day(0));
    let recent = format!("{}..{}", day(-1), day(0));

    // By date of issue (the default): all three imports in the whole span, none in the last two days.
    let v = get(&ru.api, &format!("period={whole}"));
    assert_eq!(v["basis"], "issued");
    assert_eq!(v["unconfirmed_imports"], 0);
    assert_eq!(import_total(&v), sum(3, 5, 14240, 6080050));
    let want: BTreeMap<String, Sum> = [
        ("AE".to_owned(), sum(2, 2, 12035, 5900000)),
        ("MIXED".to_owned(), sum(1, 1, 1000, 80050)),
        ("RU".to_owned(), sum(2, 2, 1205, 100000)),
    ]
    .into();
    assert_eq!(origins(&v, "import"), want);
    // The exporter sees the same by origin, as exports; its partner rows say RU throughout.
    let e = get(&inn.api, &format!("period={whole}&by=partner"));
    assert_eq!(origins(&e, "export"), want);
    assert_eq!(e["rows"].as_array().unwrap().len(), 1);
    assert_eq!(e["rows"][0]["partner"], "RU");
    let v = get(&ru.api, &format!("period={recent}&basis=issued"));
    assert_eq!(import_total(&v), sum(0, 0, 0, 0));
    assert!(v["origins"].as_array().unwrap().is_empty());

    // By date of import: the two confirmed ones, in the last two days; the third is left out
    // and counted.
    let v = get(&ru.api, &format!("period={recent}&basis=imported"));
    assert_eq!(v["basis"], "imported");
    assert_eq!(v["unconfirmed_imports"], 1);
    assert_eq!(import_total(&v), sum(2, 4, 13540, 6010050));
    let want: BTreeMap<String, Sum> = [
        ("AE".to_owned(), sum(2, 2, 12035, 5900000)),
        ("MIXED".to_owned(), sum(1, 1, 1000, 80050)),
        ("RU".to_owned(), sum(1, 1, 505, 30000)),
    ]
    .into();
    assert_eq!(origins(&v, "import"), want);
    let months: u64 =
        v["monthly"].as_array().unwrap().iter().map(|m| m["certificates"].as_u64().unwrap()).sum();
    assert_eq!(months, 2);
    // Only the day before yesterday and earlier: nothing was imported then.
    let v = get(&ru.api, &format!("period={}..{}&basis=imported", day(-10), day(-2)));
    assert_eq!(import_total(&v), sum(0, 0, 0, 0));
    assert_eq!(v["unconfirmed_imports"], 1);
    let (s, v) = ru.api.get(&format!("/v1/stats?period={whole}&basis=shipped"));
    assert_eq!(s, 422, "{v}");
    assert!(v.to_string().contains("basis"), "{v}");

    // The command line, offline, says the same.
    ru.stop(&rt);
    inn.stop(&rt);
    let dir = tmp.path().join("RU");
    let dir = dir.to_str().unwrap();
    let (code, out, err) =
        kpnode(&["stats", "--period", &recent, "--basis", "imported", "--json", "--dir", dir]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!((v["unconfirmed_imports"].as_u64(), import_total(&v)), (Some(1), sum(2, 4, 13540, 6010050)));
    let (code, out, err) = kpnode(&["stats", "--period", &recent, "--basis", "imported", "--dir", dir]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ORIGIN") && out.contains("MIXED"), "{out}");
    assert!(out.contains("1 import(s) valid during the period are not confirmed yet"), "{out}");
    let (code, _, err) = kpnode(&["stats", "--period", &recent, "--basis", "shipped", "--dir", dir]);
    assert_eq!(code, 2);
    assert!(err.contains("--basis"), "{err}");

    // The KP submission layout: HS subheadings as columns, one partner per row.
    let in_dir = tmp.path().join("IN");
    let in_dir = in_dir.to_str().unwrap();
    let (code, csv, err) = kpnode(&["stats", "--period", &whole, "--kp-csv", "--dir", in_dir]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        csv,
        "flow,participant,7102.10 carats,7102.10 US$,7102.21 carats,7102.21 US$,7102.31 carats,7102.31 US$,certificates\n\
         export,RU,12.05,1000.00,10.00,800.50,120.35,59000.00,3\n\
         export,TOTAL,12.05,1000.00,10.00,800.50,120.35,59000.00,3\n\
         import,TOTAL,0.00,0.00,0.00,0.00,0.00,0.00,0\n"
    );
    let (code, csv, err) =
        kpnode(&["stats", "--period", &recent, "--basis", "imported", "--kp-csv", "--dir", dir]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(csv.lines().nth(2), Some("import,IN,5.05,300.00,10.00,800.50,120.35,59000.00,2"), "{csv}");
    // The CSV has no place for the unconfirmed import: it is said on stderr, not dropped.
    assert!(err.contains("1 import(s) valid during the period are not confirmed yet"), "{err}");
    let (code, _, err) = kpnode(&["stats", "--period", &whole, "--kp-csv", "--by", "partner", "--dir", dir]);
    assert_eq!(code, 2);
    assert!(err.contains("--kp-csv"), "{err}");

    // IN voids the unconfirmed one: it can never be confirmed, so it no longer waits.
    let ru = TestNode::start(&rt, ru.dir.clone());
    let inn = TestNode::start(&rt, inn.dir.clone());
    let (s, v) = inn.api.post(&format!("/v1/certificates/{c3}/void"), r#"{"reason": "shipment cancelled"}"#);
    assert_eq!(s, 200, "{v}");
    wait_until(Duration::from_secs(30), "RU holds the void", || {
        ru.api.certificates("in").iter().any(|c| c["number"] == c3.as_str() && c["status"] == "voided")
    });
    let v = get(&ru.api, &format!("period={recent}&basis=imported"));
    assert_eq!(v["unconfirmed_imports"], 0, "{v}");
    assert_eq!(import_total(&v), sum(2, 4, 13540, 6010050));
}

fn confirm(api: &Api, number: &str, parcels: u64, carats: &str) {
    let body = json!({"received_on": today().to_string(), "parcels": parcels, "carats": carats}).to_string();
    let (s, v) = api.post(&format!("/v1/certificates/{number}/confirm"), &body);
    assert_eq!(s, 200, "{v}");
}

#[test]
fn reconcile_reports_exactly_the_planted_mismatches() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let mut ru = TestNode::start(&rt, init_dir(tmp.path(), "RU", free_port()));
    let mut inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", free_port()));
    let mut ae = TestNode::start(&rt, init_dir(tmp.path(), "AE", free_port()));
    enrol_pair(&ru, &inn);
    enrol_pair(&ru, &ae);

    // certificate_json has two parcels: (100 + variant/100).xx and 10.50 carats.
    let a = ru.api.submit(&certificate_json("RU", "IN", None, 0)); // confirmed, matching
    let b = ru.api.submit(&certificate_json("RU", "IN", None, 50)); // confirmed, different carats
    let mut short: Value = serde_json::from_str(&certificate_json("RU", "IN", None, 7)).unwrap();
    short["expires_on"] = today().add_days(1).unwrap().to_string().into();
    let c = ru.api.submit(&short.to_string()); // never confirmed, expires tomorrow
    let d = inn.api.submit(&certificate_json("IN", "RU", None, 1)); // RU never confirms
    let e = ru.api.submit(&certificate_json("RU", "AE", None, 2)); // AE confirms
    let f = ae.api.submit(&certificate_json("AE", "RU", None, 3)); // RU confirms
    wait_until(Duration::from_secs(30), "all are delivered", || {
        ru.api.count("out", "delivered") == 4 && ru.api.certificates("in").len() == 2
    });
    confirm(&inn.api, &a, 2, "110.50");
    confirm(&inn.api, &b, 2, "100.00");
    confirm(&ae.api, &e, 2, "110.52");
    confirm(&ru.api, &f, 2, "110.53");
    wait_until(Duration::from_secs(30), "the confirmations reach RU", || {
        ru.api.count("out", "import_confirmed") == 2 && ru.api.count("out", "import_discrepancy") == 1
    });

    let later = today().add_days(2).unwrap();
    let (s, v) = ru.api.get(&format!("/v1/reconcile?on={later}"));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["attention"], 3, "{v:#}");
    let partners = v["partners"].as_array().unwrap();
    let of = |p: &str| partners.iter().find(|x| x["partner"] == p).unwrap().clone();
    let numbers = |x: &Value, key: &str| -> Vec<String> {
        x[key].as_array().unwrap().iter().map(|f| f["number"].as_str().unwrap().to_owned()).collect()
    };
    let ind = of("IN");
    assert_eq!(
        (ind["sent"].as_u64(), ind["confirmed"].as_u64(), ind["received"].as_u64()),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(numbers(&ind, "discrepancies"), vec![b.clone()]);
    assert!(
        ind["discrepancies"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("carats: certified 111.00, received 100.00 (-11.00)"),
        "{ind}"
    );
    assert_eq!(numbers(&ind, "unconfirmed_past_expiry"), vec![c.clone()]);
    assert_eq!(numbers(&ind, "not_confirmed_here"), vec![d.clone()]);
    let aed = of("AE");
    for key in ["discrepancies", "unconfirmed_past_expiry", "not_confirmed_here"] {
        assert!(numbers(&aed, key).is_empty(), "AE {key}: {aed}");
    }
    // Today, c has not expired yet: two findings.
    let (_, v) = ru.api.get("/v1/reconcile");
    assert_eq!(v["attention"], 2, "{v:#}");

    // The command line, offline: exit 1 with the findings; a clean partner or period exits 0.
    for n in [&mut ru, &mut inn, &mut ae] {
        n.stop(&rt);
    }
    let dir = tmp.path().join("RU");
    let dir = dir.to_str().unwrap();
    let (code, out, err) = kpnode(&["reconcile", "--on", &later.to_string(), "--dir", dir]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("3 certificate(s) need attention"), "{err}");
    for n in [&b, &c, &d] {
        assert!(out.contains(n.as_str()), "{n} missing from:\n{out}");
    }
    for n in [&a, &e, &f] {
        assert!(!out.contains(n.as_str()), "{n} reported:\n{out}");
    }
    let (code, csv, _) = kpnode(&["reconcile", "--on", &later.to_string(), "--csv", "--dir", dir]);
    assert_eq!(code, 1);
    assert_eq!(csv.lines().count(), 4, "{csv}");
    let (code, out, err) =
        kpnode(&["reconcile", "--partner", "AE", "--on", &later.to_string(), "--dir", dir]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("Everything is reconciled"), "{out}");
    let (code, _, err) = kpnode(&["reconcile", "--period", "2020-Q1", "--dir", dir]);
    assert_eq!(code, 0, "{err}");
}

/// The text of the QR code in a PNG, read with an independent decoder.
fn decode_png(path: &std::path::Path) -> String {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    let (w, hgt) = (info.width as usize, info.height as usize);
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(w, hgt, |x, y| buf[y * info.line_size + x]);
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[test]
fn a_qr_seal_verifies_offline_across_a_key_rotation_and_a_tampered_one_does_not() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let ru_dir = init_dir(tmp.path(), "RU", free_port());
    let mut ru = TestNode::start(&rt, ru_dir.clone());
    let mut inn = TestNode::start(&rt, init_dir(tmp.path(), "IN", free_port()));
    enrol_pair(&ru, &inn);
    let number = ru.api.submit(&certificate_json("RU", "IN", None, 5));
    wait_until(Duration::from_secs(20), "delivered", || ru.api.certificate(&number)["status"] == "delivered");
    // The API gives the seal's text too.
    let (s, v) = ru.api.get(&format!("/v1/certificates/{number}/seal"));
    assert_eq!(s, 200, "{v}");
    assert!(v["qr_text"].as_str().unwrap().starts_with("KP1:"));
    // An inbound certificate cannot be sealed by its importer.
    let (s, _) = inn.api.get(&format!("/v1/certificates/{number}/seal"));
    assert_eq!(s, 409);
    ru.stop(&rt);
    inn.stop(&rt);

    let p = |name: &str| tmp.path().join(name);
    let s = |path: &std::path::Path| path.to_str().unwrap().to_owned();
    let dir = s(ru_dir.root());
    let ok = |args: &[&str]| {
        let (code, out, err) = kpnode(args);
        assert_eq!(code, 0, "kpnode {args:?}: {err}");
        out
    };
    ok(&["cert", "qr", &number, "--out", &s(&p("seal.png")), "--dir", &dir]);
    ok(&["cert", "qr", &number, "--out", &s(&p("seal.svg")), "--dir", &dir]);
    ok(&["peer", "export", "--out", &s(&p("ru-1.bundle")), "--dir", &dir]);

    // A real decoder reads the PNG; the SVG is well-formed.
    let text = decode_png(&p("seal.png"));
    assert!(text.starts_with("KP1:"), "{text}");
    let (_, seal) = kp_protocol::seal::from_qr_text(&text).unwrap();
    assert_eq!(seal.number.as_str(), number);
    let svg = std::fs::read_to_string(p("seal.svg")).unwrap();
    assert_eq!(roxmltree::Document::parse(&svg).unwrap().root_element().tag_name().name(), "svg");

    let out = ok(&["verify", "--qr", &s(&p("seal.png")), "--bundle", &s(&p("ru-1.bundle"))]);
    assert!(out.contains("Authentic QR seal") && out.contains(&number), "{out}");

    // RU rotates its signing key; the old seal verifies with the updated bundle, and a new
    // seal (new key) only with the updated one.
    let mut ru = TestNode::start(&rt, ru_dir.clone());
    let (st, v) = ru.api.post("/v1/keys/rotate", r#"{"signing": true}"#);
    assert_eq!(st, 200, "{v}");
    ru.stop(&rt);
    ok(&["peer", "export", "--out", &s(&p("ru-2.bundle")), "--dir", &dir]);
    ok(&["verify", "--qr", &s(&p("seal.png")), "--bundle", &s(&p("ru-2.bundle"))]);
    ok(&["cert", "qr", &number, "--out", &s(&p("seal-2.png")), "--dir", &dir]);
    ok(&["verify", "--qr", &s(&p("seal-2.png")), "--bundle", &s(&p("ru-2.bundle"))]);
    let (code, _, err) = kpnode(&["verify", "--qr", &s(&p("seal-2.png")), "--bundle", &s(&p("ru-1.bundle"))]);
    assert_eq!(code, 2, "a key the old bundle does not know: {err}");

    // A seal whose certificate facts were altered (the signature kept) fails.
    let (mut doc, mut tampered) = kp_protocol::seal::from_qr_text(&text).unwrap();
    tampered.carats += 100;
    doc.body = kp_protocol::codec::encode(&tampered);
    std::fs::write(
        p("tampered.png"),
        kp_node::report::seal::png(&kp_protocol::seal::to_qr_text(&doc)).unwrap(),
    )
    .unwrap();
    let (code, _, err) =
        kpnode(&["verify", "--qr", &s(&p("tampered.png")), "--bundle", &s(&p("ru-2.bundle"))]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not authentic"), "{err}");
    // A genuine seal presented with another certificate file fails too.
    let other = p("other.json");
    std::fs::write(&other, certificate_json("RU", "IN", Some("RU-2026-777777"), 9)).unwrap();
    ok(&["cert", "sign", &s(&other), "--out", &s(&p("other.kpc")), "--dir", &dir]);
    let (code, _, err) = kpnode(&[
        "verify",
        &s(&p("other.kpc")),
        "--qr",
        &s(&p("seal.png")),
        "--bundle",
        &s(&p("ru-2.bundle")),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("the file or the seal was altered"), "{err}");
    // Not an image, and an image without a code.
    std::fs::write(p("junk.png"), b"not a png").unwrap();
    let (code, _, err) = kpnode(&["verify", "--qr", &s(&p("junk.png")), "--bundle", &s(&p("ru-2.bundle"))]);
    assert_eq!(code, 2);
    assert!(err.contains("not a readable PNG"), "{err}");
}
