"""What the UI tests share: Debian's Chromium, the artefact directory, full-page screenshots."""

from pathlib import Path

from playwright.sync_api import Page, expect

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"

# Assertions wait as long as actions do (the pages set 60 s): on a loaded machine the UI can take more
# than Playwright's default 5 s to render a view.
expect.set_options(timeout=60_000)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
