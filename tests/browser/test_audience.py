"""Audience in a real browser: paste keys into a new group, preview the unknown ones, confirm, see the members."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def _sign_in(page, role) -> None:
    from tests.factories import PASSWORD, make_user

    user = make_user(role)
    page.goto("/login")
    page.fill("input[name=email]", user.email)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/")


def _subscribers(*keys: str) -> None:
    from webadmin.extensions import db
    from webadmin.models.audience import Subscriber

    db.session.add_all(Subscriber(subscriber_key=key, display_name=key.split("@")[0].title()) for key in keys)
    db.session.commit()


def test_paste_keys_into_a_new_group_preview_confirm(page, live_app, artifacts, tmp_path):
    from webadmin.models.user import Role

    _subscribers("anna@example.com", "jan@example.com", "ola@example.com")
    _sign_in(page, Role.MARKETER)
    page.click("nav.wa-nav >> text=Audience")
    page.wait_for_url("**/audience/")
    page.click("#audience-tabs >> text=Groups")
    page.fill("#audience-group-create input[name=name]", "Key customers")
    page.click("#audience-group-create button[type=submit]")
    page.wait_for_url("**/audience/groups/*")
    assert page.locator("#audience-group-name").inner_text() == "Key customers"

    page.fill("#audience-member-keys textarea[name=keys]", "Anna@example.com\njan@example.com\nghost@example.com")
    page.click("#audience-member-keys button[type=submit]")
    preview = page.locator("#audience-member-preview")
    preview.locator("text=nothing has been written yet").wait_for()
    assert "ghost@example.com" in page.locator("#audience-unknown-keys").inner_text()
    assert "2 matched" in " ".join(preview.locator("#audience-preview-counts").inner_text().split())
    assert page.locator("#audience-members-table").count() == 0  # nothing written yet
    page.screenshot(path=str(artifacts / "audience-member-preview.png"), full_page=True)

    page.click("#audience-confirm-members button[type=submit]")
    page.locator("#audience-members-table").wait_for()
    members = page.locator("#audience-members-table").inner_text()
    assert "anna@example.com" in members and "jan@example.com" in members and "ghost@example.com" not in members
    assert page.locator("#audience-group-count").inner_text() == "2"

    # A CSV upload goes through the same preview (multipart, sent by htmx with a progress bar).
    csv_file = tmp_path / "members.csv"
    csv_file.write_text("subscriber_key\nola@example.com\nanna@example.com\n")
    page.set_input_files("#audience-member-keys input[type=file]", str(csv_file))
    page.click("#audience-member-keys button[type=submit]")
    page.locator("#audience-confirm-members").wait_for()
    counts = " ".join(page.locator("#audience-preview-counts").inner_text().split())
    assert "2 matched (1 already in the group)" in counts
    page.click("#audience-confirm-members button[type=submit]")
    page.locator("text=Added 1 members").wait_for()
    assert page.locator("#audience-group-count").inner_text() == "3"
    assert page.console_errors == []


def test_live_search_swaps_results_and_fits_a_phone(page, live_app, artifacts):
    from webadmin.models.user import Role

    _subscribers("anna@example.com", "jan@example.com")
    page.set_viewport_size({"width": 390, "height": 844})
    _sign_in(page, Role.VIEWER)
    page.goto("/audience/")
    page.fill("#audience-q", "ja")
    page.wait_for_url("**/audience/?*q=ja*")
    results = page.locator("#audience-subscriber-results")
    assert "jan@example.com" in results.inner_text() and "anna@example.com" not in results.inner_text()
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0
    page.screenshot(path=str(artifacts / "audience-search-390px.png"), full_page=True)
    assert page.console_errors == []


def test_a_paste_too_large_for_one_request_says_so(page, live_app):
    from webadmin.models.user import Role

    _sign_in(page, Role.MARKETER)
    page.goto("/audience/groups")
    page.fill("#audience-group-create input[name=name]", "Huge")
    page.click("#audience-group-create button[type=submit]")
    page.wait_for_url("**/audience/groups/*")
    huge = "\n".join(f"someone-{n:06d}@example.com" for n in range(25_000))  # over the 500 kB form field limit
    page.eval_on_selector("#audience-member-keys textarea[name=keys]", "(el, text) => { el.value = text; }", huge)
    page.click("#audience-member-keys button[type=submit]")
    message = page.locator("#audience-member-keys [data-upload-error]")
    message.wait_for()
    assert "paste fewer keys, or upload them as a file" in message.inner_text()
    assert [e for e in page.console_errors if "413" not in e] == []


# Throttled so the upload takes a moment (~0.75 s): unthrottled on loopback, the file would go in one piece.
UPLOAD_THROTTLE = {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 3_000_000}


def test_a_large_upload_moves_the_progress_bar_before_the_preview(page, live_app, tmp_path):
    from webadmin.models.user import Role

    _subscribers("anna@example.com")
    _sign_in(page, Role.MARKETER)
    page.goto("/audience/groups")
    page.fill("#audience-group-create input[name=name]", "Big upload")
    page.click("#audience-group-create button[type=submit]")
    page.wait_for_url("**/audience/groups/*")
    # ~2.2 MB, mostly a wide note column (as CRM exports have), so the server has only 8,000 keys to match.
    csv_file = tmp_path / "keys.csv"
    csv_file.write_text("subscriber_key,note\nanna@example.com,x\n"
                        + "".join(f"nobody-{n:06d}@example.com,{'-' * 250}\n" for n in range(8_000)))  # fmt: skip
    # Record what the bar shows at each progress event (after audience.js moved it) and when htmx swaps.
    page.evaluate("""() => {
        window.seen = {values: [], visible: [], atSwap: null};
        const bar = () => document.querySelector("#audience-member-indicator progress[data-upload-progress]");
        document.addEventListener("htmx:xhr:progress", () => {
            window.seen.values.push(bar().value);
            window.seen.visible.push(bar().checkVisibility());
        });
        document.addEventListener("htmx:beforeSwap", () => { window.seen.atSwap = bar().value; });
    }""")
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", UPLOAD_THROTTLE)
    page.set_input_files("#audience-member-keys input[type=file]", str(csv_file))
    page.click("#audience-member-keys button[type=submit]")
    page.locator("#audience-preview-counts").wait_for(timeout=20_000)
    seen = page.evaluate("window.seen")
    assert seen["atSwap"] == 100, seen
    partial = [value for value in seen["values"] if 0 < value < 100]
    assert partial and partial == sorted(partial), seen["values"]  # it moved, forwards, before the answer came
    assert all(seen["visible"]), "the bar is hidden while it moves"
    counts = " ".join(page.locator("#audience-preview-counts").inner_text().split())
    assert "8,001 distinct keys" in counts and "1 matched" in counts
    assert page.console_errors == []
