"""The quarantine read the standardized step starts in the background, against the local server."""

import pyarrow as pa
import pytest
from botocore.exceptions import ClientError

from wap_pipeline import aws
from wap_pipeline.provision import provision
from wap_pipeline.resources.quarantine import Quarantine, QuarantineRead
from wap_pipeline.rules.quarantine import quarantine_mask

pytestmark = pytest.mark.integration


def test_background_read_returns_every_quarantined_id(stack):
    provision(stack)
    quarantine = Quarantine(aws.client("dynamodb", stack), stack.quarantine_table)
    for number in range(30):
        quarantine.add(f"evt_bad_{number}", reason="test")
    quarantine.remove("evt_bad_7")

    read = QuarantineRead(quarantine)

    assert read.ids() == frozenset(f"evt_bad_{n}" for n in range(30) if n != 7)
    assert read.ids() == quarantine.ids()  # collected once, asked twice


def test_background_read_failure_surfaces_when_the_ids_are_collected(stack):
    provision(stack)
    missing = Quarantine(aws.client("dynamodb", stack), "no-such-quarantine-table")

    read = QuarantineRead(missing)

    with pytest.raises(ClientError, match="ResourceNotFoundException"):
        read.ids()


def test_the_quarantine_filter_takes_the_read_before_the_scan_is_done(stack):
    """standardize() is handed the background read itself; its first use waits for the scan."""
    provision(stack)
    quarantine = Quarantine(aws.client("dynamodb", stack), stack.quarantine_table)
    quarantine.add("evt_bad", reason="test")
    rows = pa.table({"event_id": ["evt_ok", "evt_bad", "evt_bad"], "is_replay": [False, False, True]})

    mask = quarantine_mask(rows, QuarantineRead(quarantine))

    assert mask.to_pylist() == [False, True, False]
    assert "evt_bad" in QuarantineRead(quarantine) and len(QuarantineRead(quarantine)) == 1
