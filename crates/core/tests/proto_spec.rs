//! Keeps `docs/protocol.md` (normative) and the codec consistent: the constants table,
//! the message type bytes, the code lists and the worked examples of the spec are
//! checked against the code.

use std::time::Duration;

use shoal_core::proto::*;
use shoal_core::ContentId;

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md is readable")
}

/// The rows `| name | value |` of the spec's constants table.
fn spec_constants(spec: &str) -> Vec<(String, String)> {
    let table = spec
        .split("## 15. Constants")
        .nth(1)
        .expect("the spec has its constants section");
    table
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells.len() == 4 && cells[1].starts_with('`'))
                .then(|| (cells[1].replace('`', ""), cells[2].replace('`', "")))
        })
        .collect()
}

fn number(v: &str) -> u64 {
    let digits: String = v
        .split_whitespace()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| *c != ',')
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {v}"))
}

#[test]
fn spec_constants_table_matches_the_code() {
    let spec = spec();
    let rows = spec_constants(&spec);
    let secs = |d: Duration| d.as_secs();
    let mut checked = 0;
    for (name, value) in &rows {
        let names: Vec<&str> = name.split(" / ").collect();
        let values: Vec<&str> = value.split(" / ").collect();
        assert_eq!(names.len(), values.len(), "row {name}");
        for (n, v) in names.iter().zip(values) {
            let expected: String = match *n {
                "PROTOCOL_ID" => PROTOCOL_ID.into(),
                "ALPN" => String::from_utf8(ALPN.to_vec()).unwrap(),
                "HELLO_MAGIC" => String::from_utf8(HELLO_MAGIC.to_vec()).unwrap(),
                "PROTOCOL_VERSION" => PROTOCOL_VERSION.to_string(),
                "HELLO_TIMEOUT" => format!("{} s", secs(HELLO_TIMEOUT)),
                "KEEPALIVE_INTERVAL" => format!("{} s", secs(KEEPALIVE_INTERVAL)),
                "IDLE_TIMEOUT" => format!("{} s", secs(IDLE_TIMEOUT)),
                _ => {
                    let code = match *n {
                        "MIN_PIECE_SIZE" => u64::from(MIN_PIECE_SIZE),
                        "DEFAULT_PIECE_SIZE" => u64::from(DEFAULT_PIECE_SIZE),
                        "MAX_PIECE_SIZE" => u64::from(MAX_PIECE_SIZE),
                        "SMALL_TARGET_PIECES" => SMALL_TARGET_PIECES,
                        "LARGE_PIECE_SIZE" => u64::from(LARGE_PIECE_SIZE),
                        "TARGET_PIECES" => TARGET_PIECES,
                        "MAX_PIECES" => u64::from(MAX_PIECES),
                        "MAX_CONTENT_LEN" => MAX_CONTENT_LEN,
                        "MAX_CAPABILITY_LEN" => MAX_CAPABILITY_LEN as u64,
                        "MAX_TEXT_LEN" => MAX_TEXT_LEN as u64,
                        "MAX_OUTBOARD_CVS" => u64::from(MAX_OUTBOARD_CVS),
                        "MAX_PEX_ADDED" => MAX_PEX_ADDED as u64,
                        "MAX_PEX_DROPPED" => MAX_PEX_DROPPED as u64,
                        "MAX_PEER_ID_LEN" => MAX_PEER_ID_LEN as u64,
                        "MAX_PEX_ADDRS" => MAX_PEX_ADDRS as u64,
                        "MAX_ADDR_LEN" => MAX_ADDR_LEN as u64,
                        "MAX_FRAME_LEN" => MAX_FRAME_LEN as u64,
                        "MAX_CONTROL_FRAME_LEN" => MAX_CONTROL_FRAME_LEN as u64,
                        "MAX_BITFIELD_FRAME_LEN" => MAX_BITFIELD_FRAME_LEN as u64,
                        "MAX_OUTBOARD_FRAME_LEN" => MAX_OUTBOARD_FRAME_LEN as u64,
                        "MAX_PEX_FRAME_LEN" => MAX_PEX_FRAME_LEN as u64,
                        "MAX_OUTSTANDING_REQUESTS" => u64::from(MAX_OUTSTANDING_REQUESTS),
                        "MAX_WHOLE_FILE" => u64::from(MAX_WHOLE_FILE),
                        "MAX_PART_FILE" => MAX_PART_FILE,
                        "MAX_OUTSTANDING_FILE_REQUESTS" => u64::from(MAX_OUTSTANDING_FILE_REQUESTS),
                        "MAX_OUTSTANDING_OUTBOARD_REQUESTS" => {
                            u64::from(MAX_OUTSTANDING_OUTBOARD_REQUESTS)
                        }
                        other => panic!("the spec names a constant the code lacks: {other}"),
                    };
                    assert_eq!(number(v), code, "{n}");
                    checked += 1;
                    continue;
                }
            };
            assert_eq!(v, expected, "{n}");
            checked += 1;
        }
    }
    assert_eq!(checked, 33, "every constant of the table was checked");
}

#[test]
fn spec_message_table_matches_the_type_bytes() {
    let spec = spec();
    for t in MessageType::ALL {
        let row = format!("| `0x{:02x}` | `{}` |", t.to_u8(), t.name());
        assert!(spec.contains(&row), "the spec's message table lacks {row}");
    }
}

#[test]
fn spec_code_lists_match_the_code_enums() {
    let spec = spec();
    let list = |title: &str| -> String {
        let after = spec.split(title).nth(1).expect(title);
        after.split("\n\n").next().unwrap_or("").replace('\n', " ")
    };
    let deny = list("**Deny reasons** (`DenyReason`):");
    for r in DenyReason::KNOWN {
        let item = format!("{} `{r:?}`", r.to_u8());
        assert!(deny.contains(&item), "deny reasons lack {item}");
    }
    let reject = list("**Reject reasons** (`RejectReason`):");
    for r in RejectReason::KNOWN {
        let item = format!("{} `{r:?}`", r.to_u8());
        assert!(reject.contains(&item), "reject reasons lack {item}");
    }
    let close = list("**Close codes** (`CloseCode`):");
    for c in CloseCode::KNOWN {
        let item = format!("{} `{c:?}`", c.to_u8());
        assert!(close.contains(&item), "close codes lack {item}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn frame(msg: &Message<'_>) -> String {
    let mut buf = Vec::new();
    encode(msg, &mut buf).unwrap();
    hex(&buf)
}

#[test]
fn spec_examples_encode_as_documented() {
    let spec = spec();
    let examples = spec
        .split("## 14. Examples")
        .nth(1)
        .unwrap()
        .split("## 15.")
        .next()
        .unwrap()
        .replace("\n  ", " ");
    let has = |s: &str| assert!(examples.contains(s), "the spec lacks example `{s}`");

    has(&frame(&Message::Have { piece: 5 }));
    has(&frame(&Message::Request { piece: 300 }));
    has(&frame(&Message::Reject {
        piece: 7,
        reason: RejectReason::Choked,
    }));
    has(&frame(&Message::Close {
        code: CloseCode::Normal,
        text: "done",
    }));
    let mut hdr = [0; PIECE_HEADER_MAX];
    has(&hex(encode_piece_header(1, 262_144, &mut hdr).unwrap()));

    let empty = ContentId::of(b"");
    has(&empty.to_hex());
    // The hello examples elide the middle of the id with "…".
    let elide = |full: String, keep_front: usize, keep_back: usize| {
        let (head, _) = full.split_at(3 * (10 + keep_front));
        let tail = &full[full.len() - (3 * keep_back - 1)..];
        (head.to_string(), tail.to_string())
    };
    let initiator = frame(&Message::Hello(Hello::new(empty)));
    let (head, tail) = elide(initiator, 3, 5);
    has(&format!("{head}… {tail}"));
    let responder = frame(&Message::Hello(Hello {
        piece_size: Some(DEFAULT_PIECE_SIZE),
        content_len: Some(0),
        ..Hello::new(empty)
    }));
    let (head, tail) = elide(responder, 2, 6);
    has(&format!("{head}… {tail}"));
}
