// The staff page: the kiosk's health and the teaching queue (the token travels as a cookie).
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const MAX_PHOTOS = 24;  // thumbnails shown per product (the rest after these are decided)
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
      ["sync", sync ? sync.pending + " waiting" : "off",
       sync ? (sync.last_error || sync.acked + " sent" + (sync.photos ? ", photos too" : ", no photos")) : "no outbox"],
      ["screens", s.screens.streams, s.screens.listeners + " listening"],
    ];
  }

  function button(className, text, title, url) {
    const b = document.createElement("button");
    b.type = "button"; b.className = className; b.textContent = text; b.title = title;
    b.onclick = async () => {
      b.disabled = true;
      try {
        const r = await fetch(url, { method: "POST" });
        if (!r.ok) $("queue-error").textContent = (await r.json()).error || "HTTP " + r.status;
        else $("queue-error").textContent = "";
      } catch (e) { $("queue-error").textContent = "The kiosk is not answering."; }
      refresh();
    };
    return b;
  }

  // The queue is drawn again only when it changed (its photos are not fetched every second).
  let drawnQueue = null;
  function renderQueue(groups) {
    const key = JSON.stringify(groups);
    if (key === drawnQueue) return;
    drawnQueue = key;
    const queue = $("queue");
    if (!groups.length) { queue.innerHTML = '<p class="sku">Nothing waiting.</p>'; return; }
    queue.replaceChildren(...groups.map((g) => {
      const row = document.createElement("div");
      row.className = "queue-item";
      row.dataset.item = g.item_id;
      const title = document.createElement("b");
      title.textContent = g.name + " (" + g.photos.length + (g.photos.length === 1 ? " photo)" : " photos)");
      row.appendChild(title);
      const photos = document.createElement("div");
      photos.className = "photos";
      g.photos.slice(0, MAX_PHOTOS).forEach((id) => {
        const f = document.createElement("figure");
        f.className = "photo"; f.dataset.photo = id;
        const i = new Image(); i.alt = "photo " + id; i.src = "/api/staff/photo/" + id;
        f.append(i, button("approve-one", "✓", "Teach this photo", "/api/staff/photo/" + id + "/approve"),
                 button("discard-one", "✕", "Discard this photo", "/api/staff/photo/" + id + "/discard"));
        photos.appendChild(f);
      });
      if (g.photos.length > MAX_PHOTOS) {
        const more = document.createElement("span");
        more.className = "sku"; more.textContent = "+" + (g.photos.length - MAX_PHOTOS) + " more";
        photos.appendChild(more);
      }
      const item = "/api/staff/queue/" + encodeURIComponent(g.item_id);
      row.append(photos,
                 button("approve", "Approve all: teach it", "Teach every photo of this product", item + "/approve"),
                 button("discard", "Discard all", "Discard every photo of this product", item + "/discard"));
      return row;
    }));
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
    renderQueue(s.queue);
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
