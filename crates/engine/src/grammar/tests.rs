//! The grammar layer over llguidance: which schemas compile, which are refused (naming the
//! keyword and where), what text each accepts byte by byte, the layout, tool-call framing, and
//! masks over a multi-byte vocabulary.

use serde_json::json;

use super::*;

fn schema(value: serde_json::Value) -> Grammar {
    Grammar::from_schema(&value).unwrap_or_else(|err| panic!("{value}: {err}"))
}

#[test]
fn keywords_beyond_the_old_subset_compile_and_hold() {
    // oneOf, multipleOf, patternProperties, prefixItems, allOf, min/maxProperties: refused before llguidance.
    let one_of = schema(json!({"oneOf": [{"type": "integer"}, {"type": "string", "maxLength": 3}]}));
    assert!(matches!(one_of.check_text(b"12"), TextMatch::Complete | TextMatch::Finished));
    assert_eq!(one_of.check_text(b"\"abc\""), TextMatch::Finished);
    assert_eq!(one_of.check_text(b"true"), TextMatch::Rejected);
    let multiple = schema(json!({"type": "integer", "multipleOf": 5, "minimum": 0, "maximum": 20}));
    assert!(matches!(multiple.check_text(b"15"), TextMatch::Complete | TextMatch::Finished));
    assert_eq!(multiple.check_text(b"13"), TextMatch::Rejected);
    let pattern_props = schema(json!({"type": "object", "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": false}));
    assert_eq!(pattern_props.check_text(b"{\"x-a\": 1}"), TextMatch::Finished);
    assert_eq!(pattern_props.check_text(b"{\"y\""), TextMatch::Rejected);
    let tuple = schema(json!({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}], "items": false}));
    assert_eq!(tuple.check_text(b"[\"a\", 1]"), TextMatch::Finished);
    assert_eq!(tuple.check_text(b"[1"), TextMatch::Rejected);
    let regex = schema(json!({"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"}));
    assert_eq!(regex.check_text(b"\"AB-123\""), TextMatch::Finished);
    assert_eq!(regex.check_text(b"\"AB-12a"), TextMatch::Rejected);
    let date = schema(json!({"type": "string", "format": "date"}));
    assert_eq!(date.check_text(b"\"2026-02-28\""), TextMatch::Finished);
    assert_eq!(date.check_text(b"\"2026-13"), TextMatch::Rejected);
    let recursive = schema(json!({"$defs": {"node": {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}}, "required": ["next"], "additionalProperties": false}}, "$ref": "#/$defs/node"}));
    assert_eq!(recursive.check_text(b"{\"next\": {\"next\": null}}"), TextMatch::Finished);
}

#[test]
fn layout_is_fixed_separators_and_no_free_whitespace() {
    let object = schema(json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "array", "items": {"type": "integer"}}}, "required": ["a", "b"], "additionalProperties": false}));
    assert_eq!(object.check_text(b"{\"a\": 1, \"b\": [1, 2]}"), TextMatch::Finished);
    assert_eq!(object.check_text(b"{\"a\":1"), TextMatch::Rejected);
    assert_eq!(object.check_text(b"{\n"), TextMatch::Rejected);
    assert_eq!(object.check_text(b"{\"a\": 1,  "), TextMatch::Rejected);
    // Properties come in schema order.
    assert_eq!(object.check_text(b"{\"b\""), TextMatch::Rejected);
    let any = Grammar::json_object();
    assert_eq!(any.check_text(b"{\"x\": [true, null, \"s\", 1.5e3, {}]}"), TextMatch::Finished);
    assert_eq!(any.check_text(b"[1]"), TextMatch::Rejected);
}

#[test]
fn undeclared_keys_are_not_generated_next_to_declared_properties() {
    // As before llguidance: extra keys are valid JSON Schema, but a model never needs them.
    let open = schema(json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}));
    assert_eq!(open.check_text(b"{\"a\": 1}"), TextMatch::Finished);
    assert_eq!(open.check_text(b"{\"a\": 1, "), TextMatch::Rejected);
    let nested = schema(json!({"type": "array", "items": {"type": "object", "properties": {"b": {"type": "boolean"}}}}));
    assert_eq!(nested.check_text(b"[{\"b\": true}, {}]"), TextMatch::Finished);
    assert_eq!(nested.check_text(b"[{\"c\""), TextMatch::Rejected);
    // A map (no properties) still takes any key, and allOf branches are left open.
    let map = schema(json!({"type": "object", "additionalProperties": {"type": "integer"}}));
    assert_eq!(map.check_text(b"{\"any\": 3}"), TextMatch::Finished);
    let all_of = schema(json!({"allOf": [{"properties": {"a": {"type": "integer"}}, "required": ["a"]}, {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]}));
    assert_ne!(all_of.check_text(b"{\"a\": 1, \"b\": 2}"), TextMatch::Rejected);
}

#[test]
fn unsupported_keywords_are_refused_with_their_path() {
    for (value, path, keyword) in [
        (json!({"type": "array", "uniqueItems": true}), "#", "uniqueItems"),
        (json!({"type": "object", "properties": {"tags": {"type": "array", "contains": {"const": 1}}}}), "#/properties/tags", "contains"),
        (json!({"anyOf": [{"type": "string"}, {"not": {"type": "null"}}]}), "#/anyOf/1", "not"),
        (json!({"$defs": {"a/b": {"if": {"type": "string"}}}}), "#/$defs/a~1b", "if"),
        (json!({"type": "object", "additionalProperties": {"propertyNames": {"maxLength": 3}}}), "#/additionalProperties", "propertyNames"),
    ] {
        let err = Grammar::from_schema(&value).unwrap_err();
        assert_eq!(err.path, path, "{value}: {err}");
        assert!(err.message.contains(keyword), "{value}: {err}");
    }
    // What llguidance itself refuses is a schema error too, with its reason.
    for value in [json!({"type": "string", "format": "not-a-format"}), json!({"type": "string", "pattern": "(?!a)"}), json!("object"), json!(false), json!({"type": "integer", "minimum": 5, "maximum": 1})] {
        assert!(Grammar::from_schema(&value).is_err(), "{value}");
    }
    // Unknown extension keys and annotations are fine.
    schema(json!({"type": "string", "x-custom": 1, "title": "t", "description": "d", "examples": ["a"]}));
}

#[test]
fn hostile_schemas_are_refused_or_bounded() {
    let mut deep = json!({"type": "integer"});
    for _ in 0..200 {
        deep = json!({"type": "object", "properties": {"a": deep}});
    }
    assert!(Grammar::from_schema(&deep).is_err());
    // A pattern with huge nested repetition is matched lazily (derivatives under fuel limits):
    // it compiles and masks follow it, where a subset construction would explode.
    let huge = schema(json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^((a{1,1000}){1,1000}){1,1000}$"}}, "required": ["a"]}));
    assert_eq!(huge.check_text(b"{\"a\": \"aaaa"), TextMatch::Prefix);
    assert_eq!(huge.check_text(b"{\"a\": \"ab"), TextMatch::Rejected);
}

#[test]
fn tool_calls_are_framed_and_name_first() {
    let functions = vec![("get".to_owned(), json!({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"], "additionalProperties": false})), ("ping".to_owned(), json!({"type": "object"}))];
    let one = Grammar::tool_calls(&functions, "<tool_call>\n", "\n</tool_call>", 1).unwrap();
    assert_eq!(one.check_text(b"<tool_call>\n{\"name\": \"get\", \"arguments\": {\"x\": 3}}\n</tool_call>"), TextMatch::Finished);
    assert_eq!(one.check_text(b"<tool_call>\n{\"arguments\""), TextMatch::Rejected);
    assert_eq!(one.check_text(b"<tool_call>\n{\"name\": \"other\""), TextMatch::Rejected);
    let many = Grammar::tool_calls(&functions, "<tool_call>\n", "\n</tool_call>", 2).unwrap();
    let call = b"<tool_call>\n{\"name\": \"ping\", \"arguments\": {}}\n</tool_call>";
    assert_eq!(many.check_text(call), TextMatch::Complete);
    assert_eq!(many.check_text(&[&call[..], b"\n", &call[..]].concat()), TextMatch::Finished, "at most two calls");
    assert!(Grammar::tool_calls(&[], "<", ">", 1).is_err());
}

#[test]
fn masks_over_multi_byte_tokens_follow_the_grammar() {
    // A vocabulary with whole-word tokens, a token spanning a quote, and an end token.
    let words: Vec<&[u8]> = vec![b"{", b"}", b"\"", b"\"name\"", b": ", b"\"ab", b"c\"", b"abc", b" ", b"x", b"<end>", b"\"}", b"1", b", "];
    let tokens: Vec<Vec<u8>> = words.iter().map(|w| w.to_vec()).collect();
    let end = 10;
    let vocabulary = Vocabulary::new(tokens.clone(), &[end]).unwrap();
    let grammar = schema(json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 3}}, "required": ["name"], "additionalProperties": false}));
    let mut constraint = vocabulary.start(&grammar).unwrap();
    let allowed = |c: &mut Constraint| {
        let mask = c.mask().unwrap();
        ((0..tokens.len() as Token).filter(|t| *t != end && mask.allows(*t)).map(|t| String::from_utf8_lossy(&tokens[t as usize]).into_owned()).collect::<Vec<_>>(), mask.can_end)
    };
    assert_eq!(allowed(&mut constraint), (vec!["{".to_owned()], false));
    for token in [0, 3, 4] {
        assert!(constraint.advance(token));
    }
    let (next, _) = allowed(&mut constraint);
    assert!(next.contains(&"\"ab".to_owned()) && next.contains(&"\"".to_owned()) && !next.contains(&"abc".to_owned()), "{next:?}");
    assert!(constraint.advance(5)); // "ab
    let (next, _) = allowed(&mut constraint);
    assert!(next.contains(&"c\"".to_owned()) && next.contains(&"\"}".to_owned()) && !next.contains(&"abc".to_owned()), "{next:?}");
    assert!(constraint.advance(6)); // c"
    assert!(!constraint.advance(9), "x is not allowed after the string");
}

#[test]
fn citations_name_only_given_sources() {
    let cited = Grammar::citations(2).unwrap();
    assert_eq!(cited.check_text(b"Cats purr [1] and dogs bark [2]."), TextMatch::Complete);
    assert_eq!(cited.check_text(b"Plain text, no citation."), TextMatch::Complete);
    assert_eq!(cited.check_text(b"See [1"), TextMatch::Prefix);
    assert_eq!(cited.check_text(b"See [3]"), TextMatch::Rejected);
    assert_eq!(cited.check_text(b"See [12]"), TextMatch::Rejected);
    assert_eq!(cited.check_text(b"[x]"), TextMatch::Rejected);
    assert!(Grammar::citations(0).is_err());
    let many = Grammar::citations(12).unwrap();
    assert_eq!(many.check_text(b"[12] and [1]"), TextMatch::Complete);
    assert_eq!(many.check_text(b"[13]"), TextMatch::Rejected);
}
