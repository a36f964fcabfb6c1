"""Malformed SQS bodies: each must be rejected by the forwarder and end in the DLQ.

Every body here is a legal SQS message body (SQS only allows #x9 #xA #xD and #x20 upwards), so the
producer can send it; none of them is a UTF-8 JSON object within our limits.
"""

DEEP = '{"a":' * 40 + "1" + "}" * 40
OVERSIZED = '{"event_id": "evt_big", "blob": "' + "x" * (130 * 1024) + '"}'

MALFORMED: dict[str, str] = {
    "truncated_object": '{"event_id": "evt_1", "amount_minor": 12',
    "truncated_string": '{"event_id": "evt_',
    "unterminated_string": '{"event_id": "abc}',
    "whitespace_only": "   \n\t ",
    "bare_array": '[{"event_id": "evt_1"}]',
    "bare_string": '"evt_1"',
    "double_encoded_json": '"{\\"event_id\\": \\"evt_1\\"}"',
    "bare_number": "42",
    "bare_true": "true",
    "bare_null": "null",
    "trailing_garbage": '{"event_id": "evt_1"} trailing',
    "two_objects": '{"event_id": "evt_1"}{"event_id": "evt_2"}',
    "single_quotes": "{'event_id': 'evt_1'}",
    "unquoted_keys": '{event_id: "evt_1"}',
    "trailing_comma": '{"event_id": "evt_1",}',
    "missing_colon": '{"event_id" "evt_1"}',
    "nan_literal": '{"amount_minor": NaN}',
    "infinity_literal": '{"amount_minor": Infinity}',
    "number_overflow": '{"amount_minor": 1e999}',
    "hex_number": '{"amount_minor": 0x10}',
    "leading_zero": '{"amount_minor": 012}',
    "js_undefined": '{"amount_minor": undefined}',
    "comment": '{"event_id": "evt_1" /* note */}',
    "raw_tab_in_string": '{"event_id": "evt\t1"}',
    "raw_newline_in_string": '{"event_id": "evt\n1"}',
    "invalid_escape": '{"event_id": "evt\\x41"}',
    "lone_high_surrogate": '{"event_id": "\\ud800"}',
    "reversed_surrogates": '{"event_id": "\\udc00\\ud800"}',
    "byte_order_mark": '\ufeff{"event_id": "evt_1"}',
    "parenthesised": '({"event_id": "evt_1"})',
    "xml": '<event id="evt_1"/>',
    "csv": "evt_1,payment.captured,1999,EUR",
    "base64_blob": "eyJldmVudF9pZCI6ICJldnRfMSJ9",
    "latin1_binary_as_text": "\x89PNG\r\n\x85\xff\xfe\xc3\x28 \x80",
    "nested_too_deep": DEEP,
    "oversized": OVERSIZED,
}
