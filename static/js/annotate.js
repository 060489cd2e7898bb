// Keyboard-driven rating. Keys pick radios and submit the form; htmx swaps in the next item.
(function () {
  "use strict";
  let shownAt = performance.now();

  const CHOICE_KEYS = { "1": "left", ArrowLeft: "left", "2": "right", ArrowRight: "right",
                        t: "tie", x: "both_bad" };
  const STRENGTH_KEYS = { q: "1", w: "2", e: "3" };

  function pick(form, name, value) {
    const input = form.querySelector(`input[name="${name}"][value="${value}"]`);
    if (input) { input.checked = true; input.dispatchEvent(new Event("change", { bubbles: true })); }
  }

  // htmx 2 wires up swapped-in forms in its settle step, ~20 ms after the swap; a fast key press
  // inside that window would otherwise fall through to a native submit and a full page load.
  function submit(form) {
    if (window.htmx) window.htmx.process(form);
    form.requestSubmit();
  }

  function typing(target) {
    return target && (target.tagName === "TEXTAREA" || target.tagName === "SELECT" ||
      (target.tagName === "INPUT" && target.type === "text"));
  }

  // The skip box (a <details> in the action bar): `s` opens it, so a mis-pressed `s` (between
  // `w` and `x`) skips nothing. Inside it, 1-4 pick a reason (arrow keys move between the
  // radios natively), Enter skips, Esc closes it; other keys do nothing while it is open.
  function skipBox() { return document.getElementById("skip-box"); }

  function openSkipBox(box) {
    box.open = true;
    const reason = box.querySelector("input[name=reason]:checked") ||
      box.querySelector("input[name=reason]");
    if (reason) reason.focus();
  }

  function closeSkipBox(box) {
    box.open = false;
    const summary = box.querySelector("summary");
    if (summary) summary.blur();
  }

  function skipBoxKey(box, event) {
    const reasons = box.querySelectorAll("input[name=reason]");
    if (/^[1-9]$/.test(event.key) && reasons[Number(event.key) - 1]) {
      const reason = reasons[Number(event.key) - 1];
      reason.checked = true;
      reason.focus();
      event.preventDefault();
    } else if (event.key === "Escape") {
      closeSkipBox(box);
      event.preventDefault();
    } else if (event.key === "Enter") {
      // Enter on Cancel cancels and on the summary closes the box; elsewhere it skips.
      if (event.target.id === "skip-cancel" || event.target.tagName === "SUMMARY") return;
      const skip = document.getElementById("skip-form");
      if (skip) submit(skip);
      event.preventDefault();
    } else if (!["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Tab", " "].includes(event.key)) {
      event.preventDefault();  // no rating keys while the box is open
    }
  }

  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("#skip-cancel")) {
      const box = skipBox();
      if (box) closeSkipBox(box);
    }
  });
  // Opened by the mouse (its summary) too: put the focus on the reasons, as `s` does. (toggle
  // does not bubble: listened for in the capture phase.)
  document.addEventListener("toggle", function (event) {
    const box = event.target;
    if (box.id !== "skip-box" || !box.open) return;
    const active = document.activeElement;
    if (!(active && active.name === "reason" && box.contains(active))) openSkipBox(box);
  }, true);

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const form = document.getElementById("judgment-form");
    const box = skipBox();
    // The box takes the keys while the focus is in it (or nowhere): Enter on Submit, tabbed to
    // with the box still open, submits the judgment, not the skip.
    if (box && box.open && (box.contains(event.target) || event.target === document.body)) {
      skipBoxKey(box, event);
      return;
    }
    if (typing(event.target)) {
      if (event.key === "Escape") event.target.blur();
      return;
    }
    if (event.key === "?") {
      const details = document.getElementById("instructions");
      if (details) details.open = !details.open;
      event.preventDefault();
      return;
    }
    if (event.key === "u") {
      // Undo the last skip, while its notice is shown (with or without an item on screen).
      const undo = document.getElementById("skip-notice");
      if (undo) { submit(undo); event.preventDefault(); }
      return;
    }
    if (!form) {
      // No item held yet: Enter presses Start (it claims the next item; GET never does).
      const start = document.getElementById("start-form");
      if (start && event.key === "Enter" &&
          !(event.target.closest && event.target.closest("button, a, summary"))) {
        submit(start); event.preventDefault();
      }
      return;
    }
    if (event.key in CHOICE_KEYS) { pick(form, "choice", CHOICE_KEYS[event.key]); event.preventDefault(); }
    else if (event.key in STRENGTH_KEYS) { pick(form, "strength", STRENGTH_KEYS[event.key]); event.preventDefault(); }
    else if (event.key === "r") { form.querySelector("textarea[name=rationale]").focus(); event.preventDefault(); }
    else if (event.key === "s") {
      if (box) { openSkipBox(box); event.preventDefault(); }
    } else if (event.key === "Enter") {
      // A focused button, link or summary keeps its own Enter (Skip…, Undo, Log out, Instructions).
      if (event.target.closest && event.target.closest("button, a, summary")) return;
      submit(form); event.preventDefault();
    }
  });

  // Time spent on an item: from its appearance to its submission.
  document.addEventListener("submit", function (event) {
    const field = event.target.querySelector("input[name=seconds_spent]");
    if (field) field.value = ((performance.now() - shownAt) / 1000).toFixed(2);
  }, true);
  document.addEventListener("htmx:afterSwap", function () {
    shownAt = performance.now();
    window.scrollTo({ top: 0 });
  });
  // A left/right choice needs a strength: say so instead of a silent server round trip.
  document.addEventListener("htmx:confirm", function (event) {
    const form = event.target;
    if (form.id !== "judgment-form") return;
    const choice = form.querySelector("input[name=choice]:checked");
    const strength = form.querySelector("input[name=strength]:checked");
    if (choice && (choice.value === "left" || choice.value === "right") && !strength) {
      event.preventDefault();
      const box = form.querySelector("#strength");
      box.classList.add("missing");
      box.querySelector("legend").textContent = "Strength: press q, w or e";
    }
  });
})();
