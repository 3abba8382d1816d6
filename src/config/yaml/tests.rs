use super::*;

fn parse_str(text: &str) -> Result<Node, SyntaxError> {
    parse(text.as_bytes())
}

fn map_entries(node: &Node) -> &[(Key, Node)] {
    match &node.kind {
        NodeKind::Map(entries) => entries,
        other => panic!("expected a map, got {other:?}"),
    }
}

#[test]
fn keys_and_values_carry_their_line_and_column() {
    let doc =
        parse_str("service: courses\nroutes:\n  - path: /api/\n    methods: [GET]\n").unwrap();
    let entries = map_entries(&doc);
    assert_eq!(entries[0].0.name, "service");
    assert_eq!(entries[0].0.mark, Mark { line: 1, col: 1 });
    assert_eq!(entries[0].1.mark, Mark { line: 1, col: 10 });
    let NodeKind::Seq(routes) = &entries[1].1.kind else {
        panic!("routes is a list")
    };
    let route = map_entries(&routes[0]);
    assert_eq!(route[1].0.name, "methods");
    assert_eq!(route[1].0.mark, Mark { line: 4, col: 5 });
}

#[test]
fn quoted_scalars_are_not_null() {
    let doc = parse_str("a: ~\nb: \"\"\nc:\n").unwrap();
    let entries = map_entries(&doc);
    assert!(entries[0].1.is_null());
    assert!(!entries[1].1.is_null());
    assert!(entries[2].1.is_null());
}

#[test]
fn aliases_expand_to_their_anchor() {
    let doc = parse_str("a: &t { read: 1s }\nb: *t\n").unwrap();
    let entries = map_entries(&doc);
    assert_eq!(map_entries(&entries[1].1)[0].0.name, "read");
}

#[test]
fn syntax_errors_have_a_position() {
    let error = parse_str("a: [1, 2\nb: c\n").unwrap_err();
    assert!(error.mark.line >= 1, "{error:?}");
    assert!(error.message.starts_with("invalid YAML"), "{error:?}");
}

#[test]
fn empty_document_is_an_empty_map() {
    assert!(map_entries(&parse_str("").unwrap()).is_empty());
    assert!(map_entries(&parse_str("# only a comment\n").unwrap()).is_empty());
}

/// Nine levels of nine aliases: about 400 bytes that expand to 9^9 nodes.
pub fn alias_bomb() -> String {
    let mut text = "a0: &a0 [x, x, x, x, x, x, x, x, x]\n".to_string();
    for level in 1..9 {
        let prev = format!("*a{}", level - 1);
        let items = [prev.as_str(); 9].join(", ");
        text.push_str(&format!("a{level}: &a{level} [{items}]\n"));
    }
    text
}

#[test]
fn an_alias_bomb_is_refused_where_it_goes_past_the_limit() {
    let error = parse_str(&alias_bomb()).unwrap_err();
    assert!(
        error.message.contains("copy more than 100000 nodes"),
        "{error}"
    );
    // The fifth line copies the fourth's 7,381 nodes nine times, then once more for its own
    // anchor: past 100,000 there.
    assert_eq!(error.mark.line, 5, "{error}");
}

#[test]
fn a_merge_key_is_refused_with_what_to_write() {
    let error = parse_str("base: &b { read: 1s }\ntimeouts:\n  <<: *b\n").unwrap_err();
    assert_eq!(error.mark, Mark { line: 3, col: 3 });
    assert!(error.message.contains("merge keys"), "{error}");
    // Quoted, it is only a strange key name, left to the reader of the file's fields.
    assert!(parse_str("a:\n  \"<<\": 1\n").is_ok());
}

#[test]
fn nesting_past_the_limit_is_refused_at_the_first_level_too_deep() {
    let ok = "[".repeat(64) + &"]".repeat(64);
    assert!(parse_str(&ok).is_ok());
    let error = parse_str(&("[".repeat(100) + &"]".repeat(100))).unwrap_err();
    assert_eq!(error.mark, Mark { line: 1, col: 65 }, "{error}");
    assert!(error.message.contains("deeper than 64"), "{error}");
    let block = "- ".repeat(100_000) + "x\n";
    assert!(parse_str(&block).unwrap_err().message.contains("deeper"));
    // The scanner looks ahead through flow collections and stops at its own limit, 255.
    let error = parse_str(&("[".repeat(100_000) + &"]".repeat(100_000))).unwrap_err();
    assert_eq!(error.mark, Mark { line: 1, col: 256 }, "{error}");
}

#[test]
fn a_second_document_is_refused_at_its_start() {
    let error = parse_str("a: 1\n---\nb: 2\n").unwrap_err();
    assert_eq!(error.mark.line, 2, "{error}");
    assert!(error.message.contains("second YAML document"), "{error}");
    // A document start marker before the only document, or an end marker after it, is fine.
    assert!(parse_str("---\na: 1\n...\n").is_ok());
}

#[test]
fn control_characters_are_refused_where_they_are() {
    let error = parse_str("a: 1\nb: x\0y\nc: 3\n").unwrap_err();
    assert_eq!(error.mark, Mark { line: 2, col: 5 }, "{error}");
    assert!(error.message.contains("U+0000 (NUL)"), "{error}");
    let error = parse_str("a: é\u{7}\n").unwrap_err();
    assert_eq!(error.mark, Mark { line: 1, col: 5 }, "{error}");
    assert!(parse_str("a: \"x\ty\"\r\nb: z\r\n").is_ok());
}

#[test]
fn invalid_utf8_is_refused_at_its_first_bad_byte() {
    let error = parse(b"a: 1\nb: caf\xE9 au lait\n").unwrap_err();
    assert_eq!(error.mark, Mark { line: 2, col: 7 }, "{error}");
    assert!(error.message.contains("0xE9"), "{error}");
    assert_eq!(error.hint.as_deref(), Some("save the file as UTF-8"));
    let error = parse(b"a: \xC3").unwrap_err();
    assert!(error.message.contains("ends inside a character"), "{error}");
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let doc = parse(b"\xEF\xBB\xBFservice: a\n").unwrap();
    let entries = map_entries(&doc);
    assert_eq!(entries[0].0.name, "service");
    assert_eq!(entries[0].0.mark, Mark { line: 1, col: 1 });
}

#[test]
fn json_reading_applies_the_limits_it_is_given() {
    let deep = "[".repeat(100) + &"]".repeat(100);
    let loose = Limits {
        depth: 128,
        copies: 10,
    };
    assert!(to_json(deep.as_bytes(), loose).is_ok());
    assert!(to_json(deep.as_bytes(), CONFIG).is_err());
    assert!(to_json(b"a: &a [1, 2, 3, 4, 5]\nb: [*a, *a]\n", loose).is_err());
}

/// Plain scalars of every kind, and the repository's fragments, read as serde_yaml reads them.
#[test]
fn json_is_what_serde_yaml_reads() {
    let scalars = [
        "",
        "~",
        "null",
        "Null",
        "NULL",
        "true",
        "True",
        "TRUE",
        "false",
        "FALSE",
        "yes",
        "no",
        "on",
        "0",
        "-0",
        "+0",
        "7",
        "+7",
        "-7",
        "0123",
        "-0123",
        "00",
        "0x1F",
        "-0x1F",
        "+0x1F",
        "0x",
        "0x-5",
        "0xZZ",
        "0o17",
        "-0o17",
        "0b101",
        "-0b101",
        "1_000",
        "1e3",
        "-1.5e-3",
        ".5",
        "-.5",
        "+.5",
        "5.",
        "00.5",
        "0.5",
        ".inf",
        "-.Inf",
        "+.INF",
        ".nan",
        ".NaN",
        "+.nan",
        "inf",
        "nan",
        "infinity",
        "+-5",
        "--5",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "1.0",
        "3.0.3",
        "2024-01-01",
        "12:30",
        "a b",
        "/api/{id}/",
    ];
    for scalar in scalars {
        let text = format!("k: {scalar}\n");
        let expected: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let found = to_json(text.as_bytes(), CONFIG).unwrap();
        assert_eq!(found, expected, "{scalar:?}");
    }
    let documents = [
        include_str!("../../../specs/courses.yaml"),
        include_str!("../../../specs/accounts.yaml"),
        include_str!("../../openapi/gateway.yaml"),
        "a: 'quoted 1'\nb: \"2\"\nc: |\n  block\n200: {x: [1, 2.5, ~]}\nd: &x {y: 1}\ne: *x\n",
        "k: &name key\n*name : 1\n",
    ];
    for document in documents {
        let expected: serde_json::Value = serde_yaml::from_str(document).unwrap();
        let loose = Limits {
            depth: 128,
            copies: 100_000,
        };
        assert_eq!(to_json(document.as_bytes(), loose).unwrap(), expected);
    }
}

#[test]
fn keys_are_names_or_aliases_of_names() {
    let doc = parse_str("a: &k name\n*k : 1\n").unwrap();
    assert_eq!(map_entries(&doc)[1].0.name, "name");
    let error = parse_str("a: 1\n[b]: 2\n").unwrap_err();
    assert_eq!(error.mark, Mark { line: 2, col: 1 }, "{error}");
    assert!(error.message.contains("plain name"), "{error}");
}
