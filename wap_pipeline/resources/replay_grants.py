"""data-patcher's replay grants in DynamoDB (see :mod:`wap_pipeline.rules.replays`).

Only the patcher role may write the table (docs/iam/patcher-policy.json); the pipeline role may only
read it (``BatchGetItem``). Each grant is written once, before its replay is sent, with a conditional
put: a token is never overwritten, so a grant cannot be re-pointed at another record or body.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import asdict

from wap_pipeline import aws
from wap_pipeline.rules.replays import ReplayGrant

TRANSACTION_ITEMS = 100
BATCH_GET_KEYS = 100
UNPROCESSED_RETRIES = 8


class ReplayGrants:
    def __init__(self, dynamodb, table: str):
        self._dynamodb = dynamodb
        self._table = table

    def grant(self, grants: list[ReplayGrant]) -> None:
        """Write ``grants`` (all or none of each hundred), each only if its token is new."""
        for start in range(0, len(grants), TRANSACTION_ITEMS):
            self._dynamodb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self._table,
                            "Item": aws.to_item(asdict(grant)),
                            "ConditionExpression": "attribute_not_exists(#token)",
                            "ExpressionAttributeNames": {"#token": "token"},
                        }
                    }
                    for grant in grants[start : start + TRANSACTION_ITEMS]
                ]
            )

    def lookup(self, tokens: Collection[str]) -> dict[str, ReplayGrant]:
        """The grants of those ``tokens`` that have one, by token (a hundred keys per call)."""
        wanted = sorted(set(tokens))
        found: dict[str, ReplayGrant] = {}
        for start in range(0, len(wanted), BATCH_GET_KEYS):
            keys = [aws.to_item({"token": token}) for token in wanted[start : start + BATCH_GET_KEYS]]
            request = {self._table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(UNPROCESSED_RETRIES):
                if attempt:
                    time.sleep(0.05 * 2**attempt)  # throttled: botocore does not retry unprocessed keys
                response = self._dynamodb.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    grant = ReplayGrant(**aws.from_item(item))
                    found[grant.token] = grant
                request = response.get("UnprocessedKeys") or {}
                if not request:
                    break
            else:
                raise RuntimeError(f"DynamoDB left replay grants of {self._table} unread after retries")
        return found
