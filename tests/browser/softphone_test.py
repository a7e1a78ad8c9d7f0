#!/usr/bin/env python3
"""The web softphone in a real browser: Debian's chromium, driven by Selenium 4.

Against a running stack (call-control, token-service, device-gateway), with the gateway's
URL in RINGING_SOFTPHONE_URL (default http://127.0.0.1:8080). Every page is its own WebDriver
session (its own sessionStorage, so its own device). Scenarios:

  1. Alice calls Bob; Calling… then Ringing… (Bob's ring receipt); Bob accepts; both ongoing
     with a call token; Alice ends; both show the end; the call is in both histories.
  2. Bob declines: Alice shows Declined, Bob's panel goes away.
  3. Alice cancels while Bob rings: Bob's ringing stops, "Caller cancelled".
  4. Bob on two pages: both ring, one accepts, the other shows "Answered on another device".

A screenshot of every step goes to RINGING_SCREENSHOTS (default
.stack/browser/screenshots/<run-id>/). Exit status 1 on any failure, with the failing page's
visible text.
"""

import os
import secrets
import sys
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException, WebDriverException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

URL = os.environ.get("RINGING_SOFTPHONE_URL", "http://127.0.0.1:8080").rstrip("/")
RUN_ID = time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("RINGING_SCREENSHOTS") or ROOT / ".stack" / "browser" / "screenshots" / RUN_ID)
WAIT_S = 20
CHROMIUM = os.environ.get("RINGING_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("RINGING_CHROMEDRIVER", "/usr/bin/chromedriver")

step_number = 0


class Failure(Exception):
    pass


class Page:
    """One browser page of the softphone, signed in as one user."""

    def __init__(self, name):
        self.name = name
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                    "--autoplay-policy=no-user-gesture-required", "--window-size=1100,900"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        # Always the Debian driver: with a Service path, selenium-manager downloads nothing.
        self.driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        self.driver.get(URL + "/")

    # -- finding and waiting

    def find(self, testid):
        return self.driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]')

    def wait(self, what, condition):
        try:
            return WebDriverWait(
                self.driver, WAIT_S, poll_frequency=0.1, ignored_exceptions=(StaleElementReferenceException,)).until(lambda _: condition())
        except TimeoutException:
            raise Failure(f"{self.name}: waited {WAIT_S} s for {what}\n--- {self.name}'s page shows:\n{self.text()}") from None

    def visible(self, testid):
        try:
            return [e for e in self.find(testid) if e.is_displayed()]
        except StaleElementReferenceException:
            return []

    def text_of(self, testid):
        try:
            shown = self.visible(testid)
            return shown[0].text if shown else ""
        except StaleElementReferenceException:
            return ""

    def wait_text(self, testid, *needles):
        """Waits until the element shows a text containing one of `needles` (any case)."""
        def found():
            text = self.text_of(testid)
            return text if any(n.lower() in text.lower() for n in needles) else None
        return self.wait(f"[{testid}] to show {' or '.join(repr(n) for n in needles)}", found)

    def wait_visible(self, testid, **attributes):
        def found():
            try:
                for e in self.visible(testid):
                    if all(e.get_attribute(k) == v for k, v in attributes.items()):
                        return e
            except StaleElementReferenceException:
                pass
            return None
        what = f"[{testid}] {attributes}" if attributes else f"[{testid}]"
        return self.wait(f"{what} to be shown", found)

    def wait_gone(self, testid):
        return self.wait(f"[{testid}] to go away", lambda: not self.visible(testid))

    def click(self, testid):
        """Clicks the element, again if the page re-rendered it meanwhile."""
        def clicked():
            try:
                shown = self.visible(testid)
                if shown and shown[0].is_enabled():
                    shown[0].click()
                    return True
            except StaleElementReferenceException:
                pass
            return None
        self.wait(f"[{testid}] to be clickable", clicked)

    def text(self):
        try:
            return self.driver.find_element(By.TAG_NAME, "body").text
        except WebDriverException as error:
            return f"(no page text: {error.msg})"

    # -- actions

    def sign_in(self, uid):
        field = self.wait_visible("signin-uid")
        field.clear()
        field.send_keys(uid)
        self.click("signin-button")
        self.wait_text("signed-in-as", uid)
        self.wait_text("connection", "connected")
        self.uid = uid

    def call(self, callee, video=False):
        field = self.wait_visible("callee")
        field.clear()
        field.send_keys(callee)
        kind = "video" if video else "audio"
        self.driver.find_element(By.CSS_SELECTOR, f'[data-testid="call-type-{kind}"] + span').click()
        self.click("call-button")

    def record_texts(self, testid):
        """Starts recording every text the element shows (states may pass quickly)."""
        self.driver.execute_script(
            """const node = document.querySelector(`[data-testid="${arguments[0]}"]`);
            window.__texts = [node.textContent];
            new MutationObserver(() => window.__texts.push(node.textContent))
              .observe(node, {childList: true, characterData: true, subtree: true});""", testid)

    def recorded_texts(self):
        return self.driver.execute_script("return window.__texts || []")

    def history_row(self, session):
        self.wait_visible("history-row", **{"data-session": session})

    def console_errors(self):
        """The page's console errors: a CSP violation, an uncaught exception."""
        entries = self.driver.get_log("browser")
        noise = ("favicon", "Failed to load resource", "WebSocket connection to")  # the network, not the page
        return [e["message"] for e in entries
                if e.get("level") == "SEVERE" and not any(n in e["message"] for n in noise)]

    def quit(self):
        try:
            self.driver.quit()
        except WebDriverException:
            pass


def step(page, label, detail=""):
    global step_number
    step_number += 1
    name = f"{step_number:02d}-{page.name}-{label}.png"
    page.driver.save_screenshot(str(SHOTS / name))
    print(f"step {step_number:02d} {page.name}: {label.replace('-', ' ')}" + (f" ({detail})" if detail else ""), flush=True)


def session_of(page):
    return page.wait("the incoming panel", lambda: (page.wait_visible("incoming").get_attribute("data-session") or None))


# ---------------------------------------------------------------- scenarios


def scenario_answer(alice, bob):
    print("scenario 1: Alice calls Bob, Bob accepts, Alice ends", flush=True)
    alice.record_texts("outgoing-state")
    alice.call(bob.uid, video=True)
    alice.wait_text("outgoing-state", "Calling", "Ringing")
    step(alice, "calling", alice.text_of("outgoing-state"))
    panel = bob.wait_visible("incoming")
    session = panel.get_attribute("data-session")
    bob.wait_text("incoming-caller", alice.uid)
    bob.wait_text("incoming", "video")
    tone = bob.driver.execute_script("return window.ringing.toneOn")
    step(bob, "ringing", f"session {session}, ring tone {'on' if tone else 'off'}")
    alice.wait_text("outgoing-state", "Ringing")
    shown = [t for t in alice.recorded_texts() if t]
    if not shown or not shown[0].startswith("Calling") or not any(t.startswith("Ringing") for t in shown):
        raise Failure(f"alice's outgoing state went {shown}, expected Calling… then Ringing…")
    step(alice, "sees-ringing", f"{' -> '.join(dict.fromkeys(shown))}: Bob's page sent the ring receipt")
    bob.click("accept-button")
    for page in (bob, alice):
        page.wait_visible("ongoing")
        page.wait(f"a call token", lambda p=page: p.text_of("call-token").startswith("eyJ"))
        step(page, "ongoing", f"peer {page.text_of('ongoing-peer')}, token {page.text_of('call-token')}")
    alice.wait_text("ongoing-peer", bob.uid)
    bob.wait_text("ongoing-peer", alice.uid)
    alice.wait("the duration to run", lambda: alice.text_of("duration") not in ("", "00:00"))
    step(alice, "duration", alice.text_of("duration"))
    alice.click("end-button")
    for page in (alice, bob):
        page.wait_text("call-ended", "Call ended")
        page.wait_gone("ongoing")
        step(page, "call-ended", page.text_of("call-ended"))
    for page in (alice, bob):
        page.history_row(session)
        step(page, "history", f"row {session} status ended")


def scenario_decline(alice, bob):
    print("scenario 2: Bob declines", flush=True)
    alice.call(bob.uid)
    session = session_of(bob)
    step(bob, "ringing-again", f"session {session}")
    bob.click("decline-button")
    bob.wait_gone("incoming")
    bob.wait_text("incoming-state", "Declined")
    step(bob, "declined", bob.text_of("incoming-state"))
    alice.wait_text("outgoing-state", "Declined")
    step(alice, "sees-declined", alice.text_of("outgoing-state"))
    alice.history_row(session)


def scenario_cancel(alice, bob):
    print("scenario 3: Alice cancels while Bob rings", flush=True)
    alice.call(bob.uid)
    session = session_of(bob)
    alice.wait_text("outgoing-state", "Ringing")
    step(alice, "ringing-before-cancel", f"session {session}")
    alice.click("cancel-button")
    alice.wait_text("outgoing-state", "Cancelled")
    step(alice, "cancelled", alice.text_of("outgoing-state"))
    bob.wait_gone("incoming")
    bob.wait_text("incoming-state", "cancelled")
    step(bob, "caller-cancelled", bob.text_of("incoming-state"))


def scenario_two_devices(alice, bob, bob2):
    print("scenario 4: Bob on two pages: one accepts, the other stops ringing", flush=True)
    bob2.sign_in(bob.uid)
    step(bob2, "signed-in", f"second page of {bob.uid}, device {bob2.driver.execute_script('return window.ringing.deviceId')}")
    alice.call(bob.uid)
    session = session_of(bob)
    if session_of(bob2) != session:
        raise Failure(f"bob2 rings for {session_of(bob2)}, bob for {session}")
    step(bob, "ringing-page1", f"session {session}")
    step(bob2, "ringing-page2", f"session {session}")
    bob.click("accept-button")
    bob.wait_visible("ongoing")
    bob2.wait_gone("incoming")
    bob2.wait_text("incoming-state", "Answered on another device")
    step(bob2, "answered-elsewhere", bob2.text_of("incoming-state"))
    if "another device" in bob.text_of("incoming-state").lower():
        raise Failure(f"bob (the accepting page) shows {bob.text_of('incoming-state')!r}\n{bob.text()}")
    if bob2.visible("ongoing"):
        raise Failure(f"bob2 shows the ongoing call although bob answered on the other page\n{bob2.text()}")
    step(bob, "accepted-here", bob.text_of("incoming-state"))
    alice.wait_visible("ongoing")
    bob.click("end-button")
    for page in (bob, alice):
        page.wait_text("call-ended", "Call ended")
        step(page, "ended", page.text_of("call-ended"))
    alice.history_row(session)


# ---------------------------------------------------------------- main


def main():
    try:
        with urllib.request.urlopen(URL + "/", timeout=5) as response:
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
    except OSError as error:
        print(f"softphone test: the gateway at {URL} does not serve the page: {error}", file=sys.stderr)
        return 1
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f"softphone test: {URL}, screenshots in {SHOTS}", flush=True)
    suffix = secrets.token_hex(3)
    pages = []
    try:
        alice = Page("alice")
        pages.append(alice)
        bob = Page("bob")
        pages.append(bob)
        alice.sign_in(f"alice-{suffix}")
        step(alice, "signed-in", alice.uid)
        bob.sign_in(f"bob-{suffix}")
        step(bob, "signed-in", bob.uid)
        scenario_answer(alice, bob)
        scenario_decline(alice, bob)
        scenario_cancel(alice, bob)
        bob2 = Page("bob2")
        pages.append(bob2)
        scenario_two_devices(alice, bob, bob2)
        errors = [f"{p.name}: {m}" for p in pages for m in p.console_errors()]
        if errors:
            raise Failure("console errors on the pages:\n" + "\n".join(errors))
    except Failure as failure:
        for page in pages:
            try:
                page.driver.save_screenshot(str(SHOTS / f"failed-{page.name}.png"))
            except WebDriverException:
                pass
        print(f"softphone test: FAILED: {failure}", file=sys.stderr)
        print(f"softphone test: screenshots in {SHOTS}", file=sys.stderr)
        return 1
    except WebDriverException as error:
        print(f"softphone test: FAILED: the browser: {error.msg}", file=sys.stderr)
        print(f"softphone test: screenshots in {SHOTS}", file=sys.stderr)
        return 1
    finally:
        for page in pages:
            page.quit()
    print(f"softphone test: all 4 scenarios passed; screenshots in {SHOTS}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
