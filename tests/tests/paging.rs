//! The certificate list a page at a time: `GET /v1/certificates` with `limit` and the opaque
//! `cursor` (the next page in `X-Next-Cursor` and `Link`), and `kpnode cert list --limit
//! --cursor`, online and on a stopped node's store; bad values are 422s naming the parameter.

use kp_tests::*;

/// Every page of `query` (e.g. `direction=out`), `limit` at a time, following `Link`; the
/// numbers listed, and how many pages it took.
fn follow_links(api: &Api, query: &str, limit: usize) -> (Vec<String>, usize) {
    let mut path = format!("/v1/certificates?{query}&limit={limit}");
    let (mut numbers, mut pages) = (Vec::new(), 0);
    loop {
        let (status, page, link) = api.get_with_header(&path, "Link");
        assert_eq!(status, 200, "{path}: {page}");
        let (_, _, cursor) = api.get_with_header(&path, "X-Next-Cursor");
        pages += 1;
        let items = page.as_array().expect("the page is an array");
        assert!(items.len() <= limit);
        numbers.extend(items.iter().map(|c| c["number"].as_str().unwrap().to_owned()));
        let Some(link) = link else {
            assert!(cursor.is_none(), "a cursor without a link");
            return (numbers, pages);
        };
        let cursor = cursor.expect("a cursor beside the link");
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        let url = link.trim_start_matches('<').split('>').next().unwrap();
        assert!(
            url.contains(&format!("cursor={cursor}")) && url.contains(&format!("limit={limit}")),
            "{url}"
        );
        assert!(url.contains(query), "the link keeps the filters: {url}");
        path = url.to_owned();
    }
}

#[test]
fn the_certificate_list_pages_with_a_cursor_bound_to_its_filters() {
    init_logging();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let dir = init_dir(tmp.path(), "RU", 0);
    // A port of its own, written in node.toml, so that the CLI finds the running node.
    set_setting(&dir, "network", "api_listen", &format!("\"127.0.0.1:{}\"", free_port()));
    let mut node = TestNode::start(&rt, dir);
    let mut issued: Vec<String> =
        (0..7).map(|i| node.api.submit(&certificate_json("RU", "IN", None, i))).collect();
    issued.sort();

    // Pages of 3: every certificate once, in number order, the last page without a cursor.
    let (listed, pages) = follow_links(&node.api, "direction=out", 3);
    assert_eq!(listed, issued);
    assert_eq!(pages, 3);
    // Without a limit, the default page holds them all; the old array body is unchanged.
    let (status, all, cursor) = node.api.get_with_header("/v1/certificates", "X-Next-Cursor");
    assert_eq!((status, all.as_array().map(Vec::len), cursor), (200, Some(7), None));
    // A filter nothing matches: an empty last page.
    let (listed, pages) = follow_links(&node.api, "direction=in", 2);
    assert_eq!((listed.len(), pages), (0, 1));

    // Refusals name the parameter.
    let (_, _, cursor) = node.api.get_with_header("/v1/certificates?direction=out&limit=3", "X-Next-Cursor");
    let cursor = cursor.unwrap();
    let refused = |path: &str, field: &str| {
        let (status, v) = node.api.get(path);
        assert_eq!(status, 422, "{path}: {v}");
        assert_eq!(v["problems"][0]["field"], field, "{path}: {v}");
    };
    for limit in ["0", "1001", "-1", "many", "99999999999999999999999"] {
        refused(&format!("/v1/certificates?limit={limit}"), "limit");
    }
    let mut forged = cursor.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).unwrap();
    for bad in [forged.as_str(), "not-a-cursor", "00", &"ab".repeat(400)] {
        refused(&format!("/v1/certificates?direction=out&cursor={bad}"), "cursor");
    }
    // The cursor is bound to its filters, and is not given with `after`.
    refused(&format!("/v1/certificates?direction=in&cursor={cursor}"), "cursor");
    refused(&format!("/v1/certificates?cursor={cursor}"), "cursor");
    refused(&format!("/v1/certificates?direction=out&after={}&cursor={cursor}", issued[0]), "cursor");
    // The same cursor with another limit goes on where it stopped.
    let (status, rest) = node.api.get(&format!("/v1/certificates?direction=out&limit=100&cursor={cursor}"));
    assert_eq!(status, 200);
    let rest: Vec<&str> = rest.as_array().unwrap().iter().map(|c| c["number"].as_str().unwrap()).collect();
    assert_eq!(rest, issued[3..].iter().map(String::as_str).collect::<Vec<_>>());

    // The CLI through the daemon: one page, the cursor on stderr; then the next page.
    let dir = node.dir.root().to_str().unwrap().to_owned();
    let cli_pages = |dir: &str| {
        let (code, out, err) = kpnode(&["cert", "list", "--limit", "4", "--json", "--dir", dir]);
        assert_eq!(code, 0, "{err}");
        let first: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(first.len(), 4);
        let cursor = err.lines().find_map(|l| l.strip_prefix("next page: --cursor ")).expect(&err).to_owned();
        let (code, out, err) = kpnode(&["cert", "list", "--limit", "4", "--cursor", &cursor, "--dir", dir]);
        assert_eq!(code, 0, "{err}");
        assert!(!err.contains("next page"), "the last page: {err}");
        for n in &issued[4..] {
            assert!(out.contains(n.as_str()), "{out}");
        }
        let (code, _, err) = kpnode(&["cert", "list", "--cursor", "ffff", "--dir", dir]);
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("cursor"), "{err}");
        let (code, _, err) = kpnode(&["cert", "list", "--limit", "0", "--dir", dir]);
        assert_eq!(code, 2, "{err}");
    };
    cli_pages(&dir);
    // And on the stopped node's store, the same.
    node.stop(&rt);
    cli_pages(&dir);
    let (code, out, err) = kpnode(&["cert", "list", "--json", "--dir", &dir]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap().len(),
        7,
        "without --limit: all"
    );
}
