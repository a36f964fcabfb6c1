"""The message reconciliation's identities, per message id (rules/accounting.py)."""

from wap_pipeline.rules.accounting import reconcile_messages, unpublished_rows

PUBLISHED = {"b1", "b2"}.__contains__


def _account(**overrides):
    arguments = {
        "must_land": {"m1", "m2", "m3", "m4"},
        "forwarded_known": {"m1": "m1", "m2": "m2", "m3": "m3", "m4": "m4", "m5": "m5"},
        "landed": {"b1": {"m1", "m2"}, "b2": {"m3"}, "b3": {"m4", "m5"}},
        "is_published": PUBLISHED,
        "published_ids": {"m1", "m3"},
        "masked_by": {"m2": "event-2"},
        "quarantined": {"event-2"},
    }
    return reconcile_messages(**{**arguments, **overrides})


def test_every_message_forwarded_landed_and_is_published_masked_or_pending():
    account = _account()
    assert account.holds
    assert (account.forwarded, account.landed, account.published, account.masked, account.pending) == (
        4,
        5,
        2,
        1,
        2,
    )


def test_a_forwarded_message_that_never_landed_is_named():
    account = _account(must_land={"m1", "m2", "m3", "m4", "m9"})
    assert not account.holds and account.not_landed == ("m9",)


def test_a_landed_row_no_receipt_explains_is_named():
    account = _account(forwarded_known={"m1": "m1", "m2": "m2", "m3": "m3", "m4": "m4"})
    assert not account.holds and account.not_forwarded == ("m5",)


def test_a_row_missing_from_standardized_without_a_quarantined_id_is_lost():
    assert _account(quarantined=set()).unaccounted == ("m2",)
    assert _account(published_ids={"m1"}).unaccounted == ("m3",)
    assert unpublished_rows({"b1": {"m1", "m2"}, "b3": {"m7"}}, PUBLISHED, {"m1"}) == {"m2"}


def test_a_duplicate_landing_counts_once_and_a_second_copy_in_an_unpublished_batch_is_not_pending():
    account = _account(landed={"b1": {"m1", "m2"}, "b2": {"m3", "m1"}, "b3": {"m4", "m5", "m3"}})
    assert account.holds and account.landed == 5 and account.pending == 2


def test_rejections_fixed_under_their_original_id_are_resolved():
    account = _account(
        forwarded_known={"m1": "m1", "m2": "m2", "m3": "m3", "m4": "m4", "m5": "m5", "fix-1": "bad-1"},
        rejected={"bad-1", "bad-2"},
    )
    assert account.holds and account.rejected == ("bad-2",)
    assert account.as_dict()["rejected"] == 1 and account.as_dict()["sample_rejected"] == ["bad-2"]
