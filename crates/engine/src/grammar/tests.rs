//! The grammar compiler and matcher against random walks, a brute-force mask and an independent
//! validator of the supported JSON Schema subset.

use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};

use super::*;

/// A toy vocabulary: every printable ASCII byte, multi-byte pieces that cross JSON structure,
/// split UTF-8 bytes and a control token with no bytes.
fn vocab() -> Vec<Vec<u8>> {
    let mut tokens: Vec<Vec<u8>> = vec![Vec::new()];
    tokens.extend((0x20u8..0x7f).map(|b| vec![b]));
    for piece in [
        "{\"", "\":", "\", \"", "\"}", " \"", "true", "null", "false", "123", "0.5", "-1", "e+9", "\n", "\n  ", "\t", "\\\"", "\\u00e9", "\\n", "name", "\"name\"", "\": \"", "},{", "[{", "}]", "é", "日本", "a\"b", "\"]", ", ", "1,", "\"\"", "ab",
        "abc", "abcdef",
    ] {
        tokens.push(piece.as_bytes().to_vec());
    }
    tokens.push(vec![0xc3]);
    tokens.push(vec![0xa9]);
    tokens.push(vec![0xe6, 0x97]);
    tokens.push(vec![0xa5]);
    tokens.push(vec![0xff]);
    tokens
}

fn brute_mask(matcher: &Matcher, tokens: &[Vec<u8>]) -> Vec<bool> {
    tokens.iter().map(|bytes| !bytes.is_empty() && matcher.clone().advance(bytes)).collect()
}

/// Random walks through the grammar; every mask equals the brute-force one, and every output that
/// ends parses and validates.
fn walk(grammar: Grammar, schema: Option<&Value>, seed: u64, trials: usize) -> usize {
    let tokens = vocab();
    let index = VocabIndex::new(tokens.clone());
    let grammar = Arc::new(grammar);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut scratch = MaskScratch::default();
    let mut completed = 0;
    for _ in 0..trials {
        let mut matcher = grammar.start();
        let mut out = Vec::new();
        for _ in 0..400 {
            let bits = matcher.mask(&index, &mut scratch).to_vec();
            let brute = brute_mask(&matcher, &tokens);
            for (t, expected) in brute.iter().enumerate() {
                assert_eq!(is_allowed(&bits, t as Token), *expected, "token {:?} after {:?}", String::from_utf8_lossy(&tokens[t]), String::from_utf8_lossy(&out));
            }
            if matcher.is_finished() || (matcher.can_end() && rng.gen_bool(0.3)) {
                break;
            }
            let allowed: Vec<usize> = (0..tokens.len()).filter(|t| brute[*t]).collect();
            assert!(!allowed.is_empty() || matcher.can_end(), "dead end after {:?}", String::from_utf8_lossy(&out));
            if allowed.is_empty() {
                break;
            }
            // Prefer closing tokens now and then so walks end.
            let t = allowed[rng.gen_range(0..allowed.len())];
            assert!(matcher.advance(&tokens[t]));
            out.extend_from_slice(&tokens[t]);
        }
        if matcher.can_end() {
            completed += 1;
            let text = String::from_utf8(out).expect("valid UTF-8");
            if let Some(schema) = schema {
                let value: Value = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{text:?} does not parse: {err}"));
                if let Err(why) = validate(&value, schema, schema) {
                    panic!("{text:?} does not validate: {why}");
                }
            }
        }
    }
    completed
}

/// The subset of JSON Schema the compiler supports, checked independently.
fn validate(value: &Value, schema: &Value, root: &Value) -> Result<(), String> {
    let Some(map) = schema.as_object() else { return Ok(()) };
    if let Some(r) = map.get("$ref").and_then(Value::as_str) {
        let target = if r == "#" { root } else { root.pointer(&r[1..]).unwrap() };
        return validate(value, target, root);
    }
    if let Some(list) = map.get("anyOf").and_then(Value::as_array) {
        return if list.iter().any(|s| validate(value, s, root).is_ok()) { Ok(()) } else { Err(format!("{value} matches no anyOf")) };
    }
    if let Some(list) = map.get("enum").and_then(Value::as_array) {
        if !list.contains(value) {
            return Err(format!("{value} not in enum"));
        }
    }
    if let Some(c) = map.get("const") {
        if c != value {
            return Err(format!("{value} is not {c}"));
        }
    }
    if let Some(types) = map.get("type") {
        let types: Vec<&str> = match types {
            Value::String(s) => vec![s.as_str()],
            Value::Array(l) => l.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        if !types.iter().any(|t| type_matches(t, value)) {
            return Err(format!("{value} is not of type {types:?}"));
        }
    }
    match value {
        Value::Number(n) => {
            let x = n.as_f64().unwrap();
            let fails = |key: &str, bad: &dyn Fn(f64, f64) -> bool| map.get(key).and_then(Value::as_f64).is_some_and(|b| bad(x, b));
            if fails("minimum", &|x, b| x < b) || fails("maximum", &|x, b| x > b) || fails("exclusiveMinimum", &|x, b| x <= b) || fails("exclusiveMaximum", &|x, b| x >= b) {
                return Err(format!("{value} is out of bounds"));
            }
        }
        Value::String(s) => {
            if let Some(pattern) = map.get("pattern").and_then(Value::as_str) {
                if !crate::regex::compile(pattern).unwrap().matches(s) {
                    return Err(format!("{value} does not match {pattern}"));
                }
            }
            if let Some(format) = map.get("format").and_then(Value::as_str) {
                if !valid_format(format, s) {
                    return Err(format!("{value} is not a valid {format}"));
                }
            }
            let n = s.chars().count() as u64;
            if map.get("minLength").and_then(Value::as_u64).is_some_and(|m| n < m) || map.get("maxLength").and_then(Value::as_u64).is_some_and(|m| n > m) {
                return Err(format!("{value} has the wrong length"));
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if map.get("minItems").and_then(Value::as_u64).is_some_and(|m| n < m) || map.get("maxItems").and_then(Value::as_u64).is_some_and(|m| n > m) {
                return Err(format!("{value} has the wrong item count"));
            }
            if let Some(item_schema) = map.get("items") {
                for item in items {
                    validate(item, item_schema, root)?;
                }
            }
        }
        Value::Object(object) => {
            let props = map.get("properties").and_then(Value::as_object);
            for key in map.get("required").and_then(Value::as_array).into_iter().flatten() {
                if !object.contains_key(key.as_str().unwrap()) {
                    return Err(format!("{value} lacks {key}"));
                }
            }
            for (key, v) in object {
                match props.and_then(|p| p.get(key)) {
                    Some(s) => validate(v, s, root)?,
                    None => match map.get("additionalProperties") {
                        Some(Value::Bool(false)) => return Err(format!("{value} has extra key {key}")),
                        Some(s @ Value::Object(_)) => validate(v, s, root)?,
                        _ => {}
                    },
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Format checks written independently of the grammar's patterns (calendar arithmetic, field
/// ranges), for the formats the walks use.
fn valid_format(format: &str, text: &str) -> bool {
    let number = |t: &str| t.parse::<u32>().ok().filter(|_| t.chars().all(|c| c.is_ascii_digit()));
    let date = |t: &str| -> bool {
        let parts: Vec<&str> = t.split('-').collect();
        let [y, m, d] = parts.as_slice() else { return false };
        let (Some(y), Some(m), Some(d)) = (number(y), number(m), number(d)) else { return false };
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=9999).contains(&y) && (1..=12).contains(&m) && d >= 1 && d <= days[m as usize - 1]
    };
    match format {
        "date" => text.len() == 10 && date(text),
        "uuid" => text.len() == 36 && text.char_indices().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() }),
        "date-time" => text.split_once('T').is_some_and(|(d, t)| {
            let (clock, zone) = if let Some(c) = t.strip_suffix('Z') {
                (c, "00:00")
            } else if t.len() > 6 {
                (&t[..t.len() - 6], &t[t.len() - 5..])
            } else {
                return false;
            };
            let hms: Vec<&str> = clock.split('.').next().unwrap().split(':').collect();
            date(d) && hms.len() == 3 && number(hms[0]).is_some_and(|h| h < 24) && number(hms[1]).is_some_and(|m| m < 60) && number(hms[2]).is_some_and(|s| s < 60) && zone.len() == 5
        }),
        _ => true,
    }
}

fn check_schema(schema: Value, seed: u64) {
    let grammar = Grammar::from_schema(&schema).unwrap_or_else(|err| panic!("{schema}: {err}"));
    let completed = walk(grammar, Some(&schema), seed, 40);
    assert!(completed > 0, "no walk completed for {schema}");
}

#[test]
fn any_object_walks_parse() {
    let completed = walk(Grammar::json_object(), Some(&json!({"type": "object"})), 1, 60);
    assert!(completed > 10);
}

#[test]
fn schemas_walks_validate() {
    check_schema(json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 6}, "age": {"type": "integer"}, "ok": {"type": "boolean"}}, "required": ["name", "age", "ok"], "additionalProperties": false}), 2);
    check_schema(json!({"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": ["string", "null"]}, "c": {"enum": [1, 10, "x", null]}}, "required": ["c"]}), 3);
    check_schema(json!({"type": "array", "items": {"type": "string", "minLength": 2, "maxLength": 3}, "minItems": 1, "maxItems": 3}), 4);
    check_schema(
        json!({"anyOf": [{"type": "object", "properties": {"kind": {"const": "a"}, "x": {"type": "integer"}}, "required": ["kind", "x"], "additionalProperties": false}, {"type": "object", "properties": {"kind": {"const": "ab"}, "y": {"type": "string"}}, "required": ["kind", "y"], "additionalProperties": false}]}),
        5,
    );
    check_schema(
        json!({"$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}}, "required": ["v", "kids"], "additionalProperties": false}}, "$ref": "#/$defs/node"}),
        6,
    );
    check_schema(json!({"type": "object", "additionalProperties": {"type": "integer"}}), 7);
    check_schema(json!({"type": "integer"}), 8);
    check_schema(json!({"type": "string"}), 9);
}

#[test]
fn required_properties_appear_in_order() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}, "c": {"type": "integer"}}, "required": ["b"]});
    let grammar = Arc::new(Grammar::from_schema(&schema).unwrap());
    let mut m = grammar.start();
    assert!(!m.advance(b"{\"c\""), "c cannot come before the required b");
    let mut m2 = grammar.start();
    assert!(m2.advance(b"{\"a\": 1, \"b\": 2"));
    assert!(!m2.can_end());
    assert!(!m2.clone().advance(b", \"a\""), "no key twice");
    assert!(m2.advance(b"}"));
    assert!(m2.is_finished());
    assert!(m.advance(b"{\"b\":2,\"c\":3}"));
}

#[test]
fn strings_count_code_points_and_escapes() {
    let grammar = Arc::new(Grammar::from_schema(&json!({"type": "string", "minLength": 2, "maxLength": 3})).unwrap());
    let mut m = grammar.start();
    assert!(m.advance("\"é".as_bytes()));
    assert!(!m.clone().advance(b"\""), "too short");
    assert!(m.advance(b"\\u00e9\\n"));
    assert!(!m.clone().advance(b"x"), "too long");
    assert!(m.advance(b"\""));
    assert!(m.is_finished());
    let mut bad = grammar.start();
    assert!(!bad.advance(&[b'"', 0xc3, b'a']), "split UTF-8 must continue");
    assert!(!grammar.start().advance(b"\"a\nb"), "raw control bytes");
}

#[test]
fn numbers_end_by_lookahead() {
    let grammar = Arc::new(Grammar::from_schema(&json!({"type": "array", "items": {"type": "number"}})).unwrap());
    let mut m = grammar.start();
    assert!(m.advance(b"[-0.5e+3"));
    assert!(!m.clone().advance(b"."), "no dot after the exponent");
    assert!(!m.clone().advance(b"45"), "two exponent digits at most");
    assert!(m.advance(b",12"));
    assert!(!grammar.start().advance(b"[01"), "no leading zeros");
    assert!(m.advance(b"]"));
    assert!(m.is_finished());
    let int = Arc::new(Grammar::from_schema(&json!({"type": "integer"})).unwrap());
    let mut m = int.start();
    assert!(m.advance(b"42"));
    assert!(m.can_end() && !m.is_finished());
    assert!(!m.clone().advance(b".5"));
}

#[test]
fn framing_wraps_and_repeats() {
    let call = Grammar::object(vec![
        ("name".into(), Grammar::constant(&json!("get"))),
        ("arguments".into(), Grammar::from_schema(&json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": false})).unwrap()),
    ]);
    let grammar = Arc::new(call.framed(Framing { prefix: b"<c>".to_vec(), suffix: b"</c>".to_vec(), separator: Some(b"\n".to_vec()), max_items: 2 }));
    let mut m = grammar.start();
    assert!(!m.clone().advance(b"{"));
    assert!(m.advance(br#"<c>{"name": "get", "arguments": {"q": "x"}}</c>"#));
    assert!(m.can_end() && !m.is_finished());
    assert!(m.advance(
        br#"
<c>{"name":"get","arguments":{"q":""}}</c>"#
    ));
    assert!(m.is_finished());
    walk((*grammar).clone(), None, 11, 20);
}

#[test]
fn unsupported_features_are_named() {
    for (schema, needle) in [
        (json!({"type": "string", "pattern": "(?=a)b"}), "lookaround"),
        (json!({"type": "string", "format": "ipv6"}), "format \"ipv6\" is not supported"),
        (json!({"type": "string", "format": "date", "pattern": "^2"}), "together"),
        (json!({"type": "number", "minimum": 3, "exclusiveMaximum": 3}), "no number"),
        (json!({"type": "integer", "minimum": 3, "maximum": 2}), "no integer"),
        (json!({"oneOf": [{"type": "string"}]}), "oneOf"),
        (json!({"$ref": "https://example.com/s.json"}), "local references"),
        (json!({"$ref": "#/$defs/missing"}), "points at nothing"),
        (json!({"type": "object", "properties": {"a": {"type": "bogus"}}}), "bogus"),
        (json!({"type": "object", "required": ["z"]}), "\"z\""),
        (json!(false), "false schema"),
        (json!({"$ref": "#"}), "refers to itself"),
        (json!({"$defs": {"a": {"anyOf": [{"$ref": "#/$defs/b"}]}, "b": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}), "refers to itself"),
    ] {
        let err = Grammar::from_schema(&schema).unwrap_err();
        assert!(err.to_string().contains(needle), "{schema}: {err}");
    }
    let err = Grammar::from_schema(&json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "\\1"}}})).unwrap_err();
    assert_eq!(err.path, "#/properties/a");
}

#[test]
fn whitespace_runs_are_bounded() {
    let grammar = Arc::new(Grammar::json_object());
    let mut m = grammar.start();
    assert!(m.advance(b"{"));
    assert!(m.advance(&[b' '; 16]));
    assert!(!m.clone().advance(b" "));
    assert!(m.advance(b"\"k\": \"a                                   b\"}"));
}

#[test]
fn layout_is_one_line_break_and_one_space_after_colons() {
    let grammar = Arc::new(Grammar::json_object());
    let mut m = grammar.start();
    assert!(m.advance(b"{\n  \"a\": 1,\n  \"b\""));
    assert!(!m.clone().advance(b" "), "no space before a colon");
    assert!(m.advance(b":"));
    assert!(!m.clone().advance(b"\n"), "no line break after a colon");
    assert!(!m.clone().advance(b"  "), "one space after a colon");
    assert!(m.advance(b" [\n    1\n  ]"));
    assert!(!m.clone().advance(b"\n\n}"), "no blank lines");
    assert!(m.advance(b"\n}"));
    assert!(m.is_finished());
}

#[test]
fn integer_bounds_hold_digit_by_digit() {
    for (schema, inside, outside) in [
        (json!({"type": "integer", "minimum": 1, "maximum": 10}), vec!["1", "7", "10"], vec!["0", "11", "-1", "100"]),
        (json!({"type": "integer", "minimum": -5, "exclusiveMaximum": 3}), vec!["-5", "-1", "0", "2"], vec!["-6", "3", "-10"]),
        (json!({"type": "integer", "minimum": 100}), vec!["100", "12345"], vec!["99", "0", "-100"]),
        (json!({"type": "integer", "maximum": -10}), vec!["-10", "-999"], vec!["-9", "0", "5"]),
    ] {
        check_bounds(&schema, &inside, &outside, 21);
    }
}

#[test]
fn arbitrary_bytes_never_panic_and_states_stay_small() {
    let schemas = [
        json!({"anyOf": [{"type": "object", "properties": {"a": {"type": "integer", "minimum": -3, "maximum": 3}}, "required": ["a"]}, {"type": "object", "properties": {"a": {"type": "string"}}}, {"type": "array", "items": {"$ref": "#"}}, {"type": "null"}]}),
        json!({"type": "array", "items": {"anyOf": [{"enum": [1, 10, 100, "a", "ab", null]}, {"type": "number"}, {"type": "boolean"}]}}),
        json!({"type": "object", "additionalProperties": {"anyOf": [{"type": "string", "maxLength": 2}, {"type": "object"}]}}),
    ];
    let alphabet: Vec<u8> = br#"{}[]:,"\ -+.eE0123456789abcdefnulltrue"#.iter().copied().chain([b'\n', 0xc3, 0xa9, 0xe6, 0x00, 0xff]).collect();
    let tokens = vocab();
    let index = VocabIndex::new(tokens);
    let mut scratch = MaskScratch::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(77);
    for schema in &schemas {
        let grammar = Arc::new(Grammar::from_schema(schema).unwrap());
        for _ in 0..300 {
            let mut m = grammar.start();
            for _ in 0..rng.gen_range(0..120) {
                let byte = if rng.gen_bool(0.9) { alphabet[rng.gen_range(0..alphabet.len())] } else { rng.gen() };
                let _ = m.advance(&[byte]);
                assert!(m.state.bounds.len() <= MAX_STACKS);
            }
            let _ = (m.can_end(), m.is_finished());
            let _ = m.mask(&index, &mut scratch);
        }
    }
}

#[test]
fn patterns_and_formats_hold_in_walks() {
    check_schema(
        json!({"type": "object", "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{2,3}$"}, "when": {"type": "string", "format": "date"}, "at": {"type": "string", "format": "date-time"}, "id": {"type": "string", "format": "uuid"}, "tag": {"type": "string", "pattern": "b", "maxLength": 5}}, "required": ["code", "when", "at", "id", "tag"], "additionalProperties": false}),
        31,
    );
    let grammar = Arc::new(Grammar::from_schema(&json!({"type": "string", "format": "date"})).unwrap());
    assert!(grammar.start().advance(b"\"2024-02-28\""));
    assert!(!grammar.start().advance(b"\"2024-02-30"), "no impossible day");
    assert!(!grammar.start().advance(b"\"2024-0\\u0031"), "no \\u escapes under a pattern");
    let mut m = grammar.start();
    assert!(m.advance(b"\"2024-12-3"));
    assert!(!m.clone().advance(b"\""), "an incomplete date does not close");
}

#[test]
fn number_bounds_hold_digit_by_digit() {
    for (schema, inside, outside) in [
        (json!({"type": "number", "minimum": 0, "maximum": 1}), vec!["0", "0.5", "1", "0.999", "1.0"], vec!["1.5", "-0.1", "2", "1.01", "1e0"]),
        (json!({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 10}), vec!["0.001", "9.99", "5"], vec!["0", "10", "-1", "10.0"]),
        (json!({"type": "number", "minimum": -2.5}), vec!["-2.5", "-1", "100.25"], vec!["-2.51", "-3"]),
        (json!({"type": ["number", "null"], "maximum": -0.5}), vec!["-0.5", "-7.25", "null"], vec!["-0.4", "0", "3"]),
    ] {
        check_bounds(&schema, &inside, &outside, 41);
    }
}

/// Whole values inside and outside a bounded schema, then random walks of objects using it.
fn check_bounds(schema: &Value, inside: &[&str], outside: &[&str], seed: u64) {
    let grammar = Arc::new(Grammar::from_schema(schema).unwrap());
    for text in inside {
        let mut m = grammar.start();
        assert!(m.advance(text.as_bytes()) && m.can_end(), "{schema}: {text} should be accepted");
    }
    for text in outside {
        let mut m = grammar.start();
        assert!(!(m.advance(text.as_bytes()) && m.can_end()), "{schema}: {text} should be refused");
    }
    check_schema(json!({"type": "object", "properties": {"x": schema, "xs": {"type": "array", "items": schema, "maxItems": 3}}, "required": ["x", "xs"], "additionalProperties": false}), seed);
}
