// The shopper's page: live view (MJPEG), the top-3 from server-sent events, taps, "none of these".
// Plain JavaScript, no build step, nothing fetched from outside the device.
//
// The live view: where the browser has ImageDecoder (WebCodecs), the MJPEG stream is read with
// fetch and each JPEG decoded and drawn on a desynchronized 2D canvas, which goes to the compositor
// on its own: no style, paint or raster of the page per frame (about a third less of the browser's
// CPU than an MJPEG <img>; README "Kiosk"). Elsewhere the canvas is swapped for an <img> showing
// the same stream.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const config = { confirm_hold_s: 2 };
  const kiosk = (window.__kiosk = { rendered: [], taps: 0, state: null, viewFrames: 0 });
  let shown = null;          // the state on screen
  let holdUntil = 0;         // taps ignored until then (after a confirmation)
  let busy = false;          // a tap is on its way
  let searchFrame = null;    // the frame "none of these" was opened on

  fetch("/api/config").then((r) => r.json()).then((c) => Object.assign(config, c)).catch(() => {});

  // ---- live view: reconnect when the stream ends or fails, unless the page is hidden ----
  const again = () => setTimeout(() => { if (!document.hidden) view.start(); }, 1000);
  const view = "ImageDecoder" in window ? canvasView($("live")) : imgView($("live"));

  // ---- answers ----
  let events = null;
  function connect() {
    events = new EventSource("/api/events");
    events.onmessage = (m) => render(JSON.parse(m.data));
    events.onerror = () => { setText($("status"), "Reconnecting…"); };
  }

  // ---- a hidden page (screen saver, another app in front) streams nothing ----
  document.addEventListener("visibilitychange", () => {
    kiosk.paused = document.hidden;
    if (document.hidden) {
      if (events) events.close();
      events = null;
      view.stop();
    } else {
      connect();
      view.start();
    }
  });

  // The MJPEG stream's frames drawn on the canvas: the newest JPEG waits while one decodes (a slow
  // screen skips frames, it never falls behind).
  function canvasView(canvas) {
    const context = canvas.getContext("2d", { alpha: false, desynchronized: true });
    let reading = null;      // the AbortController of the stream being read
    let waiting = null;      // the newest JPEG not yet decoded
    let decoding = false;
    async function show(jpeg) {
      decoding = true;
      try {
        const decoder = new ImageDecoder({ data: jpeg, type: "image/jpeg" });
        try {
          const frame = (await decoder.decode()).image;
          if (canvas.width !== frame.displayWidth || canvas.height !== frame.displayHeight) {
            canvas.width = frame.displayWidth;
            canvas.height = frame.displayHeight;
          }
          context.drawImage(frame, 0, 0);
          frame.close();
          kiosk.viewFrames += 1;
        } finally { decoder.close(); }
      } catch (e) { /* an unreadable frame: the next one replaces it */ }
      decoding = false;
      if (waiting) { const next = waiting; waiting = null; show(next); }
    }
    function start() {
      stop();
      const controller = (reading = new AbortController());
      fetch("/stream.mjpg?t=" + Date.now(), { signal: controller.signal, cache: "no-store" })
        .then((r) => readParts(r, (jpeg) => { if (decoding) waiting = jpeg; else show(jpeg); }))
        .catch(() => {})
        .finally(() => { if (reading === controller) { reading = null; again(); } });
    }
    function stop() {
      if (reading) { const controller = reading; reading = null; controller.abort(); }
      waiting = null;
    }
    start();
    return { start: start, stop: stop };
  }

  // Each part of a multipart/x-mixed-replace response, as bytes, to onPart.
  async function readParts(response, onPart) {
    const type = response.headers.get("Content-Type") || "";
    const match = /boundary="?([^";]+)"?/.exec(type);
    if (!response.ok || !match) throw new Error("not a multipart stream: " + response.status + " " + type);
    const boundary = new TextEncoder().encode("\r\n--" + match[1]);
    const headersEnd = new TextEncoder().encode("\r\n\r\n");
    const reader = response.body.getReader();
    let buffer = new Uint8Array(0);
    let body = -1;           // where the current part's body starts in buffer (-1: in headers or preamble)
    let scanned = 0;         // no boundary starts before this
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer = join(buffer, value);
      for (;;) {
        const next = find(buffer, boundary, scanned);
        if (next < 0) { scanned = Math.max(0, buffer.length - boundary.length + 1); break; }
        if (body >= 0 && next > body) onPart(buffer.slice(body, next));
        const end = find(buffer, headersEnd, next + boundary.length);
        scanned = 0;
        if (end < 0) {  // the part's headers are still on their way
          buffer = buffer.subarray(next);
          body = -1;
          break;
        }
        buffer = buffer.subarray(end + headersEnd.length);
        body = 0;
      }
    }
  }

  function join(a, b) {
    if (!a.length) return b;
    const joined = new Uint8Array(a.length + b.length);
    joined.set(a);
    joined.set(b, a.length);
    return joined;
  }

  function find(bytes, needle, from) {
    for (let i = bytes.indexOf(needle[0], from); i >= 0 && i + needle.length <= bytes.length;
         i = bytes.indexOf(needle[0], i + 1)) {
      let k = 1;
      while (k < needle.length && bytes[i + k] === needle[k]) k += 1;
      if (k === needle.length) return i;
    }
    return -1;
  }

  // The stream in an <img> (browsers without ImageDecoder). Changing an <img>'s src does not end its
  // MJPEG download in Chromium; window.stop() does.
  function imgView(canvas) {
    const img = document.createElement("img");
    img.id = "live";
    img.className = "live";
    img.alt = canvas.getAttribute("aria-label");
    canvas.replaceWith(img);
    img.addEventListener("load", () => { kiosk.viewFrames += 1; });
    img.addEventListener("error", again);
    const start = () => { img.src = "/stream.mjpg?t=" + Date.now(); };
    start();
    return { start: start, stop: () => window.stop() };
  }

  function setText(node, text) { if (node.textContent !== text) node.textContent = text; }

  function initials(name) {
    return name.split(/[\s-]+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
  }

  function thumb(c) {
    const t = document.createElement("div");
    t.className = "thumb";
    t.textContent = initials(c.name);
    const img = new Image();
    img.alt = "";
    img.onload = () => { t.textContent = ""; t.appendChild(img); };
    img.src = "/catalog/" + encodeURIComponent(c.item_id) + "/image";
    return t;
  }

  function card(c, i, onTap) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "candidate" + (i === 0 ? " first" : "") + (c.confidence < 0.5 ? " weak" : "");
    b.dataset.item = c.item_id;
    b.appendChild(thumb(c));
    const text = document.createElement("div");
    text.innerHTML = '<div class="name"></div><div class="sku"></div><div class="bar"><i></i></div>';
    text.querySelector(".name").textContent = c.name;
    text.querySelector(".sku").textContent = c.sku !== c.name ? c.sku : "";
    text.querySelector(".bar i").style.width = Math.round(c.confidence * 100) + "%";
    b.appendChild(text);
    b.addEventListener("click", () => onTap(c, b));
    return b;
  }

  function render(state) {
    kiosk.state = state;
    const ids = state.candidates.map((c) => c.item_id).join("|");
    const same = shown && shown.state === state.state && shown.ids === ids;
    const box = $("candidates");
    if (!same) {
      box.replaceChildren(...state.candidates.map((c, i) => card(c, i, tapCandidate)));
      const prompt = $("prompt");
      prompt.className = state.state === "unknown" ? "unknown" : "";
      prompt.textContent = state.state === "known" ? "Is this your product?"
        : state.state === "unknown" ? "Not sure — is it one of these?"
        : state.state === "starting" ? "Starting…" : "Place your product on the tray";
      $("none").hidden = !(state.state === "known" || state.state === "unknown");
    } else {  // the same products: only bars that moved are touched (no style or paint work otherwise)
      state.candidates.forEach((c, i) => {
        const bar = box.children[i] && box.children[i].querySelector(".bar i");
        const width = Math.round(c.confidence * 100) + "%";
        if (bar && bar.style.width !== width) bar.style.width = width;
      });
    }
    shown = { state: state.state, ids: ids, frame: state.frame };
    setText($("status"), state.state === "empty" ? "Waiting for a product" : "Recognising");
    if (state.captured) {
      kiosk.rendered.push({ frame: state.frame, captured: state.captured, shown: Date.now() / 1000,
                            top: state.candidates.length ? state.candidates[0].item_id : null });
      if (kiosk.rendered.length > 500) kiosk.rendered.splice(0, 100);
    }
  }

  // ---- taps ----
  function toast(text, error) {
    const t = $("toast");
    t.textContent = text;
    t.className = "toast" + (error ? " error" : "");
    t.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.hidden = true; }, Math.max(800, config.confirm_hold_s * 1000));
  }

  async function confirmTap(frame, c, button) {
    if (busy || Date.now() < holdUntil || !frame) return;
    busy = true;
    kiosk.taps += 1;
    if (button) button.classList.add("chosen");
    try {
      const r = await fetch("/api/confirm", { method: "POST", headers: { "Content-Type": "application/json" },
                                              body: JSON.stringify({ frame: frame, item_id: c.item_id }) });
      const answer = await r.json();
      if (r.ok) {
        holdUntil = Date.now() + config.confirm_hold_s * 1000;
        toast("Added: " + answer.name + " ✓");
        closeSearch();
      } else {
        toast(r.status === 410 || r.status === 409 ? "Please tap your product again" : answer.error, true);
      }
      kiosk.last = { status: r.status, answer: answer };
    } catch (e) {
      toast("The till is not answering — please ask staff", true);
    } finally {
      busy = false;
      if (button) setTimeout(() => button.classList.remove("chosen"), 400);
    }
  }

  function tapCandidate(c, button) { confirmTap(shown && shown.frame, c, button); }

  // ---- none of these: visual search and the name filter ----
  function showResults(items, title) {
    $("search-title").textContent = title;
    $("results").replaceChildren(...items.map((c, i) => card(c, -1, (cc, b) => confirmTap(searchFrame, cc, b))));
  }

  async function similar() {
    try {
      const r = await fetch("/api/similar?frame=" + searchFrame);
      const body = await r.json();
      if (r.ok && !$("filter").value) showResults(body.items, "Looks like");
    } catch (e) { /* the name filter still works */ }
  }

  let filterTimer = 0;
  $("filter").addEventListener("input", () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(async () => {
      const q = $("filter").value.trim();
      if (!q) return similar();
      const r = await fetch("/api/catalog?q=" + encodeURIComponent(q));
      const body = await r.json();
      showResults(body.items, body.items.length ? "Products named “" + q + "”" : "No product named “" + q + "”");
    }, 120);
  });

  function closeSearch() { $("search").hidden = true; searchFrame = null; }
  $("none").addEventListener("click", () => {
    if (!shown || !shown.frame) return;
    searchFrame = shown.frame;
    $("filter").value = "";
    $("results").replaceChildren();
    $("search").hidden = false;
    similar();
  });
  $("close").addEventListener("click", closeSearch);

  connect();
})();
