// The dashboard's one stylesheet and one browser script, served as they are (no build step).
//
// The script keeps pages live: it listens to the server's event stream (/events, fed by the
// engine's LISTEN notifications) and on each message fetches the page again and swaps in its
// `data-live` parts. It also posts the run actions and the event form, checking the event's
// JSON in the browser before anything is sent, and shows the server's answer in #flash.

export const css = `
:root { --fg:#1d2330; --muted:#6b7385; --line:#e3e6ec; --bg:#f6f7f9; --card:#fff; --accent:#3657d6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue","Liberation Sans","DejaVu Sans",Arial,sans-serif; color:var(--fg); background:var(--bg); }
header { display:flex; align-items:center; gap:24px; padding:10px 24px; background:#1d2330; color:#fff; }
header .brand { font-weight:700; font-size:17px; letter-spacing:.5px; }
header nav a { color:#c9cfdc; text-decoration:none; margin-right:16px; }
header nav a.active, header nav a:hover { color:#fff; border-bottom:2px solid #7d96ff; }
.live { margin-left:auto; font-size:12px; color:#8a92a3; }
.live.on { color:#5fd38d; } .live.off { color:#f0a35e; }
main { padding:20px 24px; max-width:1280px; }
h1 { font-size:20px; margin:0 0 4px; } h2 { font-size:15px; margin:24px 0 8px; } h3 { font-size:13px; margin:0 0 6px; color:var(--muted); }
a { color:var(--accent); }
table { width:100%; border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:6px; }
th, td { text-align:left; padding:7px 10px; border-bottom:1px solid var(--line); vertical-align:top; }
th { font-size:12px; font-weight:600; color:var(--muted); background:#fafbfc; }
tr:last-child td { border-bottom:0; }
.num { text-align:right; font-variant-numeric:tabular-nums; }
.mono, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,"DejaVu Sans Mono",monospace; font-size:12px; }
pre { margin:0; white-space:pre-wrap; word-break:break-word; max-height:240px; overflow:auto; }
.small { font-size:12px; } .muted { color:var(--muted); } .warn { color:#b26b00; font-size:12px; } .bad { color:#c0392b; }
.empty { color:var(--muted); text-align:center; padding:18px; }
.badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; background:#e8eaef; color:#4a5263; }
.s-completed { background:#dff5e7; color:#1c7c45; } .s-failed { background:#fde4e1; color:#b3261e; }
.s-cancelled { background:#ececec; color:#666; } .s-running { background:#e1e9ff; color:#2445b5; }
.s-pending, .s-scheduled { background:#fff4d6; color:#8a6100; } .s-retrying { background:#ffe8d1; color:#a35200; }
.s-sleeping, .s-waiting { background:#eee6ff; color:#5b35b5; } .s-paused { background:#f1e0ee; color:#8a2c77; }
form.filters { display:flex; flex-wrap:wrap; align-items:flex-end; gap:12px; margin-bottom:14px; }
label { display:flex; flex-direction:column; gap:3px; font-size:12px; color:var(--muted); }
label.grow { flex:1; min-width:220px; }
input, select, textarea { font:inherit; font-size:13px; padding:6px 8px; border:1px solid #cfd4de; border-radius:5px; background:#fff; color:var(--fg); }
textarea { font-family:ui-monospace,Menlo,Consolas,monospace; width:100%; }
button { font:inherit; font-size:13px; padding:6px 14px; border-radius:5px; border:1px solid var(--accent); background:var(--accent); color:#fff; cursor:pointer; }
button:disabled { opacity:.5; cursor:default; }
button.danger { background:#fff; color:#b3261e; border-color:#e0a49f; }
.reset { font-size:12px; }
.counts { display:flex; flex-wrap:wrap; gap:6px; margin-bottom:14px; }
.counts a { text-decoration:none; color:var(--fg); background:var(--card); border:1px solid var(--line); border-radius:6px; padding:4px 10px; font-size:12px; }
.counts a b { font-size:14px; margin-right:3px; } .counts a.on { border-color:var(--accent); box-shadow:0 0 0 1px var(--accent) inset; }
.paging { display:flex; gap:16px; }
.actions { display:flex; gap:8px; margin:12px 0; }
dl.facts { display:grid; grid-template-columns:max-content 1fr max-content 1fr; gap:4px 14px; background:var(--card); border:1px solid var(--line); border-radius:6px; padding:12px 14px; margin:0; }
dl.facts dt { color:var(--muted); font-size:12px; } dl.facts dd { margin:0; }
.io { display:grid; grid-template-columns:1fr 1fr; gap:12px; margin-top:12px; }
.block { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:10px 12px; }
.block.bad { border-color:#f0b8b2; }
pre.err, div.err { color:#b3261e; } div.err { font-size:13px; }
details.stack summary { color:var(--muted); } details.stack pre { font-size:11px; color:var(--muted); }
td.detail { max-width:420px; } details summary { cursor:pointer; font-size:12px; color:#b3261e; } .attempt { margin-top:4px; font-size:12px; }
form.send { display:grid; grid-template-columns:1fr 1fr; gap:10px; background:var(--card); border:1px solid var(--line); border-radius:6px; padding:12px 14px; }
form.send .data { grid-column:1 / 3; }
form.send .submit { grid-column:1 / 3; display:flex; align-items:center; gap:12px; }
#flash p { margin:0 0 12px; padding:8px 12px; border-radius:6px; }
#flash .ok { background:#dff5e7; color:#1c7c45; } #flash .error, p.error { background:#fde4e1; color:#b3261e; padding:8px 12px; border-radius:6px; }
`;

export const script = `"use strict";
(() => {
  const flash = document.getElementById("flash");
  function say(text, ok) {
    const p = document.createElement("p");
    p.className = ok ? "ok" : "error";
    p.textContent = text;
    flash.replaceChildren(p);
  }

  // One refresh at a time; a message during one asks for another after it.
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const response = await fetch(location.href, { cache: "no-store" });
      if (!response.ok) return;
      const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
      const open = new Set([...document.querySelectorAll("details[open]")].map((d) => d.dataset.key));
      for (const part of document.querySelectorAll("[data-live]")) {
        const next = fresh.getElementById(part.id);
        if (next) part.replaceWith(document.adoptNode(next));
      }
      for (const d of document.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
    } catch {
      // The server is away; the event stream reconnects and refreshes again.
    } finally {
      busy = false;
      if (again) { again = false; refresh(); }
    }
  }

  const state = document.getElementById("live-state");
  const stream = new EventSource("/events");
  let lost = false;
  stream.onopen = () => { state.className = "live on"; if (lost) refresh(); lost = false; };
  stream.onerror = () => { state.className = "live off"; lost = true; };
  stream.onmessage = () => refresh();

  async function act(path, body) {
    let answer;
    try {
      const response = await fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
      answer = await response.json().catch(() => ({ error: "the server answered " + response.status }));
    } catch {
      answer = { error: "the dashboard server did not answer" };
    }
    say(answer.error ?? answer.message, answer.error === undefined);
    await refresh();
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    button.disabled = true;
    act("/runs/" + button.dataset.run + "/" + button.dataset.action, {});
  });

  const form = document.getElementById("send");
  if (form) {
    const data = form.elements.data, note = document.getElementById("json-state"), submit = form.querySelector("button");
    const check = () => {
      try {
        const value = JSON.parse(data.value);
        note.textContent = "valid JSON"; note.className = "muted"; submit.disabled = false;
        return { value };
      } catch (error) {
        note.textContent = "invalid JSON: " + error.message; note.className = "bad"; submit.disabled = true;
        return undefined;
      }
    };
    data.addEventListener("input", check);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const parsed = check();
      if (!parsed) return;
      act("/runs/" + form.dataset.run + "/send",
        { name: form.elements.name.value, key: form.elements.key.value || null, data: parsed.value });
    });
  }
})();
`;
