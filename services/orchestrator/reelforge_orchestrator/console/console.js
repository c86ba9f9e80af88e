// Polls /console/api/state with the operator token (from the URL fragment) and fills the tables.
// Values are written with textContent only: tenant ids and error messages are never parsed as HTML.
"use strict";

const REFRESH_MS = 2000;

function token() {
  return new URLSearchParams(location.hash.slice(1)).get("token") || "";
}

function money(micros, currency) {
  return (micros / 1e6).toFixed(4) + (currency ? " " + currency : "");
}

function seconds(s) {
  return s < 60 ? s.toFixed(1) + " s" : (s / 60).toFixed(1) + " min";
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = String(text);
  if (className) td.className = className;
  return td;
}

function fill(tableId, rows, columns, emptyText) {
  const body = document.querySelector("#" + tableId + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    const tr = document.createElement("tr");
    tr.className = "empty";
    const td = cell(emptyText);
    td.colSpan = document.querySelectorAll("#" + tableId + " thead th").length;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const column of columns) tr.append(column(row));
    body.append(tr);
  }
}

function utilisation(pool) {
  const td = document.createElement("td");
  const bar = document.createElement("span");
  bar.className = "bar";
  const inner = document.createElement("span");
  inner.style.width = Math.min(100, Math.round(pool.utilisation * 100)) + "%";
  bar.append(inner);
  td.append(bar, document.createTextNode(Math.round(pool.utilisation * 100) + "%"));
  return td;
}

function render(state) {
  fill("tiers", state.tiers, [
    (q) => cell(q.tier), (q) => cell(q.waiting, "num"), (q) => cell(q.in_flight, "num"),
    (q) => cell(seconds(q.oldest_wait_seconds), "num"),
  ], "no jobs waiting or running");
  fill("tenants", state.tenants, [
    (q) => cell(q.tenant_id), (q) => cell(q.tier), (q) => cell(q.waiting, "num"), (q) => cell(q.in_flight, "num"),
    (q) => cell(seconds(q.oldest_wait_seconds), "num"),
  ], "no jobs waiting or running");
  fill("pools", state.pools, [
    (p) => cell(p.pool_id), (p) => cell(p.provider), (p) => cell(p.model), (p) => cell(p.in_use + " / " + p.capacity),
    utilisation, (p) => cell(p.circuit, "circuit-" + p.circuit), (p) => cell(p.state, "state-" + p.state),
  ], "no pools configured");
  const spend = state.spend;
  if (spend.available) {
    document.getElementById("spend-day").textContent = "(" + spend.day + " UTC, " + spend.currency + ")";
    document.getElementById("spend-total").textContent = "charged " + money(spend.charged_micros, spend.currency)
      + " (free " + money(spend.free_micros, spend.currency) + "), provider cost "
      + money(spend.provider_cost_micros, spend.currency);
    fill("spend", spend.tenants, [
      (t) => cell(t.tenant_id), (t) => cell(t.jobs, "num"), (t) => cell(money(t.charged_micros), "num"),
      (t) => cell(money(t.free_micros), "num"), (t) => cell(money(t.provider_cost_micros), "num"),
    ], "nothing charged today");
  } else {
    document.getElementById("spend-total").textContent = "unavailable (" + spend.error + ")";
    fill("spend", [], [], "spend unavailable");
  }
  document.getElementById("failure-window").textContent = "(last " + state.failures.window + ")";
  fill("failure-codes", state.failures.by_code, [(f) => cell(f.code, "code"), (f) => cell(f.count, "num")],
    "no failures");
  fill("failures", state.failures.recent, [
    (f) => cell(new Date(f.at).toISOString().slice(11, 19)), (f) => cell(f.job_id), (f) => cell(f.tenant_id),
    (f) => cell(f.code, "code"), (f) => cell(f.pool), (f) => cell(f.message, "message"),
  ], "no failures");
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/console/api/state", {headers: {Authorization: "Bearer " + token()}});
    const body = await response.json();
    if (!response.ok) {
      status.textContent = body.detail || response.statusText;
      status.className = "error";
      if (response.status === 401) {
        document.getElementById("login").hidden = false;
        return;
      }
    } else {
      render(body);
      document.getElementById("content").hidden = false;
      status.textContent = "updated " + new Date(body.generated_at).toISOString().slice(11, 19) + " UTC";
      status.className = "muted";
    }
  } catch (error) {
    status.textContent = "cannot reach the orchestrator: " + error;
    status.className = "error";
  }
  setTimeout(refresh, REFRESH_MS);
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  location.hash = "token=" + encodeURIComponent(document.getElementById("token").value);
  document.getElementById("login").hidden = true;
  refresh();
});

if (token()) refresh(); else document.getElementById("login").hidden = false;
