"""What the alerts sensor announces, and that it announces each thing once."""

from wap_pipeline.ingest.forwarder_breaker import ForwarderState
from wap_pipeline.operations.alerts import AlertCursor, CheckFailure, alerts_due
from wap_pipeline.resources.breaker import BreakerState

GREEN = BreakerState("p", version=1)
RED = BreakerState("p", status="RED", reason="audit failed", batch_id="b7", tripped_by="dagster:x", version=2)
CLOSED = ForwarderState("p#forwarder")
OPEN = ForwarderState("p#forwarder", status="OPEN", reason="Firehose unavailable: 503", version=3)


def test_a_trip_is_announced_once_and_a_new_trip_again():
    alerts, cursor = alerts_due(AlertCursor(), RED, CLOSED, 0)
    assert [a.subject for a in alerts] == ["[wap] breaker p RED"] and "b7" in alerts[0].message
    assert alerts_due(cursor, RED, CLOSED, 0)[0] == []
    assert alerts_due(cursor, GREEN, CLOSED, 0)[0] == []
    tripped_again = BreakerState("p", status="RED", reason="again", version=4)
    assert len(alerts_due(cursor, tripped_again, CLOSED, 0)[0]) == 1


def test_dlq_growth_and_a_paused_forwarder_are_announced():
    alerts, cursor = alerts_due(AlertCursor(dlq_depth=2), GREEN, OPEN, 5)
    assert [a.subject for a in alerts] == [
        "[wap] DLQ grew to 5",
        "[wap] forwarder paused: Firehose unavailable",
    ]
    assert alerts_due(cursor, GREEN, OPEN, 5)[0] == [], "nothing new"
    assert alerts_due(cursor, GREEN, OPEN, 3)[0] == [], "a DLQ that shrank (purged, redriven) is no alert"
    assert AlertCursor.from_json(cursor.to_json()) == cursor


def test_a_failed_reconciliation_is_announced_once_per_failed_evaluation():
    failure = CheckFailure("messages_reconciled", 41, {"not_landed": 2, "sample_not_landed": ["m1", "m2"]})
    alerts, cursor = alerts_due(AlertCursor(), GREEN, CLOSED, 0, [failure])
    assert [a.subject for a in alerts] == ["[wap] reconciliation failed: messages_reconciled"]
    assert "m1" in alerts[0].message and "not_landed: 2" in alerts[0].message
    assert alerts_due(cursor, GREEN, CLOSED, 0, [failure])[0] == [], "the same evaluation once"
    assert AlertCursor.from_json(cursor.to_json()) == cursor
    again = CheckFailure("messages_reconciled", 57, {"not_landed": 1})
    assert len(alerts_due(cursor, GREEN, CLOSED, 0, [again])[0]) == 1, "a later failed evaluation again"
