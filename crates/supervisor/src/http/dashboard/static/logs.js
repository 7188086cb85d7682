// One agent's log stream: the backlog then live lines over SSE
// (`/supervisor/logs?follow=true`), a level filter (asked of the server), a
// search (in the page), and follow (stream and keep the newest in view).

import { readEvents, getJson, token } from "./api.js";
import { h, clock, time } from "./format.js";

const MAX_LINES = 2000;
const BACKLOG = 300;

/** Whether a log entry has fields to show (`fields` is always an object, often empty). */
function hasFields(e) {
  return !!e.fields && typeof e.fields === "object" && Object.keys(e.fields).length > 0;
}

export class LogView {
  constructor(onNeedToken) {
    this.onNeedToken = onNeedToken;
    this.agent = null;
    this.abort = null;
    this.entries = [];
    this.level = "";
    this.query = "";
    this.follow = true;
    this.retry = null;
    this.root = this.build();
  }

  build() {
    this.followBox = h("input", { type: "checkbox", checked: true, "data-testid": "log-follow" });
    this.followBox.addEventListener("change", () => {
      this.follow = this.followBox.checked;
      this.restart();
    });
    this.levelSel = h(
      "select",
      { "data-testid": "log-level", title: "Lowest level shown" },
      ["", "debug", "info", "warn", "error"].map((l) => h("option", { value: l }, l || "all levels")),
    );
    this.levelSel.addEventListener("change", () => {
      this.level = this.levelSel.value;
      this.restart();
    });
    this.search = h("input", { type: "search", placeholder: "Search", "data-testid": "log-search", spellcheck: "false" });
    this.search.addEventListener("input", () => {
      this.query = this.search.value.toLowerCase();
      this.applySearch();
    });
    this.status = h("span", { class: "sub", "data-testid": "log-status" });
    this.list = h("div", { class: "log-lines", "data-testid": "log-lines", role: "log" });
    this.notice = h("div", { class: "log-notice", hidden: true, "data-testid": "log-notice" });
    return h(
      "div",
      { class: "logs" },
      h("div", { class: "log-tools" }, h("label", {}, this.followBox, " Follow"), this.levelSel, this.search, this.status),
      this.notice,
      this.list,
    );
  }

  show(agentId) {
    if (agentId === this.agent) return;
    this.agent = agentId;
    this.restart();
  }

  stop() {
    if (this.abort) this.abort.abort();
    this.abort = null;
    clearTimeout(this.retry);
  }

  restart() {
    this.stop();
    this.entries = [];
    this.list.replaceChildren();
    this.notice.hidden = true;
    if (!this.agent) return;
    const ctl = new AbortController();
    this.abort = ctl;
    const q = new URLSearchParams({ process_id: this.agent, limit: String(BACKLOG) });
    if (this.level) q.set("level", this.level);
    if (!this.follow) {
      this.status.textContent = "loading…";
      getJson("/supervisor/logs?" + q, { signal: ctl.signal })
        .then((body) => {
          for (const e of body.logs || []) this.add(e);
          this.status.textContent = `${this.entries.length} lines (paused)`;
        })
        .catch((e) => this.failed(e, ctl));
      return;
    }
    q.set("follow", "true");
    this.status.textContent = "connecting…";
    readEvents(
      "/supervisor/logs?" + q,
      (event, data) => {
        if (event !== "log") return;
        try {
          this.add(JSON.parse(data));
        } catch {
          // A malformed event is skipped, the stream goes on.
        }
        this.status.textContent = `${this.entries.length} lines · live`;
      },
      { signal: ctl.signal, onOpen: () => (this.status.textContent = `${this.entries.length} lines · live`) },
    )
      .then(() => {
        if (ctl.signal.aborted) return;
        this.status.textContent = "stream ended; reconnecting…";
        this.retry = setTimeout(() => this.abort === ctl && this.restart(), 2000);
      })
      .catch((e) => this.failed(e, ctl));
  }

  failed(e, ctl) {
    if (ctl.signal.aborted || (e && e.name === "AbortError")) return;
    if (e.status === 401 || e.status === 403) {
      const msg =
        e.status === 401
          ? token()
            ? `The admin token was refused (${e.message}). Enter the right one to see logs.`
            : "Logs need the admin token (they carry the agent's own output)."
          : `Logs are refused here: ${e.message}`;
      const btn = h("button", { type: "button", class: "small" }, "Enter admin token");
      btn.addEventListener("click", () => this.onNeedToken());
      this.notice.replaceChildren(h("span", {}, msg + " "), e.status === 401 ? btn : "");
      this.notice.hidden = false;
      this.status.textContent = "";
      return;
    }
    this.status.textContent = `log stream failed: ${e.message}; retrying…`;
    this.retry = setTimeout(() => this.abort === ctl && this.restart(), 2000);
  }

  add(e) {
    if (!e || typeof e !== "object") return;
    this.entries.push(e);
    const line = h(
      "div",
      { class: "log-line lv-" + (e.level || "info"), "data-seq": e.seq },
      h("span", { class: "log-time" }, clock(time(e.timestamp))),
      h("span", { class: "log-level" }, e.level || ""),
      h("span", { class: "log-stream" }, e.stream || ""),
      h("span", { class: "log-msg" }, e.message || ""),
      hasFields(e) ? h("span", { class: "log-fields" }, " " + JSON.stringify(e.fields)) : null,
    );
    line.dataset.text = ((e.message || "") + " " + (hasFields(e) ? JSON.stringify(e.fields) : "")).toLowerCase();
    if (this.query && !line.dataset.text.includes(this.query)) line.hidden = true;
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < 40;
    this.list.append(line);
    if (this.entries.length > MAX_LINES) {
      this.entries.shift();
      this.list.firstElementChild && this.list.firstElementChild.remove();
    }
    if (this.follow && atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  applySearch() {
    let shown = 0;
    for (const line of this.list.children) {
      line.hidden = !!this.query && !line.dataset.text.includes(this.query);
      if (!line.hidden) shown++;
    }
    this.status.textContent = this.query ? `${shown} of ${this.entries.length} lines match` : `${this.entries.length} lines`;
    if (this.follow) this.list.scrollTop = this.list.scrollHeight;
  }
}
