// The staff page: the kiosk's health and the teaching queue (the token travels as a cookie).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const fmt = (v, unit) => (v === null || v === undefined ? "—" : v + (unit || ""));

  function cardsOf(s) {
    const sync = s.sync;
    return [
      ["bundle", s.bundle.id ? s.bundle.id.slice(0, 12) : "—", "created " + fmt(s.bundle.created_at)],
      ["fps", fmt(s.fps), s.running ? "recognising" : "stopped" + (s.error ? ": " + s.error : "")],
      ["latency", fmt(s.answer_p50_ms, " ms"), "capture → answer p50 (p95 " + fmt(s.answer_p95_ms, " ms") + ")"],
      ["inference", fmt(s.inference_p50_ms, " ms"), "p50"],
      ["unknown rate", s.unknown_rate === null ? "—" : Math.round(s.unknown_rate * 100) + "%", "recent frames"],
      ["confirmed", s.confirmed, s.enrolments + " enrolments, " + s.photos.enrolled + " photos taught"],
      ["sync", sync ? sync.pending + " waiting" : "off", sync ? (sync.last_error || sync.acked + " sent") : "no outbox"],
      ["screens", s.screens.streams, s.screens.listeners + " listening"],
    ];
  }

  function render(s) {
    $("cards").replaceChildren(...cardsOf(s).map(([name, value, note]) => {
      const d = document.createElement("div");
      d.className = "card";
      d.dataset.name = name;
      d.innerHTML = "<span></span><b></b><span></span>";
      d.children[0].textContent = name; d.children[1].textContent = value; d.children[2].textContent = note;
      return d;
    }));
    const queue = $("queue");
    if (!s.queue.length) {
      queue.innerHTML = '<p class="sku">Nothing waiting.</p>';
    } else {
      queue.replaceChildren(...s.queue.map((g) => {
        const row = document.createElement("div");
        row.className = "queue-item";
        row.dataset.item = g.item_id;
        const title = document.createElement("b");
        title.textContent = g.name + " (" + g.photos.length + " photos)";
        row.appendChild(title);
        g.photos.slice(0, 8).forEach((id) => { const i = new Image(); i.src = "/api/staff/photo/" + id; row.appendChild(i); });
        for (const action of ["approve", "discard"]) {
          const b = document.createElement("button");
          b.className = action; b.textContent = action === "approve" ? "Approve: teach it" : "Discard";
          b.onclick = () => fetch("/api/staff/queue/" + encodeURIComponent(g.item_id) + "/" + action, { method: "POST" }).then(refresh);
          row.appendChild(b);
        }
        return row;
      }));
    }
    $("events").replaceChildren(...s.last_events.map((e) => {
      const tr = document.createElement("tr");
      [e.time, e.kind, e.item_id || e.label || "unknown", e.label || "unknown", e.score === null ? "" : Number(e.score).toFixed(3)]
        .forEach((v) => { const td = document.createElement("td"); td.textContent = v === undefined || v === null ? "" : v; tr.appendChild(td); });
      return tr;
    }));
  }

  async function refresh() {
    try {
      const r = await fetch("/api/staff/state", { cache: "no-store" });
      if (r.ok) render(await r.json());
    } catch (e) { /* next round */ }
  }
  refresh();
  setInterval(refresh, 1000);
})();
