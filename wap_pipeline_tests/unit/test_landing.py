import json
from datetime import UTC, datetime, timedelta

from wap_pipeline.ingest.landing import (
    LandingCursor,
    LandingObject,
    Manifest,
    advance_cursor,
    group_into_batches,
    make_batch_id,
    parse_notification,
    select_announced,
)

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def obj(key: str, seconds: float) -> LandingObject:
    return LandingObject(f"landing/2026/11/28/12/{key}", 10, T0 + timedelta(seconds=seconds))


def test_announced_objects_not_claimed_are_taken_once_oldest_first():
    objects = [obj("b", 2), obj("a", 1), obj("c", 3), obj("a", 1)]  # "a" announced twice
    fresh = select_announced(objects, LandingCursor(), claimed={objects[2].key})
    assert [o.key.rsplit("/", 1)[1] for o in fresh] == ["a", "b"]


def test_a_notification_delivered_again_does_not_batch_a_file_twice():
    first = [obj("x", 5), obj("y", 5)]
    cursor = advance_cursor(LandingCursor(), first, [])
    assert select_announced([obj("x", 5), obj("z", 6)], cursor, claimed=set()) == [obj("z", 6)]


def test_a_late_file_under_an_old_hour_folder_is_taken():
    """Firehose names a file after its oldest record's arrival: a delivery retried for hours lands under
    yesterday's folder. Announced, it is batched like any other (a listing from the watermark missed it)."""
    cursor = advance_cursor(LandingCursor(), [obj("new", 3600)], [])
    late = LandingObject("landing/2026/11/27/09/stream-1-late", 10, T0 + timedelta(seconds=3700))
    assert select_announced([late], cursor, set()) == [late]


def test_cursor_round_trips_and_prunes_keys_outside_the_window():
    cursor = advance_cursor(LandingCursor(), [obj("old", 0), obj("new", 3600)], [])
    assert cursor.recent == {obj("new", 3600).key}
    assert LandingCursor.from_json(cursor.to_json()) == cursor


def test_s3_notifications_are_parsed_with_their_keys_decoded_and_test_events_skipped():
    body = json.dumps(
        {
            "Records": [
                {
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-11-28T12:00:05.000Z",
                    "s3": {"object": {"key": "landing%2F2026%2F11%2F28%2F12%2Fstream+1-a", "size": 42}},
                },
                {
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-11-28T12:00:06.000Z",
                    "s3": {"object": {"key": "batches%2Fb1.json", "size": 9}},
                },
                {
                    "eventName": "ObjectRemoved:Delete",
                    "eventTime": "2026-11-28T12:00:07Z",
                    "s3": {"object": {"key": "x"}},
                },
            ]
        }
    )
    assert parse_notification(body, "landing/") == [
        LandingObject("landing/2026/11/28/12/stream 1-a", 42, T0 + timedelta(seconds=5))
    ]
    assert parse_notification(json.dumps({"Event": "s3:TestEvent", "Service": "Amazon S3"}), "landing/") == []


def test_batches_are_bounded_and_ids_sort_by_creation():
    objects = [obj(str(i), i) for i in range(5)]
    batches = group_into_batches(objects, max_files=2, created=T0)
    assert [len(b.files) for b in batches] == [2, 2, 1]
    ids = [b.batch_id for b in batches]
    assert ids == sorted(ids) and ids[0] == make_batch_id(T0, 0) == "20261128T120000000Z-000"
    assert batches[0].bookmark == objects[1].key


def test_manifest_round_trips():
    manifest = Manifest("b1", (obj("a", 1), obj("b", 2)))
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_a_batch_reference_time_is_when_its_newest_file_landed_and_is_kept_in_the_manifest():
    manifest = Manifest("b1", (obj("b", 30), obj("a", 90), obj("c", 60)))
    assert manifest.landed_at == T0 + timedelta(seconds=90)
    assert Manifest.from_json(manifest.to_json()).landed_at == manifest.landed_at


def test_a_new_batch_never_sorts_before_an_existing_one_even_with_a_clock_behind():
    existing = make_batch_id(T0, 7)
    behind = T0 - timedelta(minutes=5)
    batches = group_into_batches([obj("a", 0), obj("b", 1)], max_files=1, created=behind, after=existing)
    assert [b.batch_id for b in batches] == sorted(b.batch_id for b in batches)
    assert batches[0].batch_id > existing, "a ledger's watermark may already cover every id up to the newest"
    assert group_into_batches([obj("a", 0)], 1, T0 + timedelta(hours=1), after=existing)[0].batch_id == (
        make_batch_id(T0 + timedelta(hours=1), 0)
    ), "a clock ahead is used as it is"
