"""Evaluate an IAM policy document of docs/iam/ against (action, resource) pairs, for the tests."""

from fnmatch import fnmatchcase


def statements(policy: dict) -> list[tuple[str, list[str], list[str]]]:
    out = []
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = (
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        )
        resources = [
            r.replace("${Region}", "{region}").replace("${AccountId}", "{account}") for r in resources
        ]
        out.append((statement["Effect"], actions, resources))
    return out


def allowed(policy: dict, action: str, resource: str) -> bool:
    def matches(actions, resources):
        return any(fnmatchcase(action, a) for a in actions) and any(
            fnmatchcase(resource, r) for r in resources
        )

    rules = statements(policy)
    if any(effect == "Deny" and matches(a, r) for effect, a, r in rules):
        return False
    return any(effect == "Allow" and matches(a, r) for effect, a, r in rules)


def uncovered(policy: dict, needed: set[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted((action, resource) for action, resource in needed if not allowed(policy, action, resource))
